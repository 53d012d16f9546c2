//! The user-sized function (`tests/sized`: lambda_runtime, xrayprofile with
//! the AWS SDK, tokio, serde_json) as the README tells Lambda Managed
//! Instances users to serve it: `xrayprofile::run_concurrent`, so up to
//! `AWS_LAMBDA_MAX_CONCURRENCY` invocations run at once in this process.
//! `tests/benches/concurrent_sized.rs` measures it.
//!
//! Event fields: `kind` (0–3: which named function burns the CPU, so each
//! profile can be checked for its own invocation's work), `passes` (how
//! many 64 KiB FNV-1a passes it burns: a fixed amount of work, so the CPU
//! the profiler adds shows in the process's CPU time instead of shortening
//! the burn), `sleep_ms` (then await a timer this long, the waits of
//! `wall` mode). The response echoes `kind` and gives `started_at_us` and
//! `returned_at_us` (wall clock when the body started and returned) and
//! `burn_ns` (how long the burn took).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};
use xrayprofile::xrayprofile;

#[xrayprofile(threshold = 655, bucket = "sized-profiles")]
async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let started_at_us = now_us();
    let field = |name: &str| event.payload.get(name).and_then(Value::as_u64);
    let kind = field("kind").unwrap_or(0);
    let passes = field("passes").unwrap_or(0);
    let burn = Instant::now();
    let burn_cpu = thread_cpu_ns();
    let checksum = match kind {
        0 => sized_kind_a_burns(passes),
        1 => sized_kind_b_burns(passes),
        2 => sized_kind_c_burns(passes),
        3 => sized_kind_d_burns(passes),
        other => return Err(format!("unknown kind {other}: use 0 to 3").into()),
    };
    let burn_cpu_ns = thread_cpu_ns().saturating_sub(burn_cpu);
    let burn_ns = u64::try_from(burn.elapsed().as_nanos()).unwrap_or(u64::MAX);
    if let Some(ms) = field("sleep_ms") {
        sized_wait_for_timer(Duration::from_millis(ms)).await;
    }
    Ok(json!({
        "kind": kind,
        "checksum": checksum > 0,
        "burn_ns": burn_ns,
        "burn_cpu_ns": burn_cpu_ns,
        "started_at_us": started_at_us,
        "returned_at_us": now_us(),
    }))
}

/// This thread's CPU time, ns. The burn is synchronous, so it runs on one
/// thread: the bench subtracts the burns' CPU from the process's to see
/// what was spent outside them, where the profiler's fixed costs (building,
/// writing, the ticker) are, without the burns' own ±1 % of noise. SIGPROF
/// handlers that interrupt the burn count in the burn's CPU.
fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a timespec into `now`, which outlives
    // the call; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if rc != 0 {
        return 0;
    }
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    secs * 1_000_000_000 + nanos
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Awaits a timer: the off-CPU wait of `wall` profiles.
#[inline(never)]
async fn sized_wait_for_timer(duration: Duration) {
    tokio::time::sleep(duration).await;
}

/// Kind 0's CPU: the frame its profiles' on-CPU samples must sit under.
/// Each kind passes its own seed: four identical bodies would be merged
/// into one address by the release build, and named as one.
#[inline(never)]
fn sized_kind_a_burns(passes: u64) -> u64 {
    std::hint::black_box(sized_hot_leaf(passes, 0x0a))
}

/// Kind 1's CPU.
#[inline(never)]
fn sized_kind_b_burns(passes: u64) -> u64 {
    std::hint::black_box(sized_hot_leaf(passes, 0x0b))
}

/// Kind 2's CPU.
#[inline(never)]
fn sized_kind_c_burns(passes: u64) -> u64 {
    std::hint::black_box(sized_hot_leaf(passes, 0x0c))
}

/// Kind 3's CPU.
#[inline(never)]
fn sized_kind_d_burns(passes: u64) -> u64 {
    std::hint::black_box(sized_hot_leaf(passes, 0x0d))
}

/// Hashes a 64 KiB buffer (FNV-1a) `passes` times, starting from `seed`:
/// the same work whatever else runs, unlike a loop bounded by a clock.
#[inline(never)]
fn sized_hot_leaf(passes: u64, seed: u64) -> u64 {
    let buffer: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for _ in 0..passes {
        for &byte in &buffer {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        hash = std::hint::black_box(hash);
    }
    hash
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    xrayprofile::run_concurrent(service_fn(handler)).await
}
