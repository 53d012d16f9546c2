//! Issue 18: CPU overhead and memory of 8 invocations profiled at once on a
//! tokio runtime with 2 worker threads (Lambda Managed Instances with
//! `AWS_LAMBDA_MAX_CONCURRENCY=8` on 2 vCPUs).
//!
//! `cargo bench -p xrayprofile --features bench --bench concurrent`
//!
//! Each pass spawns 8 tasks, each a CPU-bound handler of about 100 ms that
//! yields between chunks (so the tasks interleave on the 2 workers).
//! Profiled passes start one profile per task and poll its body as that
//! profile's invocation (`cpu` mode), so the 8 profiles share the sampler.
//! 11 pairs, alternating which runs first; each pair gives the ratio of
//! process CPU time (profiled: the starts, the bodies and the signal
//! handlers; building the profiles is P4) to the unprofiled pass's.
//! Reports the median ratio, the samples each profile kept, and the peak
//! RSS (VmHWM) the profiled passes added over the unprofiled ones.
#![allow(clippy::print_stdout, missing_docs)]

mod support;
use support as workload;

use std::hint::black_box;
use std::time::Duration;

use xrayprofile::__private::bench::Profiling;

const INVOCATIONS: usize = 8;
const PAIRS: usize = 11;
/// Yields per handler: its body is this many chunks of work.
const SLICES: u64 = 10;

async fn body(chunks: u64) -> u64 {
    let mut x = 0_u64;
    for _ in 0..SLICES {
        x ^= workload::work_handler(chunks / SLICES);
        tokio::task::yield_now().await;
    }
    black_box(x)
}

/// One pass: 8 handlers at once; returns the process CPU time they took
/// and, when profiled, the profiles (still to be built).
fn pass(
    runtime: &tokio::runtime::Runtime,
    chunks: u64,
    profiled: bool,
) -> (Duration, Vec<Profiling>) {
    let start = workload::process_cpu();
    let profiles = runtime.block_on(async move {
        let tasks: Vec<_> = (0..INVOCATIONS)
            .map(|_| {
                tokio::spawn(async move {
                    if !profiled {
                        black_box(body(chunks).await);
                        return None;
                    }
                    let profile = Profiling::start().expect("the profiler starts");
                    black_box(profile.cpu(body(chunks)).await.expect("no panic"));
                    Some(profile)
                })
            })
            .collect();
        let mut profiles = Vec::new();
        for task in tasks {
            profiles.extend(task.await.expect("the task ran"));
        }
        profiles
    });
    (workload::process_cpu() - start, profiles)
}

/// This process's peak resident set (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let chunks = workload::calibrate(Duration::from_millis(100));
    // Warm both paths once (first profile: symbol cache, ticker thread).
    let _ = pass(&runtime, chunks, false);
    let before = peak_rss_kib();
    let (_, profiles) = pass(&runtime, chunks, true);
    let after_profiled = peak_rss_kib();
    for profile in profiles {
        let _ = profile.finish();
    }
    let after_built = peak_rss_kib();

    let mut ratios = Vec::new();
    let mut samples = Vec::new();
    for pair in 0..PAIRS {
        let order = if pair % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut cpu = [Duration::ZERO; 2];
        for profiled in order {
            let (took, profiles) = pass(&runtime, chunks, profiled);
            cpu[usize::from(profiled)] = took;
            for profile in profiles {
                samples.push(profile.finish().samples);
            }
        }
        ratios.push(cpu[1].as_secs_f64() / cpu[0].as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    samples.sort_unstable();
    let median = ratios[ratios.len() / 2];
    println!("8 concurrent invocations of ~100 ms CPU on 2 tokio workers, {PAIRS} pairs");
    println!(
        "CPU overhead (profiled / unprofiled, process CPU): median {:+.2} %  (min {:+.2} %, max {:+.2} %)",
        (median - 1.0) * 100.0,
        (ratios[0] - 1.0) * 100.0,
        (ratios[ratios.len() - 1] - 1.0) * 100.0
    );
    println!(
        "samples per profile: median {}  (min {}, max {}) of {} profiles",
        samples.get(samples.len() / 2).copied().unwrap_or(0),
        samples.first().copied().unwrap_or(0),
        samples.last().copied().unwrap_or(0),
        samples.len()
    );
    println!(
        "peak RSS added by the first 8 concurrent profiles: {} KiB while sampling, {} KiB once built (symbolization included)",
        after_profiled.saturating_sub(before),
        after_built.saturating_sub(before)
    );
}
