//! The fixture function under the real `cargo lambda watch`, the Runtime API
//! emulator most Rust Lambda developers run locally, which sends a deadline
//! of `600000` (ten minutes after 1970) and the ARN `function-arn` with
//! every invocation. Each invocation must leave one readable profile in
//! `XRAYPROFILE_OUTPUT_DIR`, under `lambda_runtime::run` and under
//! `xrayprofile::run` (whose extension `cargo lambda watch` also serves).
//!
//! `cargo lambda watch` builds the function itself (`cargo run --bin`); it is
//! pointed at this workspace's target directory so that it reuses the build
//! `cargo test` made. `.ci/run` installs cargo-lambda from PyPI and sets
//! `XRAYPROFILE_REQUIRE_CARGO_LAMBDA=1`, so there this cannot pass by
//! skipping.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use xrayprofile_tests::pprof_view;

/// Invocations per entry point.
const INVOCATIONS: usize = 3;
/// The function name `cargo lambda watch` serves the fixture binary as.
const FUNCTION: &str = "fixture_function";

#[allow(clippy::print_stderr)] // tells the person running the tests why it skipped
fn cargo_lambda_available() -> bool {
    let available = Command::new(env!("CARGO"))
        .args(["lambda", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        available || std::env::var_os("XRAYPROFILE_REQUIRE_CARGO_LAMBDA").is_none(),
        "XRAYPROFILE_REQUIRE_CARGO_LAMBDA is set but `cargo lambda` does not run; install it with `pip install cargo-lambda` (.ci/run does)"
    );
    if !available {
        eprintln!(
            "skipped: `cargo lambda` is not installed (`pip install cargo-lambda`); .ci/run installs it"
        );
    }
    available
}

/// The target directory `cargo test` built the fixture in.
fn target_dir() -> PathBuf {
    let binary = Path::new(env!("CARGO_BIN_EXE_fixture_function"));
    // <target>/<profile>/fixture_function
    binary
        .parent()
        .and_then(Path::parent)
        .expect("the fixture binary lies in <target>/<profile>/")
        .to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `cargo lambda watch` and the function it runs, in a process group of
/// their own that is ended when this is dropped.
struct Watch {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Watch {
    fn start(entry: &str, out: &Path, log: PathBuf) -> Watch {
        let port = free_port();
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let log_file = File::create(&log).unwrap();
        let child = Command::new(env!("CARGO"))
            .args(["lambda", "watch", "--ignore-changes", "--locked"])
            .args(["--bin", FUNCTION, "--invoke-port", &port.to_string()])
            .arg("--manifest-path")
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", target_dir())
            .env("FIXTURE_ENTRY", entry)
            .env("XRAYPROFILE_OUTPUT_DIR", out)
            .env("XRAYPROFILE_THRESHOLD", "65535")
            .env("XRAYPROFILE_MAX_PER_MINUTE", "0")
            .env("RUST_LOG", "xrayprofile=debug,info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .unwrap();
        Watch { child, log, port }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Invokes the function through `cargo lambda invoke`; retries while the
    /// server is not listening yet (the first call also waits for the build).
    fn invoke(&mut self, payload: &str) -> Value {
        let started = Instant::now();
        loop {
            let output = Command::new(env!("CARGO"))
                .args(["lambda", "invoke", FUNCTION, "--invoke-port"])
                .arg(self.port.to_string())
                .args(["--data-ascii", payload])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            if output.status.success() {
                return serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
                    panic!(
                        "the response is not JSON ({err}): {}",
                        String::from_utf8_lossy(&output.stdout)
                    )
                });
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("cargo lambda watch exited ({status}):\n{}", self.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "cargo lambda invoke kept failing: {}\nwatch log:\n{}",
                String::from_utf8_lossy(&output.stderr),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // The whole group: cargo lambda, cargo run and the function.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// Every `.pprof` file under `dir`.
fn profiles(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "pprof") {
                found.push(path);
            }
        }
    }
    found
}

/// Runs the fixture with `entry` under `cargo lambda watch`, invokes it
/// [`INVOCATIONS`] times and checks one readable profile per invocation.
fn one_profile_per_invocation(entry: &str) {
    if !cargo_lambda_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("profiles");
    let mut watch = Watch::start(entry, &out, tmp.path().join("watch.log"));
    let mut request_ids = BTreeSet::new();
    for _ in 0..INVOCATIONS {
        let response = watch.invoke(r#"{"spin_ms":100}"#);
        let id = response["request_id"].as_str().unwrap_or_else(|| {
            panic!(
                "the fixture answers with its request ID: {response}\n{}",
                watch.log()
            )
        });
        request_ids.insert(id.to_owned());
    }
    assert_eq!(request_ids.len(), INVOCATIONS, "distinct request IDs");

    // Under `xrayprofile::run` the uploads follow the responses.
    let waited = Instant::now();
    while profiles(&out).len() < INVOCATIONS && waited.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = watch.log();
    let files = profiles(&out);
    let named: BTreeSet<String> = files
        .iter()
        .filter_map(|p| p.file_stem()?.to_str().map(str::to_owned))
        .collect();
    assert_eq!(
        named, request_ids,
        "one profile per invocation: {files:?}\n{log}"
    );
    assert_eq!(files.len(), INVOCATIONS, "{files:?}");
    for file in &files {
        let profile = pprof_view::decode(&std::fs::read(file).unwrap())
            .unwrap_or_else(|err| panic!("{} does not decode: {err}", file.display()));
        let names = pprof_view::function_names(&profile);
        assert!(
            names.iter().any(|n| n.contains("fixture_hot_loop")),
            "{}: the 100 ms spin is named: {names:?}",
            file.display()
        );
    }
    // The extension registers (and stays) under `xrayprofile::run`; nothing
    // tells the user to raise a timeout the emulator made up.
    for advice in [
        "raise the function timeout",
        "profile dropped",
        "no account ID",
        "could not register",
        "extension stopped",
    ] {
        assert!(!log.contains(advice), "`{advice}` logged:\n{log}");
    }
    assert!(
        log.contains("is treated as unknown"),
        "the emulator's deadline is logged at debug: {log}"
    );
    assert_eq!(
        log.matches("is treated as unknown").count(),
        1,
        "logged once: {log}"
    );
}

#[test]
fn lambda_runtime_run_under_cargo_lambda_watch() {
    one_profile_per_invocation("run");
}

#[test]
fn xrayprofile_run_under_cargo_lambda_watch() {
    one_profile_per_invocation("xrayprofile");
}
