//! The CPU-bound handler body the profiling benchmarks share: a fixed number
#![allow(dead_code)] // each benchmark uses part of it
//! of xorshift rounds under a few named, non-inlined frames, calibrated once
//! to take about the requested CPU time.

use std::hint::black_box;
use std::time::Duration;

/// Rounds per `work_leaf` call.
const CHUNK: u64 = 10_000;

#[inline(never)]
pub(crate) fn work_leaf(mut x: u64) -> u64 {
    for _ in 0..CHUNK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    black_box(x)
}

#[inline(never)]
pub(crate) fn work_handler(chunks: u64) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..chunks {
        x = work_leaf(x);
    }
    x
}

/// Chunks that take about `target` of CPU time on this machine (median of 5).
pub(crate) fn calibrate(target: Duration) -> u64 {
    let probe = 2_000;
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let start = process_cpu();
            black_box(work_handler(probe));
            process_cpu() - start
        })
        .collect();
    times.sort();
    let per_chunk = times[2].as_nanos().max(1) / u128::from(probe);
    u64::try_from(target.as_nanos() / per_chunk).unwrap_or(1)
}

/// This process's CPU time (user + system, all threads).
pub(crate) fn process_cpu() -> Duration {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// The calling thread's CPU time (user + system).
pub(crate) fn thread_cpu() -> Duration {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn cpu_clock(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the kernel to fill.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A `kB` field of `/proc/self/status`, in KiB.
pub(crate) fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS.
pub(crate) fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
