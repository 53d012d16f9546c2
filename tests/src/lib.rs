//! Real parts for xrayprofile's integration tests and demo, all on loopback:
//!
//! - [`runtime_api::RuntimeApi`]: the Lambda Runtime API that the real
//!   `lambda_runtime` client polls, queuing invocations and collecting replies;
//! - [`s3_server::S3Server`]: an S3-compatible server (s3s + s3s-fs, with
//!   SigV4 checking) that records the headers of every request it receives;
//! - [`function::Function`]: a Lambda function binary started as a child
//!   process with the environment Lambda would give it;
//! - [`pprof_view`]: reads the gzipped pprof files back;
//! - [`harness`]: start all three, invoke, compare answers;
//! - [`cli`]: run the `xrayprofile` command line against that S3 server.
//!
//! Nothing here is mocked: the function under test runs the published
//! `lambda_runtime` and `aws-sdk-s3` code paths end to end. The S3 server's
//! fault hook ([`s3_server::Fault`]) injects what real S3 and real networks
//! do and a healthy local server does not (403, 500/503, no answer, a slow
//! answer) in front of the real s3s server.

pub mod cli;
pub mod function;
pub mod harness;
pub mod pprof_view;
pub mod runtime_api;
pub mod s3_server;

/// The account in every test function's ARN; S3 sees it as the expected owner.
pub const ACCOUNT_ID: &str = "123456789012";
/// The region the test functions run in.
pub const REGION: &str = "us-east-1";

/// A trace header whose root ends in `key`, so the test picks the decision.
pub fn trace_header(seq: u32, key: u16) -> String {
    format!(
        "Root={};Parent=53995c3f42cd8ad8;Sampled=1",
        trace_root(seq, key)
    )
}

/// A valid trace root ending in `key`, unique per `seq`.
pub fn trace_root(seq: u32, key: u16) -> String {
    format!("1-6745a3c0-{seq:08x}a1b2c3d4e5f6{key:04x}")
}

/// Keeps the calling thread busy for `duration` of wall time: on an idle
/// machine that is as much CPU time, on a loaded one less, but the
/// invocation's wall-clock split stays what the test asked for.
#[inline(never)]
pub fn spin_for(duration: std::time::Duration) -> u64 {
    let start = std::time::Instant::now();
    spin_while(|| start.elapsed() < duration)
}

/// Burns `duration` of the calling thread's CPU time (not wall time: on a
/// loaded machine a profile still gets its ~99 samples per CPU second) and
/// returns a value the optimizer cannot discard. Fixture functions call it
/// from `#[inline(never)]` functions whose names the tests look for.
#[inline(never)]
pub fn burn_cpu(duration: std::time::Duration) -> u64 {
    let start = cpu_time::ThreadTime::now();
    spin_while(|| start.elapsed() < duration)
}

/// Arithmetic the optimizer cannot discard, in chunks of 10,000 steps
/// (a few µs) between checks of `busy`.
fn spin_while(mut busy: impl FnMut() -> bool) -> u64 {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while busy() {
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        x = std::hint::black_box(x);
    }
    x | 1
}
