//! C1: the `xrayprofile` command line at scale: listing 10,000 objects and
//! merging 1,000 profiles (target: under 2 s and 200 MiB).
//!
//! `cargo bench -p xrayprofile-tests --bench cli`
//!
//! Setup: the fixture function (real `lambda_runtime`, `wall` mode) writes 4
//! profiles; copies of them with their own request IDs (the `request_id`
//! label and comment rewritten, as distinct invocations have) are
//! uploaded through `aws-sdk-s3` with the metadata the library writes: 10,000
//! under `list/` and 1,000 under `merge/`, and the 1,000 also written to a
//! local directory. Each measurement runs the CLI binary as a child process
//! (5 runs, median wall time; peak RSS: the child's `VmHWM`, read every
//! millisecond, the largest of the runs).
#![allow(clippy::print_stdout, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use serde_json::json;
use xrayprofile_tests::function::Launch;
use xrayprofile_tests::harness::{BUCKET, invoke, request_id};
use xrayprofile_tests::runtime_api::RuntimeApi;
use xrayprofile_tests::s3_server::{ACCESS_KEY, S3Server, SECRET_KEY};
use xrayprofile_tests::{pprof_view, trace_header, trace_root};

const LISTED: usize = 10_000;
const MERGED: usize = 1_000;
const RUNS: usize = 5;

/// `VmHWM` of a running process, in KiB.
fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches(" kB").trim().parse().ok())
}

/// Runs the CLI; returns its wall time and peak RSS in KiB.
///
/// The peak is the child's `VmHWM`, read every millisecond until it exits:
/// `wait4`'s `ru_maxrss` would include this process's own RSS, which the
/// child's mm is a copy of until its `exec`.
fn measure(args: &[&str], env: &[(&str, String)]) -> (Duration, u64) {
    let started = Instant::now();
    let binary = Path::new(env!("CARGO_BIN_EXE_xrayprofile_cli"));
    let mut child = xrayprofile_tests::cli::command(binary, env)
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = peak_kib(child.id()) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let elapsed = started.elapsed();
    assert!(status.success(), "{args:?} failed");
    (elapsed, peak)
}

fn report(what: &str, args: &[&str], env: &[(&str, String)]) {
    let mut times = Vec::new();
    let mut peak = 0_u64;
    for _ in 0..RUNS {
        let (time, rss) = measure(args, env);
        times.push(time);
        peak = peak.max(rss);
    }
    times.sort();
    println!(
        "{what:<44} median {:>7.3} s  (min {:.3}, max {:.3})  peak RSS {:>6.1} MiB",
        times[RUNS / 2].as_secs_f64(),
        times[0].as_secs_f64(),
        times[RUNS - 1].as_secs_f64(),
        peak as f64 / 1024.0
    );
}

/// `profile` as another invocation `request` of `trace` would write it.
fn as_invocation(
    base: &pprof::protos::Profile,
    old_request: &str,
    request: &str,
    old_trace: &str,
    trace: &str,
) -> Vec<u8> {
    let mut profile = base.clone();
    for text in &mut profile.string_table {
        if text.contains(old_request) {
            *text = text.replace(old_request, request);
        }
        if text.contains(old_trace) {
            *text = text.replace(old_trace, trace);
        }
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &prost::Message::encode_to_vec(&profile)).unwrap();
    gz.finish().unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let s3 = S3Server::start(&[BUCKET]).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let written = work.path().join("written");

    // Four real profiles of the fixture function.
    let api = RuntimeApi::start().await.unwrap();
    let mut function = Launch::new(
        Path::new(env!("CARGO_BIN_EXE_fixture_function")),
        &api.endpoint(),
    )
    .env("XRAYPROFILE_OUTPUT_DIR", written.to_str().unwrap())
    .spawn()
    .unwrap();
    let mut bases = Vec::new();
    for seq in 0..4_u32 {
        let id = request_id(seq);
        invoke(
            &api,
            &id,
            Some(trace_header(seq, 0)),
            json!({ "spin_ms": 100, "sleep_ms": 20 }),
        )
        .await;
        let path = written
            .join("fixture")
            .join(trace_root(seq, 0))
            .join(format!("{id}.pprof"));
        let profile = pprof_view::decode(&std::fs::read(path).unwrap()).unwrap();
        bases.push((profile, id, trace_root(seq, 0)));
    }
    function.kill().await;
    let sizes: Vec<usize> = bases
        .iter()
        .map(|(p, ..)| as_invocation(p, "x", "x", "y", "y").len())
        .collect();

    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(s3.endpoint())
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "bench",
        ))
        .load()
        .await;
    let client = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(true)
            .build(),
    );
    let local = work.path().join("local");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (prefix, count) in [("list", LISTED), ("merge", MERGED)] {
        for i in 0..count {
            let (base, old_request, old_trace) = &bases[i % bases.len()];
            let trace = trace_root(u32::try_from(10_000 + i / 4).unwrap(), 0);
            let request = request_id(u32::try_from(100_000 + i).unwrap());
            let body = as_invocation(base, old_request, &request, old_trace, &trace);
            let key = format!("{prefix}/{trace}/{request}.pprof");
            if prefix == "merge" {
                let path = local.join(&key);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, &body).unwrap();
            }
            let request = client
                .put_object()
                .bucket(BUCKET)
                .key(key)
                .body(ByteStream::from(body))
                .metadata("trace-id", trace)
                .metadata("request-id", request)
                .metadata(
                    "function-name",
                    ["checkout", "payment", "search", "cart"][i % 4],
                )
                .metadata("function-version", "$LATEST")
                .metadata("duration-ms", (100 + i % 300).to_string())
                .metadata("samples", "10")
                .metadata("outcome", "ok");
            tasks.spawn(async move { request.send().await.map(drop) });
            while tasks.len() >= 32 {
                tasks.join_next().await.unwrap().unwrap().unwrap();
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    println!(
        "C1 setup: {} objects uploaded in {:.1} s; profile sizes {sizes:?} bytes (gzipped)",
        LISTED + MERGED,
        started.elapsed().as_secs_f64()
    );

    let env = |prefix: &str| xrayprofile_tests::cli::s3_env(&s3.endpoint(), BUCKET, prefix);
    let merged = work.path().join("merged.pb.gz");
    let merged = merged.to_str().unwrap();
    println!("C1 the command line ({RUNS} runs each, as a child process)");
    report(
        "list 10,000 objects (S3: 10 pages + 10,000 HEAD)",
        &["list", "--json"],
        &env("list"),
    );
    report(
        "list --function search (same listing, filtered)",
        &["list", "--function", "search"],
        &env("list"),
    );
    report(
        "merge 1,000 profiles from a local directory",
        &["merge", "--dir", local.to_str().unwrap(), "-o", merged],
        &env("merge"),
    );
    report(
        "merge 1,000 profiles from S3 (list + 1,000 GET)",
        &["merge", "-o", merged],
        &env("merge"),
    );
    report(
        "top of 1,000 profiles from a local directory",
        &["top", "--dir", local.to_str().unwrap()],
        &env("merge"),
    );
    let size = std::fs::metadata(merged).unwrap().len();
    println!("merged profile: {size} bytes gzipped");
}
