//! A Lambda function shaped like a user's: the README's `#[xrayprofile]`
//! handler under plain `lambda_runtime::run`, with the AWS SDK linked in
//! through xrayprofile's default features. The symbolization benchmark
//! (`tests/benches/symbolize.rs`) runs it built with each debug-info level.
//!
//! Event fields: `spin_ms` (burn this much CPU time in a chain of named
//! functions), `sleep_ms` (then await a timer this long inside the async fn
//! [`sized_wait_for_timer`], whose name the wall profile shows or not
//! depending on the debug-info level). The response carries
//! `returned_at_us`, the wall-clock time the body returned.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};
use xrayprofile::xrayprofile;

#[xrayprofile(threshold = 655, bucket = "sized-profiles")]
async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let field = |name: &str| event.payload.get(name).and_then(Value::as_u64);
    let checksum = sized_outer(Duration::from_millis(field("spin_ms").unwrap_or(0)));
    if let Some(ms) = field("sleep_ms") {
        sized_wait_for_timer(Duration::from_millis(ms)).await;
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH);
    Ok(json!({
        "checksum": checksum > 0,
        "returned_at_us": now.map_or(0, |d| d.as_micros() as u64),
    }))
}

/// Awaits a timer: the off-CPU frame the wall profile names.
#[inline(never)]
async fn sized_wait_for_timer(duration: Duration) {
    tokio::time::sleep(duration).await;
}

/// The first of the named frames the CPU samples land in.
#[inline(never)]
fn sized_outer(duration: Duration) -> u64 {
    std::hint::black_box(sized_hot_leaf(duration))
}

/// Hashes a buffer (FNV-1a) until `duration` of wall time has passed (the
/// benchmark runs one invocation at a time on an otherwise idle function).
#[inline(never)]
fn sized_hot_leaf(duration: Duration) -> u64 {
    let start = std::time::Instant::now();
    let buffer: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    while start.elapsed() < duration {
        for &byte in &buffer {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        hash = std::hint::black_box(hash);
    }
    hash
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
