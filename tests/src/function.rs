//! A Lambda function binary run as a child process, with the environment the
//! Lambda service would give it, polling a [`RuntimeApi`](crate::runtime_api::RuntimeApi).
//!
//! A separate process per function keeps each test's environment (which
//! xrayprofile reads once per process) its own, as each Lambda execution
//! environment is.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::s3_server::{ACCESS_KEY, S3Server, SECRET_KEY};

/// The function name every test function runs as.
pub const FUNCTION_NAME: &str = "fixture-function";

/// A running function process; killed when dropped.
pub struct Function {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

/// How to start a function process.
pub struct Launch<'a> {
    binary: &'a Path,
    args: Vec<String>,
    env: Vec<(String, OsString)>,
}

impl<'a> Launch<'a> {
    /// Runs `binary` against the Runtime API at `runtime_api` (`host:port`).
    pub fn new(binary: &'a Path, runtime_api: &str) -> Launch<'a> {
        let env = [
            ("AWS_LAMBDA_RUNTIME_API", runtime_api),
            ("AWS_LAMBDA_FUNCTION_NAME", FUNCTION_NAME),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "local"),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/fixture-function"),
            ("AWS_REGION", crate::REGION),
            ("RUST_LOG", "xrayprofile=debug,info"),
            ("RUST_BACKTRACE", "0"),
        ];
        Launch {
            binary,
            args: Vec::new(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
                .collect(),
        }
    }

    /// Points the function's S3 client at `server`, with its credentials and
    /// path-style addressing, and nowhere else (no IMDS, no profile files).
    pub fn s3(self, server: &S3Server) -> Launch<'a> {
        self.s3_endpoint(&server.endpoint())
    }

    /// Like [`Launch::s3`] for an arbitrary endpoint (for example a closed port).
    pub fn s3_endpoint(self, endpoint: &str) -> Launch<'a> {
        self.env("AWS_ENDPOINT_URL_S3", endpoint)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("XRAYPROFILE_S3_FORCE_PATH_STYLE", "true")
    }

    /// Sets one environment variable.
    pub fn env(self, name: &str, value: &str) -> Launch<'a> {
        self.env_os(name, OsString::from(value))
    }

    /// Sets one environment variable to any bytes, UTF-8 or not.
    pub fn env_os(mut self, name: &str, value: OsString) -> Launch<'a> {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.to_owned(), value));
        self
    }

    /// Adds a command-line argument.
    pub fn arg(mut self, arg: &str) -> Launch<'a> {
        self.args.push(arg.to_owned());
        self
    }

    /// Starts the process, capturing its stdout and stderr lines.
    ///
    /// # Errors
    /// If the binary cannot be started.
    pub fn spawn(self) -> std::io::Result<Function> {
        let mut command = Command::new(self.binary);
        command
            .args(&self.args)
            .env_clear()
            .envs(self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            collect(out, logs.clone());
        }
        if let Some(err) = child.stderr.take() {
            collect(err, logs.clone());
        }
        Ok(Function { child, logs })
    }
}

fn collect(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    logs: Arc<Mutex<Vec<String>>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(mut logs) = logs.lock() {
                logs.push(line);
            }
        }
    });
}

impl Function {
    /// Every line the function has printed so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The lines that contain `needle`.
    pub fn logs_containing(&self, needle: &str) -> Vec<String> {
        self.logs()
            .into_iter()
            .filter(|l| l.contains(needle))
            .collect()
    }

    /// Waits until at least `count` lines contain `needle` and returns those
    /// lines, or what there is after 10 s.
    ///
    /// A line the function wrote before answering can still be in the pipe
    /// when the answer arrives; this waits for the reader to catch up. It is
    /// not a timing assertion: the caller checks the lines it gets.
    pub async fn wait_for_logs(&self, needle: &str, count: usize) -> Vec<String> {
        self.wait_until(|logs| logs.iter().filter(|l| l.contains(needle)).count() >= count)
            .await;
        self.logs_containing(needle)
    }

    /// Waits until `done` holds for the lines logged so far, for at most 10 s.
    pub async fn wait_until(&self, done: impl Fn(&[String]) -> bool) {
        let give_up = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done(&self.logs()) && tokio::time::Instant::now() < give_up {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process's resident set size in KiB (`VmRSS`), while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS")
    }

    /// The CPU time all the process's threads have run so far, from
    /// `/proc/PID/task/*/schedstat` (nanoseconds, not the 10 ms ticks of
    /// `/proc/PID/stat`); threads that exited are not counted.
    pub fn cpu_time(&self) -> Option<std::time::Duration> {
        let pid = self.child.id()?;
        let mut total: u64 = 0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
        {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            total += stat
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .unwrap_or(0);
        }
        Some(std::time::Duration::from_nanos(total))
    }

    /// The CPU time of the whole process so far, threads that exited
    /// included (tokio's blocking-pool threads end after 10 s idle), from
    /// `/proc/PID/stat`'s `utime` + `stime`: 10 ms ticks (`USER_HZ`, 100 on
    /// Linux), so meant for runs of seconds; [`Function::cpu_time`] is
    /// finer but misses exited threads.
    pub fn process_cpu_time(&self) -> Option<std::time::Duration> {
        let pid = self.child.id()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The fields after the command name, which may hold spaces: state,
        // ppid, ..., utime (14th of the line, 12th here), stime.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
        let total = ticks(11)? + ticks(12)?;
        Some(std::time::Duration::from_millis(total * 10))
    }

    /// A KiB field of the process's `/proc/PID/status` (`VmRSS`, `VmHWM`,
    /// `RssAnon`...), while it runs.
    pub fn status_kib(&self, field: &str) -> Option<u64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Sends SIGTERM, as Lambda does to the runtime at shutdown when an
    /// extension is registered.
    ///
    /// # Errors
    /// If the process is gone or `kill` cannot be run.
    pub fn terminate(&self) -> std::io::Result<()> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| std::io::Error::other("the process has exited"))?;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("kill -TERM {pid}: {status}")))
        }
    }

    /// Waits for the process to exit, for at most 10 s (a hang guard, not a
    /// timing assertion); `None` if it is still running.
    pub async fn wait_exit(&mut self) -> Option<std::process::ExitStatus> {
        let wait = self.child.wait();
        tokio::time::timeout(std::time::Duration::from_secs(10), wait)
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Stops the process.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// Logging for a function process: `tracing` events to stderr, filtered by
/// `RUST_LOG`, without colours (the tests read the lines).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}
