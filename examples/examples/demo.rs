//! The whole xrayprofile path on one machine, no AWS account needed:
//!
//! 1. starts an S3-compatible server and a Lambda Runtime API on loopback;
//! 2. runs this same binary again as the Lambda function (`--function`): a real
//!    `lambda_runtime` handler annotated with `#[xrayprofile(threshold = 6553)]`
//!    (about 10 % of traces), uploading with the real `aws-sdk-s3`;
//! 3. invokes it 200 times with generated X-Ray trace IDs;
//! 4. prints which invocations were profiled, their S3 keys, and where their
//!    time went (wall-clock: the await on a simulated database call and the
//!    CPU work), and saves them under `target/xrayprofile-demo/`.
//!
//! Run it with `cargo run --example demo`.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a demo talks to its user

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};
use xrayprofile::xrayprofile;
use xrayprofile_cli::merge::Merger;
use xrayprofile_cli::top::{self, TopRow};
use xrayprofile_tests::function::Launch;
use xrayprofile_tests::pprof_view;
use xrayprofile_tests::runtime_api::{Invoke, Outcome, RuntimeApi};
use xrayprofile_tests::s3_server::S3Server;

const INVOCATIONS: u32 = 200;
const BUCKET: &str = "demo-profiles";

// ---------------------------------------------------------------- the function

/// Prices an order: load the customer's discount, parse, price each line,
/// sign the receipt.
#[xrayprofile(threshold = 6553, bucket = "demo-profiles", prefix = "demo")]
async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let lines = event
        .payload
        .get("lines")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    let discount = load_discount(lines).await;
    let order = parse_order(lines);
    let total = price_order(&order) * (100 - discount) / 100;
    let receipt = sign_receipt(total, &event.context.request_id);
    Ok(json!({ "total_cents": total, "receipt": receipt }))
}

/// Stands in for a database round trip: the function waits, using no CPU.
/// A CPU profile would not show it; the wall-clock profile does.
#[inline(never)]
async fn load_discount(lines: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(20)).await;
    lines % 10
}

#[inline(never)]
fn parse_order(lines: u64) -> Vec<u64> {
    (0..lines * 2_000)
        .map(|i| i.wrapping_mul(2_654_435_761) % 10_007)
        .collect()
}

#[inline(never)]
fn price_order(order: &[u64]) -> u64 {
    let mut sorted = order.to_vec();
    sorted.sort_unstable();
    sorted
        .iter()
        .enumerate()
        .map(|(i, p)| p * (i as u64 % 7 + 1))
        .sum::<u64>()
        % 1_000_000
}

#[inline(never)]
fn sign_receipt(total: u64, request_id: &str) -> String {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for round in 0..15_000u64 {
        for b in request_id
            .bytes()
            .chain(total.to_le_bytes())
            .chain(round.to_le_bytes())
        {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

async fn run_function() -> Result<(), Error> {
    xrayprofile_tests::function::init_logging();
    lambda_runtime::run(service_fn(handler)).await
}

// ------------------------------------------------------------ the orchestrator

/// A small deterministic generator, so every run shows the same traces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn hex(&mut self, digits: usize) -> String {
        (0..digits)
            .map(|_| char::from_digit((self.next() % 16) as u32, 16).unwrap_or('0'))
            .collect()
    }
}

struct Profiled {
    request_id: String,
    key: String,
    bytes: usize,
    wall_ms: f64,
    samples: i64,
}

async fn run_demo() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let s3 = S3Server::start(&[BUCKET]).await?;
    let api = RuntimeApi::start().await?;
    let exe = std::env::current_exe()?;
    let mut function = Launch::new(&exe, &api.endpoint())
        .s3(&s3)
        .arg("--function")
        .env("RUST_LOG", "xrayprofile=info,warn")
        .env("AWS_LAMBDA_FUNCTION_NAME", "xrayprofile-demo")
        // The demo profiles about 13 invocations in 10 s, above the default
        // cap of 10 a minute that protects real functions from forced sampling.
        .env("XRAYPROFILE_MAX_PER_MINUTE", "0")
        .spawn()?;
    println!(
        "S3-compatible server  {}  (bucket `{BUCKET}`)",
        s3.endpoint()
    );
    println!("Lambda Runtime API    http://{}", api.endpoint());
    println!(
        "function              {} --function  (threshold 6553, about 10 % of traces)\n",
        exe.display()
    );

    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let mut profiled = Vec::new();
    let mut failures = 0;
    for n in 0..INVOCATIONS {
        let root = format!("1-{:08x}-{}", 0x6745_a3c0_u32 + n, rng.hex(24));
        let request_id = format!(
            "{}-{}-{}-{}-{}",
            rng.hex(8),
            rng.hex(4),
            rng.hex(4),
            rng.hex(4),
            rng.hex(12)
        );
        let header = format!("Root={root};Parent={};Sampled=1", rng.hex(16));
        let invoke = Invoke::new(&request_id, Some(header), json!({ "lines": 2 }));
        match tokio::time::timeout(Duration::from_secs(60), api.invoke(invoke)).await {
            Ok(Ok(Outcome::Response(_))) => {}
            other => {
                failures += 1;
                eprintln!("invocation {n} did not succeed: {other:?}");
            }
        }
        let sample_key = u16::from_str_radix(root.get(root.len() - 4..).unwrap_or("ffff"), 16)?;
        if sample_key <= 6553 {
            let key = format!("demo/{root}/{request_id}.pprof");
            let body = s3.object(BUCKET, &key).unwrap_or_default();
            let (wall_ms, samples) = pprof_view::decode(&body).map_or((-1.0, -1), |p| {
                (
                    ms(pprof_view::total(&p, "wall")),
                    pprof_view::total_samples(&p),
                )
            });
            profiled.push(Profiled {
                request_id,
                key,
                bytes: body.len(),
                wall_ms,
                samples,
            });
        }
    }

    println!(
        "{INVOCATIONS} invocations, {failures} failed, {} profiled (trace key <= 6553):\n",
        profiled.len()
    );
    println!(
        "  {:<38} {:>7} {:>11} {:>6}  key",
        "request id", "wall ms", "cpu samples", "bytes"
    );
    for p in &profiled {
        println!(
            "  {:<38} {:>7.1} {:>11} {:>6}  s3://{BUCKET}/{}",
            p.request_id, p.wall_ms, p.samples, p.bytes, p.key
        );
    }
    let stored = s3.keys(BUCKET);
    println!(
        "\nobjects in s3://{BUCKET}: {} (one per profiled invocation: {})",
        stored.len(),
        stored.len() == profiled.len()
    );

    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/xrayprofile-demo");
    save(&s3, &stored, &out)?;
    // Print `/repo/target/...`, not `/repo/examples/../target/...`.
    let out = out.canonicalize().unwrap_or(out);
    if let Some(first) = profiled.first() {
        let profile = pprof_view::decode(&s3.object(BUCKET, &first.key).unwrap_or_default())?;
        println!(
            "\none profile, {} ({:.1} ms of wall time, {} CPU samples at 99 Hz), carries its invocation:",
            first.key, first.wall_ms, first.samples
        );
        for comment in pprof_view::comments(&profile) {
            println!("  # {comment}");
        }
        println!(
            "\nopen it yourself:  go tool pprof -top {}",
            out.join(&first.key).display()
        );
    }
    let merged = merged_top(&s3, &stored)?;
    println!(
        "\nall {} profiles together, wall time of each function's own (flat) and under it (cum), as `pprof -top`:",
        stored.len()
    );
    println!("  {:>8} {:>8}  function", "flat ms", "cum ms");
    for row in merged.iter().filter(|r| r.flat > 0).take(8) {
        println!("  {:>8.1} {:>8.1}  {}", ms(row.flat), ms(row.cum), row.name);
    }
    let mut ours: Vec<_> = merged
        .iter()
        .filter(|r| r.name.starts_with("demo::"))
        .collect();
    ours.sort_by_key(|r| std::cmp::Reverse(r.cum));
    println!(
        "\nthe handler's own functions, by wall time under them (as `pprof -top -cum -focus demo::`):"
    );
    for row in ours {
        println!("  {:>8.1} {:>8.1}  {}", ms(row.flat), ms(row.cum), row.name);
    }

    let written = function.logs_containing("profile written").len();
    let warnings = function.logs_containing(" WARN ");
    println!(
        "\nfunction log: {written} `profile written` events, {} warnings",
        warnings.len()
    );
    for line in warnings.iter().take(5) {
        println!("  {line}");
    }
    function.kill().await;
    println!(
        "done in {:.1} s; profiles saved under {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    println!(
        "\nread them with the command line (`cargo install --path xrayprofile-cli`):\n  xrayprofile top --dir {0}\n  xrayprofile list --dir {0}\n  xrayprofile flamegraph --dir {0} -o flame.svg",
        out.display()
    );
    if failures > 0 || stored.len() != profiled.len() {
        return Err("the demo did not end as expected; see above".into());
    }
    Ok(())
}

fn ms(nanoseconds: i64) -> f64 {
    nanoseconds as f64 / 1e6
}

/// The stored profiles merged and tabled by the command line's own code
/// (`xrayprofile merge` + `xrayprofile top`), so the figures are the ones
/// `pprof -top` prints for the same files.
fn merged_top(s3: &S3Server, keys: &[String]) -> Result<Vec<TopRow>, String> {
    let mut merger = Merger::new();
    for key in keys {
        let profile = pprof_view::decode(&s3.object(BUCKET, key).unwrap_or_default())?;
        merger.add(key, &profile).map_err(|e| e.to_string())?;
    }
    let merged = merger.finish().ok_or("no profile to merge")?;
    let wall = merged
        .sample_type
        .iter()
        .position(|t| {
            usize::try_from(t.ty)
                .ok()
                .and_then(|i| merged.string_table.get(i))
                .is_some_and(|name| name == "wall")
        })
        .ok_or("the profiles have no `wall` sample type")?;
    Ok(top::table(&merged, wall, None, false).rows)
}

fn save(s3: &S3Server, keys: &[String], out: &Path) -> std::io::Result<()> {
    for key in keys {
        let path = out.join(key);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, s3.object(BUCKET, key).unwrap_or_default())?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|a| a == "--function") {
        return run_function()
            .await
            .map_err(|e| e as Box<dyn std::error::Error>);
    }
    run_demo().await
}
