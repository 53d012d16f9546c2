//! The Lambda function the integration tests run: an annotated handler whose
//! behaviour each event chooses.
//!
//! Event fields: `spin_ms` (burn this much CPU in
//! [`fixture_hot_loop`]), `fail` (return `Err`), `panic` (panic).

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};
use xrayprofile::xrayprofile;

/// The handler under test. The attribute's values are the defaults; tests
/// override them through `XRAYPROFILE_*` variables when they need to.
#[xrayprofile(threshold = 655, bucket = "fixture-profiles", prefix = "fixture")]
async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let spin_ms = event
        .payload
        .get("spin_ms")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let checksum = fixture_hot_loop(std::time::Duration::from_millis(spin_ms));
    if event.payload.get("panic").and_then(Value::as_bool) == Some(true) {
        panic!("fixture handler panicked on purpose");
    }
    if event.payload.get("fail").and_then(Value::as_bool) == Some(true) {
        return Err("fixture handler failed on purpose".into());
    }
    Ok(
        json!({ "echo": event.payload, "request_id": event.context.request_id, "checksum": checksum > 0 }),
    )
}

/// Burns `duration` of this thread's CPU time (not wall time: on a loaded
/// machine the profile still gets its ~99 samples per CPU second); its name
/// is what the tests look for in profiles.
#[inline(never)]
fn fixture_hot_loop(duration: std::time::Duration) -> u64 {
    let start = cpu_time::ThreadTime::now();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while start.elapsed() < duration {
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        x = std::hint::black_box(x);
    }
    x | 1
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    lambda_runtime::run(service_fn(handler)).await
}
