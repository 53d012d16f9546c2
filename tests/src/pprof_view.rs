//! Reads gzipped pprof files back: what a user sees with `go tool pprof`.

use std::collections::HashMap;
use std::io::Read;

use pprof::protos::{Message, Profile};

/// Gunzips and decodes a profile.
///
/// # Errors
/// If the bytes are not gzip or not a pprof protobuf.
pub fn decode(gzipped: &[u8]) -> Result<Profile, String> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gzipped)
        .read_to_end(&mut raw)
        .map_err(|e| format!("not gzip: {e}"))?;
    Profile::decode(raw.as_slice()).map_err(|e| format!("not a pprof protobuf: {e}"))
}

fn text(profile: &Profile, index: i64) -> &str {
    usize::try_from(index)
        .ok()
        .and_then(|i| profile.string_table.get(i))
        .map_or("", String::as_str)
}

/// The profile's comments (`go tool pprof -comments`).
pub fn comments(profile: &Profile) -> Vec<String> {
    profile
        .comment
        .iter()
        .map(|c| text(profile, *c).to_owned())
        .collect()
}

/// Every function name in the profile.
pub fn function_names(profile: &Profile) -> Vec<String> {
    profile
        .function
        .iter()
        .map(|f| text(profile, f.name).to_owned())
        .collect()
}

/// Each sample's string labels, as `(key, value)` pairs.
pub fn sample_labels(profile: &Profile) -> Vec<Vec<(String, String)>> {
    profile
        .sample
        .iter()
        .map(|s| {
            s.label
                .iter()
                .map(|l| {
                    (
                        text(profile, l.key).to_owned(),
                        text(profile, l.str).to_owned(),
                    )
                })
                .collect()
        })
        .collect()
}

/// The position of the sample type named `ty` (`wall`, `cpu`, `samples`).
pub fn value_index(profile: &Profile, ty: &str) -> Option<usize> {
    profile
        .sample_type
        .iter()
        .position(|t| text(profile, t.ty) == ty)
}

/// The sample type `go tool pprof` shows by default: `default_sample_type`
/// when set, else the first (our CPU profiles' first is `samples`).
pub fn default_index(profile: &Profile) -> usize {
    let default = text(profile, profile.default_sample_type);
    value_index(profile, default)
        .filter(|_| !default.is_empty())
        .unwrap_or(0)
}

/// The sum of the values of type `ty` over all samples; 0 if there is none.
pub fn total(profile: &Profile, ty: &str) -> i64 {
    value_index(profile, ty).map_or(0, |i| {
        profile.sample.iter().filter_map(|s| s.value.get(i)).sum()
    })
}

/// CPU samples: the `samples` values of a CPU profile, or the `cpu`
/// nanoseconds of a wall-clock profile divided by the 99 Hz period.
pub fn total_samples(profile: &Profile) -> i64 {
    if value_index(profile, "samples").is_some() {
        total(profile, "samples")
    } else {
        total(profile, "cpu") / (1_000_000_000 / 99)
    }
}

/// One row of `pprof -top`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopRow {
    /// Function name.
    pub name: String,
    /// Samples where it is the leaf.
    pub flat: i64,
    /// Samples where it is anywhere on the stack.
    pub cum: i64,
}

/// The functions with the most of the default value on their stacks
/// (cumulative), then of their own (flat), as `pprof -top -cum` lists them.
/// Flat is the innermost frame's: of a leaf location's inlined lines, only
/// the first (the innermost function) gets it, as in pprof.
pub fn top(profile: &Profile, n: usize) -> Vec<TopRow> {
    top_at(profile, default_index(profile), n)
}

/// [`top`] by the values of type `ty` (as `pprof -sample_index=ty -top`).
pub fn top_by(profile: &Profile, ty: &str, n: usize) -> Vec<TopRow> {
    value_index(profile, ty).map_or_else(Vec::new, |i| top_at(profile, i, n))
}

fn top_at(profile: &Profile, index: usize, n: usize) -> Vec<TopRow> {
    let location_fn: HashMap<u64, Vec<u64>> = profile
        .location
        .iter()
        .map(|l| (l.id, l.line.iter().map(|line| line.function_id).collect()))
        .collect();
    let fn_name: HashMap<u64, &str> = profile
        .function
        .iter()
        .map(|f| (f.id, text(profile, f.name)))
        .collect();
    let mut rows: HashMap<&str, (i64, i64)> = HashMap::new();
    for sample in &profile.sample {
        let count = sample.value.get(index).copied().unwrap_or(0);
        let mut seen = Vec::new();
        for (depth, loc) in sample.location_id.iter().enumerate() {
            let functions = location_fn.get(loc).into_iter().flatten();
            for (inlined_depth, function) in functions.enumerate() {
                let name = fn_name.get(function).copied().unwrap_or("?");
                let row = rows.entry(name).or_default();
                if depth == 0 && inlined_depth == 0 {
                    row.0 += count;
                }
                if !seen.contains(&name) {
                    row.1 += count;
                    seen.push(name);
                }
            }
        }
    }
    let mut rows: Vec<TopRow> = rows
        .into_iter()
        .map(|(name, (flat, cum))| TopRow {
            name: name.to_owned(),
            flat,
            cum,
        })
        .collect();
    rows.sort_by(|a, b| {
        b.cum
            .cmp(&a.cum)
            .then(b.flat.cmp(&a.flat))
            .then(a.name.cmp(&b.name))
    });
    rows.truncate(n);
    rows
}

/// Whether `go` is on PATH. Where `XRAYPROFILE_REQUIRE_GO` is set (CI, by
/// `.ci/run`) a missing `go` fails the calling test instead, so the tests
/// that use it cannot pass there by skipping.
///
/// # Panics
/// If `XRAYPROFILE_REQUIRE_GO` is set and `go` is not on PATH.
pub fn go_available() -> bool {
    let available = std::process::Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        available || std::env::var_os("XRAYPROFILE_REQUIRE_GO").is_none(),
        "XRAYPROFILE_REQUIRE_GO is set but `go` is not on PATH"
    );
    available
}

/// Runs `go tool pprof <args>` and returns its standard output.
///
/// # Panics
/// If the command cannot run or fails; the panic shows its stderr.
pub fn go_tool_pprof(args: &[&std::ffi::OsStr]) -> String {
    let mut command = std::process::Command::new("go");
    command.args(["tool", "pprof"]).args(args);
    stdout_of(command)
}

/// Runs `command` and returns its standard output.
///
/// # Panics
/// If the command cannot run or fails; the panic shows its stderr.
pub fn stdout_of(mut command: std::process::Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Google's standalone `pprof` (github.com/google/pprof), which finds
/// binaries by build ID under `PPROF_BINARY_PATH`: `XRAYPROFILE_PPROF` if
/// set, else `pprof` on PATH. `None` when neither runs; where
/// `XRAYPROFILE_REQUIRE_GO` is set (CI) that fails the calling test instead.
///
/// # Panics
/// If `XRAYPROFILE_REQUIRE_GO` is set and no `pprof` runs.
pub fn google_pprof() -> Option<std::path::PathBuf> {
    let pprof = std::env::var_os("XRAYPROFILE_PPROF").map_or_else(
        || std::path::PathBuf::from("pprof"),
        std::path::PathBuf::from,
    );
    // `pprof -h` prints its usage on stderr; the exit code varies by version.
    let runs = std::process::Command::new(&pprof)
        .arg("-h")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stderr).contains("usage"));
    assert!(
        runs || std::env::var_os("XRAYPROFILE_REQUIRE_GO").is_none(),
        "XRAYPROFILE_REQUIRE_GO is set but google/pprof does not run (set XRAYPROFILE_PPROF; .ci/run builds it)"
    );
    runs.then_some(pprof)
}

/// Runs google/pprof's `-top` on `profile` with `PPROF_BINARY_PATH` set to
/// `binary_path`, and returns its standard output.
///
/// # Panics
/// If the command cannot run or fails; the panic shows its stderr.
pub fn google_pprof_top(
    pprof: &std::path::Path,
    profile: &std::path::Path,
    binary_path: &std::path::Path,
) -> String {
    let mut command = std::process::Command::new(pprof);
    command
        .arg("-top")
        .arg(profile)
        .env("PPROF_BINARY_PATH", binary_path);
    stdout_of(command)
}

/// One sample: names root first, wall ns, cpu ns, `state` label.
pub struct Row {
    /// Function names, root first.
    pub names: Vec<String>,
    /// The `wall` value, ns.
    pub wall: i64,
    /// The `cpu` value, ns.
    pub cpu: i64,
    /// The `state` label, empty when there is none.
    pub state: String,
}

/// The `cpu` nanoseconds of the `rows` with a function whose name
/// contains `name` anywhere on their stack.
pub fn cpu_under<'a>(rows: impl IntoIterator<Item = &'a Row>, name: &str) -> i64 {
    rows.into_iter()
        .filter(|r| r.names.iter().any(|f| f.contains(name)))
        .map(|r| r.cpu)
        .sum()
}

/// Every sample of a wall-clock profile as a [`Row`] (of a CPU profile
/// too: its `cpu` is the second value as well, its `wall` holds the
/// sample count).
pub fn rows(profile: &Profile) -> Vec<Row> {
    let text = |i: i64| profile.string_table[usize::try_from(i).unwrap()].clone();
    profile
        .sample
        .iter()
        .map(|s| {
            let mut names: Vec<String> = s
                .location_id
                .iter()
                .flat_map(|id| {
                    let loc = profile.location.iter().find(|l| l.id == *id).unwrap();
                    loc.line.iter().map(|line| {
                        let f = profile.function.iter().find(|f| f.id == line.function_id);
                        text(f.unwrap().name)
                    })
                })
                .collect();
            names.reverse();
            let state = s
                .label
                .iter()
                .find(|l| text(l.key) == "state")
                .map(|l| text(l.str))
                .unwrap_or_default();
            Row {
                names,
                wall: s.value[0],
                cpu: s.value[1],
                state,
            }
        })
        .collect()
}
