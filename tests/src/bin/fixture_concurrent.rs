//! A Lambda function for Lambda Managed Instances: `xrayprofile::run_concurrent`
//! serves `AWS_LAMBDA_MAX_CONCURRENCY` invocations at once, every one
//! sampled, in wall mode, without a cap.
//!
//! Event: `{"kind": K, "n": N, "cpu_ms": C}`. Kind K (0–3) burns C ms of
//! its thread's CPU time in its own `#[inline(never)]` function, then awaits
//! its own timer (30, 60, 90 or 120 ms) in its own async fn, so each
//! profile can be checked for its own kind's work and no other's. The
//! response echoes `kind` and `n` and gives `elapsed_ns`, the body's own
//! measurement of its duration.

use std::time::{Duration, Instant};

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};
use xrayprofile::xrayprofile;

#[xrayprofile(
    threshold = 65535,
    bucket = "fixture-profiles",
    prefix = "concurrent",
    max_per_minute = 0,
    mode = "wall"
)]
async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let started = Instant::now();
    let field = |name: &str| event.payload.get(name).and_then(Value::as_u64);
    let (Some(kind), Some(n)) = (field("kind"), field("n")) else {
        return Err("the event needs `kind` and `n`".into());
    };
    let cpu = Duration::from_millis(field("cpu_ms").unwrap_or(0));
    let checksum = match kind {
        0 => {
            let x = kind_a_burns(cpu);
            kind_a_waits().await;
            x
        }
        1 => {
            let x = kind_b_burns(cpu);
            kind_b_waits().await;
            x
        }
        2 => {
            let x = kind_c_burns(cpu);
            kind_c_waits().await;
            x
        }
        3 => {
            let x = kind_d_burns(cpu);
            kind_d_waits().await;
            x
        }
        other => return Err(format!("unknown kind {other}").into()),
    };
    Ok(json!({
        "kind": kind,
        "n": n,
        "checksum": checksum != 0,
        "elapsed_ns": u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
    }))
}

#[inline(never)]
fn kind_a_burns(cpu: Duration) -> u64 {
    std::hint::black_box(xrayprofile_tests::burn_cpu(cpu))
}

#[inline(never)]
fn kind_b_burns(cpu: Duration) -> u64 {
    std::hint::black_box(xrayprofile_tests::burn_cpu(cpu))
}

#[inline(never)]
fn kind_c_burns(cpu: Duration) -> u64 {
    std::hint::black_box(xrayprofile_tests::burn_cpu(cpu))
}

#[inline(never)]
fn kind_d_burns(cpu: Duration) -> u64 {
    std::hint::black_box(xrayprofile_tests::burn_cpu(cpu))
}

#[inline(never)]
async fn kind_a_waits() {
    tokio::time::sleep(Duration::from_millis(30)).await;
}

#[inline(never)]
async fn kind_b_waits() {
    tokio::time::sleep(Duration::from_millis(60)).await;
}

#[inline(never)]
async fn kind_c_waits() {
    tokio::time::sleep(Duration::from_millis(90)).await;
}

#[inline(never)]
async fn kind_d_waits() {
    tokio::time::sleep(Duration::from_millis(120)).await;
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    xrayprofile_tests::function::init_logging();
    xrayprofile::run_concurrent(service_fn(handler)).await
}
