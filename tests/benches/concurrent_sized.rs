//! Issue 18 on a function the size users run: `tests/sized-concurrent`
//! (tests/sized's lambda_runtime + xrayprofile with the AWS SDK + tokio +
//! serde_json, served by `xrayprofile::run_concurrent`), release with line
//! tables, at `AWS_LAMBDA_MAX_CONCURRENCY=8` on this machine's vCPUs.
//!
//! ```text
//! cargo build --profile bench-lines -p xrayprofile-sized-concurrent
//! cargo bench -p xrayprofile-tests --bench concurrent_sized --profile dev
//! ```
//!
//! Skipped when the fixture is not built. `XRAYPROFILE_BENCH_MODES=cpu`
//! runs one mode only, `XRAYPROFILE_BENCH_ROUNDS` sets the rounds (3),
//! `XRAYPROFILE_BENCH_BINARY` runs another build of the fixture,
//! `XRAYPROFILE_BENCH_FUNCTION_ENV=NAME=VALUE` sets one more variable in
//! the function's environment.
//!
//! Each round starts, per mode, three processes on their own loopback
//! Runtime API, in an order that rotates from round to round: `off`
//! (`XRAYPROFILE_ENABLED=false`), `addresses` (every invocation sampled,
//! `XRAYPROFILE_SYMBOLIZE=false`: sampling, encoding and writing, no
//! symbolization) and `names` (every invocation sampled and symbolized, the
//! default). Threshold 0 and cap off as in `symbolize.rs`; profiles go to
//! `XRAYPROFILE_OUTPUT_DIR`. Each process gets one wave of 8 invocations at
//! once, then, once its profiles are written, 5 more waves of 8 sent 1.2 s
//! apart (a wave's CPU takes ~0.8 s of the 2 vCPUs: the waves overlap the
//! previous one's tail and profile building, without a backlog building up). Each
//! invocation burns a fixed amount of work (~200 ms of CPU, calibrated
//! first) in one of four named functions, then awaits a 50 ms timer.
//!
//! Measured per process: the whole process's CPU time from before the first
//! wave to after the last profile is written, per invocation, and of it the
//! CPU outside the burns (process CPU minus the burns' own, which each
//! invocation reports from its thread's CPU clock): the profiler's fixed
//! costs (building, writing, the ticker) without the burns' ±1 % of noise;
//! the SIGPROF handlers' cost lands in the burns. Peak RSS
//! (`VmHWM`) after the first wave's profiles are written and after the
//! last's; per invocation the time from sending it to its answer, the
//! body's own duration, and from the body's return to the response. Each
//! `names` profile must hold its own invocation: the share of its on-CPU
//! time (samples not labelled `state=other`) under its own kind's function,
//! and under the other kinds'.
#![allow(clippy::print_stdout, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use xrayprofile_tests::function::{Function, Launch};
use xrayprofile_tests::harness::{files_under, join_all};
use xrayprofile_tests::pprof_view;
use xrayprofile_tests::runtime_api::{Invoke, Outcome, RuntimeApi};
use xrayprofile_tests::trace_header;

const CONCURRENCY: usize = 8;
const WAVES: usize = 6;
const INVOCATIONS: usize = CONCURRENCY * WAVES;
const WAVE_INTERVAL: Duration = Duration::from_millis(1200);
/// The CPU each invocation's burn is calibrated to.
const BURN_MS: f64 = 200.0;
const SLEEP_MS: u64 = 50;
/// Each kind's CPU function in the fixture, by kind.
const BURNS: [&str; 4] = [
    "sized_kind_a_burns",
    "sized_kind_b_burns",
    "sized_kind_c_burns",
    "sized_kind_d_burns",
];

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Off,
    Addresses,
    Names,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Off => "off",
            Variant::Addresses => "addresses",
            Variant::Names => "names",
        }
    }
}

/// What one process measured.
struct Run {
    /// Process CPU per invocation, ms.
    cpu_ms: f64,
    /// Of which the burns' own threads' CPU (with the SIGPROF handlers and
    /// signal deliveries that interrupted them), per invocation, ms.
    burn_cpu_ms: f64,
    hwm_first_kib: u64,
    hwm_last_kib: u64,
    anon_last_kib: u64,
    /// Per invocation, ms: sent → answered, body start → return, return →
    /// response.
    latency_ms: Vec<f64>,
    body_ms: Vec<f64>,
    return_to_response_ms: Vec<f64>,
    /// Most invocation bodies running at once.
    in_flight: usize,
    profiles: usize,
    /// Lowest own-kind share and highest other-kinds share of the on-CPU
    /// time over the `names` profiles, %.
    own_min: f64,
    foreign_max: f64,
    /// Median share (%) of a `names` profile's CPU time (its samples) that
    /// other invocations and threads used (`state=other`): what each
    /// profile also carries, encodes and symbolizes under concurrency.
    other_median: f64,
    /// Warnings the function logged (dropped or unstarted profiles).
    problems: Vec<String>,
}

struct Answered {
    sent: SystemTime,
    answered: SystemTime,
    body: serde_json::Value,
}

fn id(seq: usize) -> String {
    format!("5e1f0000-0000-4000-8000-{seq:012}")
}

fn us(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH).unwrap().as_micros() as f64
}

async fn invoke(api: &RuntimeApi, seq: usize, kind: usize, passes: u64) -> Answered {
    let payload = json!({ "kind": kind, "passes": passes, "sleep_ms": SLEEP_MS });
    let sent = SystemTime::now();
    let header = trace_header(u32::try_from(seq).unwrap(), 0);
    let answer = tokio::time::timeout(
        Duration::from_secs(120),
        api.invoke_timed(Invoke::new(id(seq), Some(header), payload)),
    )
    .await
    .expect("answered within 120 s")
    .expect("the function is running");
    let Outcome::Response(body) = answer.outcome else {
        panic!("invocation {seq}: {:?}", answer.outcome);
    };
    assert_eq!(body["kind"], json!(kind), "{body}");
    Answered {
        sent,
        answered: answer.answered,
        body,
    }
}

/// Waits until `function` has logged `count` written profiles (120 s at
/// most: the figures then say what is missing).
async fn written(function: &Function, count: usize) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(120);
    while function.logs_containing("profile written").len() < count
        && tokio::time::Instant::now() < give_up
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn spawn(binary: &Path, api: &RuntimeApi, mode: &str, variant: Variant, out: &Path) -> Function {
    let mut launch = Launch::new(binary, &api.endpoint());
    // XRAYPROFILE_BENCH_FUNCTION_ENV=NAME=VALUE: one more variable for the
    // function (such as MALLOC_ARENA_MAX=1, to see what glibc's per-thread
    // arenas keep).
    if let Some((name, value)) = std::env::var("XRAYPROFILE_BENCH_FUNCTION_ENV")
        .ok()
        .as_deref()
        .and_then(|v| v.split_once('='))
    {
        launch = launch.env(name, value);
    }
    launch
        .env("AWS_LAMBDA_MAX_CONCURRENCY", &CONCURRENCY.to_string())
        .env(
            "XRAYPROFILE_ENABLED",
            if variant == Variant::Off {
                "false"
            } else {
                "true"
            },
        )
        .env(
            "XRAYPROFILE_SYMBOLIZE",
            if variant == Variant::Addresses {
                "false"
            } else {
                "true"
            },
        )
        .env("XRAYPROFILE_THRESHOLD", "0")
        .env("XRAYPROFILE_MAX_PER_MINUTE", "0")
        .env("XRAYPROFILE_MODE", mode)
        .env("XRAYPROFILE_OUTPUT_DIR", out.to_str().unwrap())
        .env("RUST_LOG", "warn,xrayprofile=info")
        .spawn()
        .unwrap()
}

/// The fixture's passes for [`BURN_MS`] of CPU: one invocation at a time
/// on an idle process, the burn's own duration.
async fn calibrate(binary: &Path, seq: &mut usize) -> u64 {
    let out = tempfile::tempdir().unwrap();
    let api = RuntimeApi::start().await.unwrap();
    let _function = spawn(binary, &api, "cpu", Variant::Off, out.path());
    let probe = 200;
    let mut per_pass = Vec::new();
    for _ in 0..5 {
        *seq += 1;
        let answer = invoke(&api, *seq, 0, probe).await;
        per_pass.push(answer.body["burn_ns"].as_f64().unwrap() / probe as f64);
    }
    per_pass.sort_by(f64::total_cmp);
    (BURN_MS * 1e6 / per_pass[per_pass.len() / 2]).round() as u64
}

async fn run(binary: &Path, mode: &str, variant: Variant, passes: u64, seq: &mut usize) -> Run {
    let out = tempfile::tempdir().unwrap();
    let api = RuntimeApi::start().await.unwrap();
    let function = spawn(binary, &api, mode, variant, out.path());
    let profiled = if variant == Variant::Off { 0 } else { 1 };
    // Let the runtime settle (its 8 polling loops connect) before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu_before = function.process_cpu_time().unwrap();
    let first_seq = *seq + 1;
    *seq += INVOCATIONS;
    let api = &api;
    let mut answers =
        join_all((first_seq..first_seq + CONCURRENCY).map(|n| invoke(api, n, n % 4, passes))).await;
    written(&function, CONCURRENCY * profiled).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let hwm_first_kib = function.status_kib("VmHWM").unwrap();
    answers.extend(
        join_all(
            (first_seq + CONCURRENCY..first_seq + INVOCATIONS).map(|n| async move {
                let wave = (n - first_seq) / CONCURRENCY - 1;
                tokio::time::sleep(WAVE_INTERVAL * u32::try_from(wave).unwrap()).await;
                invoke(api, n, n % 4, passes).await
            }),
        )
        .await,
    );
    written(&function, INVOCATIONS * profiled).await;
    // The last log line comes just after the write; let the thread finish.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu = function.process_cpu_time().unwrap() - cpu_before;
    let hwm_last_kib = function.status_kib("VmHWM").unwrap();
    let anon_last_kib = function.status_kib("RssAnon").unwrap();
    let problems = ["profile dropped", "profile not started", "panicked"]
        .iter()
        .flat_map(|needle| function.logs_containing(needle))
        .collect();

    let field = |a: &Answered, name: &str| a.body[name].as_f64().unwrap();
    let latency_ms = answers
        .iter()
        .map(|a| (us(a.answered) - us(a.sent)) / 1e3)
        .collect();
    let body_ms = answers
        .iter()
        .map(|a| (field(a, "returned_at_us") - field(a, "started_at_us")) / 1e3)
        .collect();
    let return_to_response_ms = answers
        .iter()
        .map(|a| (us(a.answered) - field(a, "returned_at_us")) / 1e3)
        .collect();
    // Most bodies between their start and their return at once.
    let mut edges: Vec<(f64, i32)> = answers
        .iter()
        .flat_map(|a| {
            [
                (field(a, "started_at_us"), 1),
                (field(a, "returned_at_us"), -1),
            ]
        })
        .collect();
    edges.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
    let mut now = 0;
    let mut in_flight = 0;
    for (_, step) in edges {
        now += step;
        in_flight = in_flight.max(now);
    }

    let files = files_under(out.path());
    let (mut own_min, mut foreign_max) = (100.0_f64, 0.0_f64);
    let mut other = vec![0.0];
    if variant == Variant::Names {
        other.clear();
        for file in &files {
            let (own, foreign, others) = shares(file);
            own_min = own_min.min(own);
            foreign_max = foreign_max.max(foreign);
            other.push(others);
        }
    }
    drop(function);
    Run {
        cpu_ms: cpu.as_secs_f64() * 1e3 / INVOCATIONS as f64,
        burn_cpu_ms: answers
            .iter()
            .map(|a| field(a, "burn_cpu_ns") / 1e6)
            .sum::<f64>()
            / INVOCATIONS as f64,
        hwm_first_kib,
        hwm_last_kib,
        anon_last_kib,
        latency_ms,
        body_ms,
        return_to_response_ms,
        in_flight: usize::try_from(in_flight).unwrap(),
        profiles: files.len(),
        own_min,
        foreign_max,
        other_median: median(&other),
        problems,
    }
}

/// The share (%) of a profile's own on-CPU time under its own kind's
/// function and under the other kinds', and the share of all its CPU time
/// labelled `state=other`. Its invocation is the request ID in its file
/// name, whose last digits are the invocation's number.
fn shares(file: &Path) -> (f64, f64, f64) {
    let stem = file.file_stem().unwrap().to_str().unwrap();
    let n: usize = stem[stem.len() - 12..].parse().unwrap();
    let kind = n % 4;
    let profile = pprof_view::decode(&std::fs::read(file).unwrap()).unwrap();
    let rows = pprof_view::rows(&profile);
    let own_rows: Vec<_> = rows.iter().filter(|r| r.state != "other").collect();
    let under = |name: &str| pprof_view::cpu_under(own_rows.iter().copied(), name);
    let total: i64 = own_rows.iter().map(|r| r.cpu).sum();
    let all: i64 = rows.iter().map(|r| r.cpu).sum();
    if total == 0 {
        return (0.0, 0.0, 100.0);
    }
    let others: i64 = (0..4).filter(|k| *k != kind).map(|k| under(BURNS[k])).sum();
    (
        under(BURNS[kind]) as f64 * 100.0 / total as f64,
        others as f64 * 100.0 / total as f64,
        (all - total) as f64 * 100.0 / all as f64,
    )
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::MIN, f64::max)
}

/// `median (min – max)` of one figure over the rounds.
fn spread(values: &[f64]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    format!(
        "{:+.2} ({:+.2} – {:+.2})",
        median(&sorted),
        sorted[0],
        sorted[sorted.len() - 1]
    )
}

/// Mean ± standard error of the mean: what more rounds narrow.
fn mean_se(values: &[f64]) -> String {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    format!("{mean:+.2} ± {:.2}", (variance / n).sqrt())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    // XRAYPROFILE_BENCH_BINARY: another build of the fixture (an earlier
    // commit's, to compare).
    let binary = std::env::var_os("XRAYPROFILE_BENCH_BINARY").map_or_else(
        || {
            target
                .join("bench-lines")
                .join("xrayprofile-sized-concurrent")
        },
        PathBuf::from,
    );
    let Ok(meta) = std::fs::metadata(&binary) else {
        println!(
            "skipped: {} not built: cargo build --profile bench-lines -p xrayprofile-sized-concurrent",
            binary.display()
        );
        return;
    };
    let rounds: usize = std::env::var("XRAYPROFILE_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let modes = std::env::var("XRAYPROFILE_BENCH_MODES").unwrap_or_else(|_| "wall,cpu".into());
    let mut seq = 0;
    let passes = calibrate(&binary, &mut seq).await;
    println!(
        "issue 18, sized: {} ({:.1} MB), AWS_LAMBDA_MAX_CONCURRENCY={CONCURRENCY}, {} vCPUs; {WAVES} waves of {CONCURRENCY} ({} passes ≈ {BURN_MS} ms CPU, then {SLEEP_MS} ms timer), {rounds} rounds; load average {}",
        binary.display(),
        meta.len() as f64 / 1e6,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        passes,
        load_average(),
    );
    for mode in modes.split(',') {
        let variants = [Variant::Off, Variant::Addresses, Variant::Names];
        let mut runs: Vec<[Option<Run>; 3]> = Vec::new();
        for round in 0..rounds {
            let mut round_runs: [Option<Run>; 3] = [None, None, None];
            for i in 0..3 {
                let at = (i + round) % 3;
                let run = run(&binary, mode, variants[at], passes, &mut seq).await;
                for problem in &run.problems {
                    println!("  {mode} {}: {problem}", variants[at].name());
                }
                round_runs[at] = Some(run);
            }
            let [Some(off), Some(addresses), Some(names)] = &round_runs else {
                unreachable!()
            };
            println!(
                "  {mode} round {round}: CPU/invocation off {:.1} / addresses {:.1} / names {:.1} ms, outside the burns {:.2} / {:.2} / {:.2} ms; VmHWM first {} / {} / {} KiB, last {} / {} / {} KiB; profiles {} / {}; own ≥ {:.1} %, others ≤ {:.1} %, state=other median {:.0} % of a profile's CPU; bodies in flight ≤ {}; load {}",
                off.cpu_ms,
                addresses.cpu_ms,
                names.cpu_ms,
                off.cpu_ms - off.burn_cpu_ms,
                addresses.cpu_ms - addresses.burn_cpu_ms,
                names.cpu_ms - names.burn_cpu_ms,
                off.hwm_first_kib,
                addresses.hwm_first_kib,
                names.hwm_first_kib,
                off.hwm_last_kib,
                addresses.hwm_last_kib,
                names.hwm_last_kib,
                addresses.profiles,
                names.profiles,
                names.own_min,
                names.foreign_max,
                names.other_median,
                names.in_flight,
                load_average(),
            );
            runs.push(round_runs);
        }
        let runs: Vec<[&Run; 3]> = runs
            .iter()
            .map(|r| {
                let [Some(a), Some(b), Some(c)] = r else {
                    unreachable!()
                };
                [a, b, c]
            })
            .collect();
        let off_cpu: Vec<f64> = runs.iter().map(|r| r[0].cpu_ms).collect();
        println!(
            "{mode}: disabled process CPU per invocation {} ms, outside the burns {} ms",
            spread(&off_cpu),
            spread(
                &runs
                    .iter()
                    .map(|r| r[0].cpu_ms - r[0].burn_cpu_ms)
                    .collect::<Vec<_>>()
            )
        );
        for v in [1, 2] {
            let added = |f: &dyn Fn(&Run) -> f64| -> Vec<f64> {
                runs.iter().map(|r| f(r[v]) - f(r[0])).collect()
            };
            println!(
                "{mode}: {} added per invocation, mean ± standard error over {} rounds: CPU {} ms ({} % of the disabled process's), outside the burns {} ms, in the burns {} ms",
                variants[v].name(),
                runs.len(),
                mean_se(&added(&|r| r.cpu_ms)),
                mean_se(
                    &runs
                        .iter()
                        .map(|r| (r[v].cpu_ms - r[0].cpu_ms) * 100.0 / r[0].cpu_ms)
                        .collect::<Vec<_>>()
                ),
                mean_se(&added(&|r| r.cpu_ms - r.burn_cpu_ms)),
                mean_se(&added(&|r| r.burn_cpu_ms)),
            );
        }
        println!(
            "| {mode} | variant | CPU added / invocation, ms | % of the disabled process's | outside the burns added, ms | in the burns added, ms | peak RSS added after wave 1 / 6, MiB | anon added after 6, MiB | latency added median / max, ms | body added median / max, ms | return→response added median / max, ms | profiles | own share min, others max |"
        );
        for v in [1, 2] {
            let per = |f: &dyn Fn(&Run) -> f64| -> Vec<f64> {
                runs.iter().map(|r| f(r[v]) - f(r[0])).collect()
            };
            let cpu = per(&|r| r.cpu_ms);
            let cpu_pct: Vec<f64> = runs
                .iter()
                .map(|r| (r[v].cpu_ms - r[0].cpu_ms) * 100.0 / r[0].cpu_ms)
                .collect();
            let mib = |kib: u64| kib as f64 / 1024.0;
            println!(
                "| {mode} | {} | {} | {} | {} | {} | {} / {} | {} | {} / {} | {} / {} | {} / {} | {} | {} |",
                variants[v].name(),
                spread(&cpu),
                spread(&cpu_pct),
                spread(&per(&|r| r.cpu_ms - r.burn_cpu_ms)),
                spread(&per(&|r| r.burn_cpu_ms)),
                spread(&per(&|r| mib(r.hwm_first_kib))),
                spread(&per(&|r| mib(r.hwm_last_kib))),
                spread(&per(&|r| mib(r.anon_last_kib))),
                spread(&per(&|r| median(&r.latency_ms))),
                spread(&per(&|r| max(&r.latency_ms))),
                spread(&per(&|r| median(&r.body_ms))),
                spread(&per(&|r| max(&r.body_ms))),
                spread(&per(&|r| median(&r.return_to_response_ms))),
                spread(&per(&|r| max(&r.return_to_response_ms))),
                runs.iter()
                    .map(|r| format!("{}/{INVOCATIONS}", r[v].profiles))
                    .collect::<Vec<_>>()
                    .join(" "),
                if variants[v] == Variant::Names {
                    format!(
                        "{:.1} %, {:.1} %",
                        runs.iter().map(|r| r[v].own_min).fold(100.0, f64::min),
                        runs.iter().map(|r| r[v].foreign_max).fold(0.0, f64::max)
                    )
                } else {
                    "(addresses only)".to_owned()
                },
            );
        }
        let off_latency: Vec<f64> = runs.iter().map(|r| median(&r[0].latency_ms)).collect();
        let off_body: Vec<f64> = runs.iter().map(|r| median(&r[0].body_ms)).collect();
        println!(
            "{mode}: disabled latency median {} ms, body median {} ms",
            spread(&off_latency),
            spread(&off_body)
        );
    }
}
