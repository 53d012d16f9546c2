//! P7 (issue 7): the response latency a sampled invocation adds: from the
//! handler's body returning to its `/response` POST arriving at the Runtime
//! API, side by side for
//!
//! - an unsampled invocation under `xrayprofile::run` (the baseline),
//! - a sampled one under `xrayprofile::run` (upload deferred),
//! - a sampled one under `ProfileLayer` on `Runtime` (upload after the POST),
//! - a sampled one under `lambda_runtime::run` with the attribute (upload
//!   inline, before the response).
//!
//! `cargo bench -p xrayprofile-tests --bench response_latency`
//!
//! Four fixture-function processes, each on its own loopback Runtime API,
//! upload to one loopback S3 server that answers every request after
//! [`S3_DELAY`] (a realistic in-region PutObject). Invocations go round-robin
//! over the four, one at a time, paced by [`PACE`] so an upload never
//! overlaps the next invocation (Lambda would wait for it, too). The body
//! stamps its return time into its response; the Runtime API stamps the
//! POST's arrival; both read the same wall clock.
#![allow(clippy::print_stdout, missing_docs)]

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;
use xrayprofile_tests::function::{Function, Launch};
use xrayprofile_tests::runtime_api::{Invoke, Outcome, RuntimeApi};
use xrayprofile_tests::s3_server::{Fault, S3Server};
use xrayprofile_tests::trace_header;

const S3_DELAY: Duration = Duration::from_millis(30);
const PACE: Duration = Duration::from_millis(80);
const WARMUP: u32 = 5;
const ROUNDS: u32 = 100;
const BUCKET: &str = "fixture-profiles";

struct Mode {
    name: &'static str,
    /// The trace key the invocations carry: 0 is sampled, 0xffff is not.
    key: u16,
    api: RuntimeApi,
    _function: Function,
    added_us: Vec<u64>,
}

async fn mode(name: &'static str, entry: &str, key: u16, s3: &S3Server) -> Mode {
    let api = RuntimeApi::start().await.unwrap();
    let function = Launch::new(
        Path::new(env!("CARGO_BIN_EXE_fixture_function")),
        &api.endpoint(),
    )
    .s3(s3)
    .env("FIXTURE_ENTRY", entry)
    .env("XRAYPROFILE_THRESHOLD", "0")
    .env("XRAYPROFILE_MAX_PER_MINUTE", "0")
    .env("RUST_LOG", "warn")
    .spawn()
    .unwrap();
    Mode {
        name,
        key,
        api,
        _function: function,
        added_us: Vec::new(),
    }
}

fn percentile(sorted: &[u64], p: usize) -> f64 {
    let i = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[i] as f64 / 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let s3 = S3Server::start(&[BUCKET]).await.unwrap();
    s3.set_fault(Some(Fault::Delay(S3_DELAY)));
    let mut modes = vec![
        mode("unsampled, xrayprofile::run", "xrayprofile", 0xffff, &s3).await,
        mode(
            "sampled, xrayprofile::run (deferred)",
            "xrayprofile",
            0,
            &s3,
        )
        .await,
        mode("sampled, ProfileLayer", "layer", 0, &s3).await,
        mode(
            "sampled, lambda_runtime::run (inline)",
            "lambda_runtime",
            0,
            &s3,
        )
        .await,
    ];
    let mut seq = 0;
    for round in 0..WARMUP + ROUNDS {
        for mode in &mut modes {
            seq += 1;
            let id = format!("be4c0000-0000-4000-8000-{seq:012}");
            let payload = json!({ "spin_ms": 20, "stamp": true });
            let invoke = Invoke::new(&id, Some(trace_header(seq, mode.key)), payload);
            let answer = mode.api.invoke_timed(invoke).await.unwrap();
            let Outcome::Response(body) = &answer.outcome else {
                panic!("{}: {:?}", mode.name, answer.outcome);
            };
            let returned = body["returned_at_us"].as_u64().unwrap();
            let answered = answer.answered.duration_since(UNIX_EPOCH).unwrap();
            let added = u64::try_from(answered.as_micros()).unwrap() - returned;
            if round >= WARMUP {
                mode.added_us.push(added);
            }
            tokio::time::sleep(PACE).await;
        }
    }
    let sampled = modes.iter().filter(|m| m.key == 0).count() as u32;
    let stored = s3.keys(BUCKET).len();
    println!(
        "P7 handler return -> /response at the Runtime API; S3 answers after {} ms; {ROUNDS} invocations per row after {WARMUP} warm-up, round-robin",
        S3_DELAY.as_millis()
    );
    println!("| invocation | median | p90 | max |");
    println!("|---|---|---|---|");
    for mode in &mut modes {
        mode.added_us.sort_unstable();
        let v = &mode.added_us;
        println!(
            "| {} | {:.2} ms | {:.2} ms | {:.2} ms |",
            mode.name,
            percentile(v, 50),
            percentile(v, 90),
            percentile(v, 100),
        );
    }
    println!(
        "profiles stored: {stored} (expected {})",
        (WARMUP + ROUNDS) * sampled
    );
}
