//! The command line's grammar (clap derive).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand};
use regex::Regex;

use crate::filter::{Filter, Outcome, parse_duration, parse_time};
use crate::source::S3Options;

/// Find, fetch, merge, compare and read the profiles xrayprofile writes, in
/// S3 or in a local directory. No Go toolchain needed.
#[derive(Debug, Parser)]
#[command(name = "xrayprofile", bin_name = "xrayprofile", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One row per profile, newest first.
    List {
        /// Where the profiles are and which to take.
        #[command(flatten)]
        select: Select,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Download the selected profiles as `DIR/{trace root}/{request id}.pprof`,
    /// skipping those already there.
    Fetch {
        /// Where the profiles are and which to take.
        #[command(flatten)]
        select: Select,
        /// Where to write them.
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
    },
    /// Merge profiles into one pprof file.
    Merge {
        /// Where the profiles are and which to take.
        #[command(flatten)]
        select: Select,
        /// Profile files or directories to read instead of S3 or --dir.
        files: Vec<PathBuf>,
        /// The merged profile (gzipped pprof).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// The functions with the most time, as `pprof -top` shows them.
    Top {
        /// Where the profiles are and which to take.
        #[command(flatten)]
        select: Select,
        /// Profile files or directories to read instead of S3 or --dir.
        files: Vec<PathBuf>,
        /// How the table is shown.
        #[command(flatten)]
        view: View,
        /// Sort by cumulative value instead of flat.
        #[arg(long)]
        cum: bool,
        /// Keep only samples with a frame whose function name matches.
        #[arg(long, value_name = "REGEX", value_parser = Regex::new)]
        focus: Option<Regex>,
    },
    /// An interactive SVG flame graph.
    Flamegraph {
        /// Where the profiles are and which to take.
        #[command(flatten)]
        select: Select,
        /// Profile files or directories to read instead of S3 or --dir.
        files: Vec<PathBuf>,
        /// The SVG file to write.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// `wall` or `cpu` (default: the profile's default, `wall` in wall mode).
        #[arg(long, value_name = "TYPE")]
        sample_index: Option<String>,
    },
    /// What changed between two sets of profiles, per invocation.
    ///
    /// Each of --base and --target takes files or directories, and filters
    /// written `name=value` (trace, function, since, from, to, outcome,
    /// min-duration, max-duration) added to the shared ones; for example
    /// `--base max-duration=200ms --target min-duration=1s`.
    Diff {
        /// Where the profiles are and which to take.
        #[command(flatten)]
        select: Select,
        /// The set to compare against.
        #[arg(long, num_args = 1.., required = true, value_name = "FILTER|FILE")]
        base: Vec<String>,
        /// The set to compare.
        #[arg(long, num_args = 1.., required = true, value_name = "FILTER|FILE")]
        target: Vec<String>,
        /// Also write a differential flame graph (SVG) here.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// How the table is shown.
        #[command(flatten)]
        view: View,
    },
    /// Name the functions of address-level profiles (`XRAYPROFILE_SYMBOLIZE=false`)
    /// from the unstripped binary, matched by GNU build ID.
    Symbolize {
        /// The unstripped binary the profiled function ran (same build ID).
        #[arg(long, value_name = "PATH")]
        binary: PathBuf,
        /// The profiles to symbolize.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write the results into this directory (default: beside each input,
        /// as `NAME.symbolized.pprof`).
        #[arg(short, long, value_name = "DIR")]
        output: Option<PathBuf>,
    },
}

/// How a table is shown.
#[derive(Debug, Clone, Args)]
pub struct View {
    /// `wall` or `cpu` (default: the profile's default, `wall` in wall mode).
    #[arg(long, value_name = "TYPE")]
    pub sample_index: Option<String>,
    /// How many rows.
    #[arg(short = 'n', long = "nodecount", default_value_t = 20)]
    pub rows: usize,
}

/// Where profiles come from and which of them.
#[derive(Debug, Clone, Args)]
pub struct Select {
    /// Read the profiles under this directory (what XRAYPROFILE_OUTPUT_DIR
    /// or `fetch -o` wrote) instead of S3.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The S3 bucket [default: xrayprofile-{account}-{region}].
    #[arg(long, env = "XRAYPROFILE_S3_BUCKET")]
    pub bucket: Option<String>,
    /// The key prefix the functions write under.
    #[arg(long, env = "XRAYPROFILE_S3_PREFIX")]
    pub prefix: Option<String>,
    /// Path-style S3 addressing, for S3-compatible servers (also
    /// XRAYPROFILE_S3_FORCE_PATH_STYLE=true).
    #[arg(long)]
    pub path_style: bool,
    /// Downloads at once.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub jobs: usize,
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// The filters every command takes.
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Only this trace (its root, `1-xxxxxxxx-...`).
    #[arg(long, value_name = "ROOT")]
    pub trace: Option<String>,
    /// Only this function (`name` or `name:version`).
    #[arg(long, value_name = "NAME")]
    pub function: Option<String>,
    /// Only profiles written in this last span (`1h`, `30m`).
    #[arg(long, value_parser = parse_duration, conflicts_with_all = ["from", "to"], value_name = "DURATION")]
    pub since: Option<Duration>,
    /// Only profiles written from then (UTC, `2026-12-04T15:00:00Z`, or `2h` ago).
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    pub from: Option<SystemTime>,
    /// Only profiles written until then.
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    pub to: Option<SystemTime>,
    /// Only invocations that ended so.
    #[arg(long, value_enum)]
    pub outcome: Option<Outcome>,
    /// Only invocations that ran at least this long (`200ms`).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub min_duration: Option<Duration>,
    /// Only invocations that ran at most this long.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub max_duration: Option<Duration>,
}

impl FilterArgs {
    /// The filter these arguments describe.
    pub(crate) fn filter(&self) -> Filter {
        Filter {
            trace: self.trace.clone(),
            function: self.function.clone(),
            from: self
                .since
                .and_then(|ago| SystemTime::now().checked_sub(ago))
                .or(self.from),
            to: self.to,
            outcome: self.outcome,
            min_duration: self.min_duration,
            max_duration: self.max_duration,
        }
    }
}

impl Select {
    /// The S3 settings, with `XRAYPROFILE_S3_FORCE_PATH_STYLE` read as the
    /// library reads it (`true`/`1`).
    pub(crate) fn s3(&self) -> S3Options {
        let env_path_style = std::env::var("XRAYPROFILE_S3_FORCE_PATH_STYLE")
            .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1"));
        S3Options {
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            path_style: self.path_style || env_path_style,
        }
    }
}
