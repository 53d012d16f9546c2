//! The `xrayprofile` command line: the reading half of xrayprofile. The
//! library writes one gzipped pprof file per profiled invocation, to S3 at
//! `{prefix}{trace root}/{request id}.pprof` (with user metadata) or under
//! `XRAYPROFILE_OUTPUT_DIR`; this finds them (`list`), downloads them
//! (`fetch`), merges them (`merge`), shows where the time went (`top`,
//! `flamegraph`), compares two sets (`diff`) and names the functions of
//! address-level profiles (`symbolize`), in pure Rust.
//!
//! It is its own crate so that Lambda builds of the library never compile
//! clap, the progress bars, the SVG renderer or the DWARF reader.
#![allow(clippy::print_stdout)] // a command line prints its results
#![forbid(unsafe_code)]
// Bucket contents are untrusted input: a bad file is an error message, never
// a panic.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod args;
mod console;
mod diff;
mod error;
mod fetch;
mod filter;
mod flamegraph;
mod info;
mod list;
mod load;
pub mod merge;
pub mod profile_file;
mod source;
mod stack;
mod symbolize;
pub mod top;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

pub use args::{Cli, Command};
pub use error::{CliError, CliResult};
pub use info::ProfileInfo;

/// Parses the process's arguments, runs the command, prints its error if
/// it fails, and returns the exit code (0, 1 on failure, 2 on bad usage).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            console::note(&format!("error: cannot start the async runtime: {err}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            console::note(&format!("error: {err}"));
            ExitCode::FAILURE
        }
    }
}

/// Runs one command, writing its results to standard output.
///
/// # Errors
/// What went wrong, with what to change.
pub async fn run(cli: Cli) -> CliResult<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cli.command {
        Command::List { select, json } => list::run(&select, json, &mut out).await,
        Command::Fetch { select, output } => fetch::run(&select, &output).await,
        Command::Merge {
            select,
            files,
            output,
        } => {
            let loaded = load::load(&select, &files, &select.filter.filter()).await?;
            let bytes = profile_file::encode(&loaded.profile)
                .map_err(|e| CliError::new(format!("cannot encode the merged profile: {e}")))?;
            std::fs::write(&output, bytes)
                .map_err(|e| CliError::new(format!("cannot write `{}`: {e}", output.display())))?;
            console::note(&format!(
                "merged {} profiles into {}",
                loaded.count,
                output.display()
            ));
            Ok(())
        }
        Command::Top {
            select,
            files,
            view,
            cum,
            focus,
        } => {
            let loaded = load::load(&select, &files, &select.filter.filter()).await?;
            let index = stack::sample_index(&loaded.profile, view.sample_index.as_deref())?;
            let table = top::table(&loaded.profile, index, focus.as_ref(), cum);
            write!(out, "{}", table.render(view.rows))
                .map_err(|e| CliError::new(format!("cannot write the table: {e}")))
        }
        Command::Flamegraph {
            select,
            files,
            output,
            sample_index,
        } => {
            let loaded = load::load(&select, &files, &select.filter.filter()).await?;
            flamegraph::write(&loaded.profile, sample_index.as_deref(), &output)?;
            console::note(&format!(
                "wrote {} ({} profiles)",
                output.display(),
                loaded.count
            ));
            Ok(())
        }
        Command::Diff {
            select,
            base,
            target,
            output,
            view,
        } => diff::run(&select, &base, &target, output.as_deref(), &view, &mut out).await,
        Command::Symbolize {
            binary,
            files,
            output,
        } => symbolize::run(&binary, &files, output.as_deref()),
    }
}
