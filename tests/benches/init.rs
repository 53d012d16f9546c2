//! P6: init time and RSS of a function with `#[xrayprofile]` next to a bare
//! `lambda_runtime` function, before the first invocation.
//!
//! `cargo bench -p xrayprofile-tests --bench init`
//!
//! Each run spawns the function binary with a Lambda environment pointing at
//! a loopback listener and measures the time from spawn to its first
//! `GET /runtime/invocation/next` (the end of init), and its VmRSS at that
//! moment, then kills it. 21 runs of each, alternating; medians.
#![allow(clippy::print_stdout, missing_docs)]

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Spawn → first `next` request, and VmRSS then.
fn init_once(binary: &str) -> (Duration, [u64; 3]) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let api = listener.local_addr().unwrap().to_string();
    let started = Instant::now();
    let mut child = Command::new(binary)
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", &api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "init")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/init")
        .env("AWS_REGION", "us-east-1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    let mut buf = [0_u8; 512];
    let mut request = Vec::new();
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let init = started.elapsed();
    let rss = ["VmRSS", "RssAnon", "RssFile"].map(|field| status_kib(child.id(), field));
    child.kill().unwrap();
    child.wait().unwrap();
    let line = String::from_utf8_lossy(&request)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(line.contains("/runtime/invocation/next"), "{line}");
    (init, rss)
}

fn main() {
    let plain = env!("CARGO_BIN_EXE_init_plain");
    let annotated = env!("CARGO_BIN_EXE_init_annotated");
    init_once(plain);
    init_once(annotated);
    let (mut pt, mut pr, mut at, mut ar) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..21 {
        let order = if run % 2 == 0 {
            [plain, annotated]
        } else {
            [annotated, plain]
        };
        for binary in order {
            let (t, rss) = init_once(binary);
            if binary == plain {
                pt.push(t);
                pr.push(rss);
            } else {
                at.push(t);
                ar.push(rss);
            }
        }
    }
    for v in [&mut pt, &mut at] {
        v.sort();
    }
    for v in [&mut pr, &mut ar] {
        v.sort();
    }
    let [p_rss, p_anon, p_file] = pr[10];
    let [a_rss, a_anon, a_file] = ar[10];
    println!("P6 init, spawn -> first GET /next (21 runs each, median; RSS of the median-RSS run)");
    println!(
        "  bare lambda_runtime:  {:6.2} ms, VmRSS {p_rss:6} KiB (anon {p_anon}, file {p_file})",
        pt[10].as_secs_f64() * 1e3
    );
    println!(
        "  with #[xrayprofile]:  {:6.2} ms, VmRSS {a_rss:6} KiB (anon {a_anon}, file {a_file})",
        at[10].as_secs_f64() * 1e3
    );
    println!(
        "  added: {:+.2} ms, {:+} KiB (anon {:+}, file {:+})",
        (at[10].as_secs_f64() - pt[10].as_secs_f64()) * 1e3,
        a_rss as i64 - p_rss as i64,
        a_anon as i64 - p_anon as i64,
        a_file as i64 - p_file as i64
    );
}
