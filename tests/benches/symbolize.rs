//! Issue 14: what sampled invocations add to a function built as users build
//! theirs: `tests/sized` (lambda_runtime + xrayprofile with the AWS SDK +
//! tokio + serde_json), release, at each debug-info level.
//!
//! Build the fixtures first (long: the AWS SDK in release), then run:
//!
//! ```text
//! cargo build --profile bench-lines -p xrayprofile-sized-function
//! cargo build --profile bench-limited -p xrayprofile-sized-function
//! cargo build --profile bench-nodebug -p xrayprofile-sized-function
//! cargo bench -p xrayprofile-tests --bench symbolize
//! ```
//!
//! `XRAYPROFILE_BENCH_MODES=cpu` runs one mode only. (The driver's own
//! optimisation does not matter: `--profile dev` reuses
//! the test build.) Fixtures not built are skipped. For each fixture and
//! mode, two processes on their own loopback Runtime API: one with
//! `XRAYPROFILE_ENABLED=false`, one sampling every invocation; each gets
//! 10 invocations of a 200 ms CPU-bound handler that then awaits a 20 ms
//! timer in a named async fn, profiles going to `XRAYPROFILE_OUTPUT_DIR`.
//! After the 1st and the 10th: peak RSS (`VmHWM`) added over the disabled
//! process, and the time from the body's return to the response's arrival
//! (the profile is built, gzipped and written before the response under
//! plain `lambda_runtime::run`), added over the disabled process; the
//! process CPU time each invocation used (`/proc/PID/task/*/schedstat`),
//! added likewise, which a loaded machine makes noisy (the handler's busy
//! loop runs for wall time); and whether the last `wall` profile names the
//! awaited async fn.
#![allow(clippy::print_stdout, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;
use xrayprofile_tests::function::{Function, Launch};
use xrayprofile_tests::harness::files_under;
use xrayprofile_tests::pprof_view;
use xrayprofile_tests::runtime_api::{Invoke, Outcome, RuntimeApi};
use xrayprofile_tests::trace_header;

const INVOCATIONS: usize = 10;
const SPIN_MS: u64 = 200;
const SLEEP_MS: u64 = 20;

/// What one process measured after each invocation.
struct Run {
    hwm_kib: Vec<u64>,
    anon_kib: Vec<u64>,
    return_to_response_us: Vec<u64>,
    /// Process CPU time used by each invocation (and what it left behind).
    cpu: Vec<Duration>,
    profiles: Vec<PathBuf>,
}

async fn run(binary: &Path, mode: &str, enabled: bool, seq: &mut u32) -> Run {
    let out = tempfile::tempdir().unwrap();
    let api = RuntimeApi::start().await.unwrap();
    let function: Function = Launch::new(binary, &api.endpoint())
        .env(
            "XRAYPROFILE_ENABLED",
            if enabled { "true" } else { "false" },
        )
        .env("XRAYPROFILE_THRESHOLD", "0")
        .env("XRAYPROFILE_MAX_PER_MINUTE", "0")
        .env("XRAYPROFILE_MODE", mode)
        .env("XRAYPROFILE_OUTPUT_DIR", out.path().to_str().unwrap())
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let mut result = Run {
        hwm_kib: Vec::new(),
        anon_kib: Vec::new(),
        return_to_response_us: Vec::new(),
        cpu: Vec::new(),
        profiles: Vec::new(),
    };
    // Let the runtime settle before the first invocation's CPU is counted.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut cpu_before = function.cpu_time().unwrap();
    for _ in 0..INVOCATIONS {
        *seq += 1;
        let id = format!("5e1f0000-0000-4000-8000-{:012}", *seq);
        let payload = json!({ "spin_ms": SPIN_MS, "sleep_ms": SLEEP_MS });
        let answer = api
            .invoke_timed(Invoke::new(&id, Some(trace_header(*seq, 0)), payload))
            .await
            .unwrap();
        let Outcome::Response(body) = &answer.outcome else {
            panic!("{:?}", answer.outcome);
        };
        let returned = body["returned_at_us"].as_u64().unwrap();
        let answered = answer.answered.duration_since(UNIX_EPOCH).unwrap();
        result
            .return_to_response_us
            .push(u64::try_from(answered.as_micros()).unwrap() - returned);
        // Let the process settle (a deferred log line, the timer thread).
        tokio::time::sleep(Duration::from_millis(50)).await;
        result.hwm_kib.push(function.status_kib("VmHWM").unwrap());
        result
            .anon_kib
            .push(function.status_kib("RssAnon").unwrap());
        let cpu = function.cpu_time().unwrap();
        result.cpu.push(cpu.saturating_sub(cpu_before));
        cpu_before = cpu;
    }
    result.profiles = files_under(out.path());
    result.profiles.sort();
    // Keep the profiles past the temp dir's life: read them now.
    let kept = tempfile::Builder::new()
        .prefix("xrayprofile-bench-symbolize")
        .tempdir()
        .unwrap()
        .keep();
    result.profiles = result
        .profiles
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let to = kept.join(format!("{mode}-{i}.pb.gz"));
            std::fs::copy(p, &to).unwrap();
            to
        })
        .collect();
    drop(function);
    result
}

fn mib(kib: i64) -> String {
    format!("{:+.1}", kib as f64 / 1024.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let mut seq = 0;
    println!(
        "issue 14: {INVOCATIONS} sampled invocations ({SPIN_MS} ms CPU, then a {SLEEP_MS} ms timer) vs XRAYPROFILE_ENABLED=false"
    );
    println!(
        "| debug info | binary MB | mode | peak RSS added 1st / 10th (MiB) | anon added 1st / 10th (MiB) | return→response added 1st / median 2nd–10th / max 2nd–10th (ms) | CPU added 1st / median 2nd–10th (ms) | async fn named |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (profile, level) in [
        ("bench-lines", "line-tables-only"),
        ("bench-limited", "limited"),
        ("bench-nodebug", "0"),
    ] {
        let binary = target.join(profile).join("xrayprofile-sized-function");
        let Ok(meta) = std::fs::metadata(&binary) else {
            println!(
                "| {level} | not built: cargo build --profile {profile} -p xrayprofile-sized-function |"
            );
            continue;
        };
        let modes = std::env::var("XRAYPROFILE_BENCH_MODES").unwrap_or_else(|_| "wall,cpu".into());
        for mode in modes.split(',') {
            let off = run(&binary, mode, false, &mut seq).await;
            let on = run(&binary, mode, true, &mut seq).await;
            let added = |v: &[u64], w: &[u64], i: usize| v[i] as i64 - w[i] as i64;
            let mut later: Vec<i64> = (1..INVOCATIONS)
                .map(|i| on.return_to_response_us[i] as i64 - off.return_to_response_us[i] as i64)
                .collect();
            later.sort_unstable();
            let first = on.return_to_response_us[0] as i64 - off.return_to_response_us[0] as i64;
            let cpu_added =
                |i: usize| on.cpu[i].as_secs_f64() * 1e3 - off.cpu[i].as_secs_f64() * 1e3;
            let mut cpu_later: Vec<f64> = (1..INVOCATIONS).map(cpu_added).collect();
            cpu_later.sort_by(f64::total_cmp);
            let named = on.profiles.last().map_or("no profile".to_owned(), |p| {
                let profile = pprof_view::decode(&std::fs::read(p).unwrap()).unwrap();
                let names = pprof_view::function_names(&profile);
                let cut = pprof_view::comments(&profile)
                    .into_iter()
                    .find(|c| c.starts_with("symbolize:"));
                format!(
                    "{}{}",
                    if names.iter().any(|n| n.contains("sized_wait_for_timer")) {
                        "yes"
                    } else {
                        "no"
                    },
                    cut.map(|c| format!(" ({c})")).unwrap_or_default()
                )
            });
            println!(
                "| {level} | {:.1} | {mode} | {} / {} | {} / {} | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} | {named} |",
                meta.len() as f64 / 1e6,
                mib(added(&on.hwm_kib, &off.hwm_kib, 0)),
                mib(added(&on.hwm_kib, &off.hwm_kib, INVOCATIONS - 1)),
                mib(added(&on.anon_kib, &off.anon_kib, 0)),
                mib(added(&on.anon_kib, &off.anon_kib, INVOCATIONS - 1)),
                first as f64 / 1e3,
                later[later.len() / 2] as f64 / 1e3,
                later[later.len() - 1] as f64 / 1e3,
                cpu_added(0),
                cpu_later[cpu_later.len() / 2],
            );
            if let Some(p) = on.profiles.last() {
                println!("  (last profile: {})", p.display());
            }
        }
    }
}
