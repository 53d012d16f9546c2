//! A Lambda function whose invocations mostly wait, for the wall-clock
//! profile tests. Every invocation is sampled.
//!
//! Event: `{"case": "http", "url_port": P, "cpu_ms": N}` (a GET to a slow
//! HTTP server on loopback, then N ms of CPU), `{"case": "channels"}` (200 ms
//! on a `futures::channel::oneshot`, then a 50 ms tokio sleep) or
//! `{"case": "panic_while_pending"}` (waits 150 ms, then panics) or
//! `{"case": "cancelled"}` (the profiled function waits 10 s but is dropped
//! by a 150 ms timeout around it).

use std::time::{Duration, Instant};

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xrayprofile::xrayprofile;

/// Not annotated itself: the `cancelled` case needs the profiled function
/// inside a timeout.
async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    if event.payload.get("case").and_then(Value::as_str) == Some("cancelled") {
        let outcome = tokio::time::timeout(Duration::from_millis(150), waits_too_long(event)).await;
        return Ok(json!({ "timed_out": outcome.is_err() }));
    }
    profiled(event).await
}

#[xrayprofile(threshold = 65535, bucket = "fixture-profiles", prefix = "wall")]
async fn waits_too_long(event: LambdaEvent<Value>) -> Result<Value, Error> {
    sleep_on_a_tokio_timer(Duration::from_secs(10)).await;
    Ok(event.payload)
}

#[xrayprofile(threshold = 65535, bucket = "fixture-profiles", prefix = "wall")]
async fn profiled(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let payload = event.payload;
    match payload.get("case").and_then(Value::as_str) {
        Some("http") => {
            let port = payload.get("port").and_then(Value::as_u64).unwrap_or(0);
            let started = Instant::now();
            let body = fetch_from_slow_server(u16::try_from(port)?).await?;
            let fetched = Instant::now();
            let cpu_ms = payload.get("cpu_ms").and_then(Value::as_u64).unwrap_or(0);
            let burnt = after_the_fetch(cpu_ms);
            Ok(json!({
                "bytes": body.len(),
                "burnt": burnt > 0,
                "fetch_ns": nanos(fetched - started),
                "cpu_wall_ns": nanos(fetched.elapsed()),
            }))
        }
        Some("channels") => {
            let started = Instant::now();
            wait_on_a_futures_oneshot(Duration::from_millis(200)).await;
            let received = Instant::now();
            sleep_on_a_tokio_timer(Duration::from_millis(50)).await;
            Ok(json!({
                "oneshot_ns": nanos(received - started),
                "sleep_ns": nanos(received.elapsed()),
            }))
        }
        Some("panic_while_pending") => {
            sleep_on_a_tokio_timer(Duration::from_millis(150)).await;
            panic!("fixture handler panicked after waiting");
        }
        other => Err(format!("unknown case {other:?}").into()),
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A plain HTTP/1.1 GET over a tokio socket: the await the test looks for.
#[inline(never)]
async fn fetch_from_slow_server(port: u16) -> Result<Vec<u8>, Error> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut body = Vec::new();
    stream.read_to_end(&mut body).await?;
    Ok(body)
}

#[inline(never)]
fn after_the_fetch(cpu_ms: u64) -> u64 {
    // Wall time, so the test can hold the profile to the nominal 80/20
    // split (400 ms waiting, 100 ms on CPU) on a loaded machine too.
    xrayprofile_tests::spin_for(Duration::from_millis(cpu_ms))
}

/// Waits on a future that is not tokio's: the sender fires from a thread.
#[inline(never)]
async fn wait_on_a_futures_oneshot(after: Duration) {
    let (tx, rx) = futures_channel::oneshot::channel::<()>();
    std::thread::spawn(move || {
        std::thread::sleep(after);
        let _ = tx.send(());
    });
    let _ = rx.await;
}

#[inline(never)]
async fn sleep_on_a_tokio_timer(duration: Duration) {
    tokio::time::sleep(duration).await;
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    xrayprofile_tests::function::init_logging();
    // The plain runtime: uploads are inline, so each profile is stored by
    // the time its invocation is answered.
    lambda_runtime::run(service_fn(handler)).await
}
