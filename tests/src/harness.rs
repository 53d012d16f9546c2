//! What every end-to-end test does: start the Runtime API, the S3 server and
//! one fixture function process, invoke it, and compare its answers with what
//! the handler alone would answer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::function::{Function, Launch};
use crate::runtime_api::{Invoke, Outcome, RuntimeApi};
use crate::s3_server::S3Server;

/// The bucket the fixture's attribute names.
pub const BUCKET: &str = "fixture-profiles";
/// The key prefix the fixture's attribute names.
pub const PREFIX: &str = "fixture";

/// The Runtime API, the S3 server and one function process.
pub struct Setup {
    /// The Runtime API the function polls.
    pub api: RuntimeApi,
    /// The S3 server the function uploads to (with [`BUCKET`] created).
    pub s3: S3Server,
    /// The function process.
    pub function: Function,
}

/// Starts everything; `configure` adds the test's environment to the launch.
///
/// # Panics
/// If a server or the process cannot be started (a broken test machine).
pub async fn setup(binary: &Path, configure: impl FnOnce(Launch<'_>) -> Launch<'_>) -> Setup {
    let api = RuntimeApi::start().await.expect("Runtime API starts");
    let s3 = S3Server::start(&[BUCKET]).await.expect("S3 server starts");
    let launch = configure(Launch::new(binary, &api.endpoint()).s3(&s3));
    let function = launch.spawn().expect("function process starts");
    Setup { api, s3, function }
}

/// What the fixture handler answers to `payload`; any change made by
/// xrayprofile would break equality with it.
pub fn expected_response(request_id: &str, payload: &Value) -> Outcome {
    Outcome::Response(json!({ "echo": payload, "request_id": request_id, "checksum": true }))
}

/// A request ID shaped like Lambda's, unique per `n`.
pub fn request_id(n: u32) -> String {
    format!("8476a536-e9f4-11e8-9739-{n:012x}")
}

/// Invokes and waits up to 60 s for the answer; a hang fails the test.
///
/// # Panics
/// If the function does not answer within 60 s or exited.
pub async fn invoke(
    api: &RuntimeApi,
    request_id: &str,
    trace: Option<String>,
    payload: Value,
) -> Outcome {
    let call = api.invoke(Invoke::new(request_id, trace, payload));
    tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .expect("the function answered within 60 s")
        .expect("the function is running")
}

/// Asserts that nothing in the function process panicked and that it still runs.
///
/// # Panics
/// If it did, or if it exited.
pub fn assert_alive_without_panics(function: &mut Function) {
    let panics = function.logs_containing("panicked");
    assert!(panics.is_empty(), "panics in the function: {panics:?}");
    assert!(function.is_running(), "the function process exited");
}

/// A small deterministic generator, so failures reproduce.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next 64 pseudo-random bits (xorshift64*).
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// `join_all` without another dependency: runs every future on this task.
pub async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    let mut outputs: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, future) in outputs.iter_mut().zip(set.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(output) => *slot = Some(output),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Every file below `dir`, at any depth (the profiles a function wrote to
/// `XRAYPROFILE_OUTPUT_DIR`, under their key's folders); what cannot be
/// read is left out.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}
