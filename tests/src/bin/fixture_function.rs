//! The Lambda function the integration tests run: an annotated handler whose
//! behaviour each event chooses.
//!
//! Event fields: `spin_ms` (burn this much CPU in
//! [`fixture_hot_loop`]), `sleep_ms` (then await a timer this long, so
//! concurrent invocations overlap), `stress_ms` (until the process has used this much
//! CPU time, allocate, format, unwind a caught panic and spawn tasks: what the
//! signal-safety test samples), `fail` (return `Err`), `panic` (panic), `stamp` (add
//! `returned_at_us`, the wall-clock time the body returned, to the response).
//!
//! It runs with `lambda_runtime::run_concurrent`, which polls for
//! `AWS_LAMBDA_MAX_CONCURRENCY` invocations at once when that is set above 1
//! and is the same sequential loop as `run` otherwise.

use lambda_runtime::{Error, LambdaEvent, Runtime, service_fn};
use serde_json::{Value, json};
use xrayprofile::{ProfileLayer, xrayprofile};

/// The handler under test. The attribute's values are the defaults; tests
/// override them through `XRAYPROFILE_*` variables when they need to.
#[xrayprofile(threshold = 655, bucket = "fixture-profiles", prefix = "fixture")]
async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    respond(event).await
}

/// What the fixture does with an event, profiled or not; [`ProfileLayer`]
/// runs it unannotated (the attribute would profile it a second time).
async fn respond(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let spin_ms = event
        .payload
        .get("spin_ms")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let mut checksum = fixture_hot_loop(std::time::Duration::from_millis(spin_ms));
    if let Some(sleep_ms) = event.payload.get("sleep_ms").and_then(Value::as_u64) {
        tokio::time::sleep(std::time::Duration::from_millis(sleep_ms)).await;
    }
    if let Some(stress_ms) = event.payload.get("stress_ms").and_then(Value::as_u64) {
        // Process CPU time, not wall time: the work spreads over the worker
        // threads, and on a loaded machine a wall-clock bound would give the
        // sampler's per-thread CPU timers too little CPU to fire.
        let stress = std::time::Duration::from_millis(stress_ms);
        let start = cpu_time::ProcessTime::now();
        while start.elapsed() < stress {
            checksum = checksum.wrapping_add(fixture_stress().await);
        }
    }
    if event.payload.get("panic").and_then(Value::as_bool) == Some(true) {
        panic!("fixture handler panicked on purpose");
    }
    if event.payload.get("fail").and_then(Value::as_bool) == Some(true) {
        return Err("fixture handler failed on purpose".into());
    }
    let mut response = json!({ "echo": event.payload, "request_id": event.context.request_id, "checksum": checksum > 0 });
    if event.payload.get("stamp").and_then(Value::as_bool) == Some(true) {
        // The last thing the body does, so the response-latency bench can
        // measure from here to the response's arrival at the Runtime API.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        response["returned_at_us"] = json!(now.map(|d| d.as_micros() as u64).unwrap_or(0));
    }
    Ok(response)
}

/// Burns `duration` of this thread's CPU time; its name is what the tests
/// look for in profiles.
#[inline(never)]
fn fixture_hot_loop(duration: std::time::Duration) -> u64 {
    xrayprofile_tests::burn_cpu(duration)
}

/// Work that is hard on an unwinder running in a signal handler: heavy
/// allocation and freeing, formatting, a panic unwound and caught, and tasks
/// spawned onto other worker threads.
#[inline(never)]
async fn fixture_stress() -> u64 {
    let mut total: u64 = 0;
    for round in 0..5u64 {
        let mut blocks: Vec<Vec<u8>> = (0..200)
            .map(|i| vec![(i % 251) as u8; 64 + (i * 37) % 4096])
            .collect();
        blocks.retain(|b| b.len() % 3 != 0);
        let text: Vec<String> = blocks
            .iter()
            .map(|b| format!("{round}:{}:{:?}", b.len(), b.first()))
            .collect();
        total = total.wrapping_add(text.iter().map(|t| t.len() as u64).sum::<u64>());
        // `resume_unwind` unwinds like a panic without running the panic hook,
        // so the logs stay clean while the unwinder does its work.
        let caught = std::panic::catch_unwind(|| {
            let _guard = vec![round; 100];
            std::panic::resume_unwind(Box::new(round))
        });
        total = total.wrapping_add(u64::from(caught.is_err()));
    }
    let tasks: Vec<_> = (0..4u64)
        .map(|t| {
            tokio::spawn(async move {
                let v: Vec<String> = (0..500).map(|i| format!("{t}-{i}")).collect();
                v.concat().len() as u64
            })
        })
        .collect();
    for task in tasks {
        total = total.wrapping_add(task.await.unwrap_or(0));
    }
    total
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    xrayprofile_tests::function::init_logging();
    // FIXTURE_ENTRY=xrayprofile runs the deferred-upload entry point;
    // FIXTURE_ENTRY=run the plain `lambda_runtime::run`;
    // FIXTURE_ENTRY=layer profiles through `ProfileLayer` on a plain handler,
    // with the attribute's values.
    match std::env::var("FIXTURE_ENTRY").as_deref() {
        Ok("xrayprofile") => xrayprofile::run(service_fn(handler)).await,
        Ok("run") => lambda_runtime::run(service_fn(handler)).await,
        Ok("layer") => {
            let layer = ProfileLayer::new()
                .threshold(655)
                .bucket("fixture-profiles")
                .prefix("fixture");
            Runtime::new(service_fn(respond)).layer(layer).run().await
        }
        _ => lambda_runtime::run_concurrent(service_fn(handler)).await,
    }
}
