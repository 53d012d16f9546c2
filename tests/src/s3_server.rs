//! An S3-compatible server on loopback: s3s's protocol layer (with SigV4
//! signature checking) over s3s-fs's file store, behind a recorder that keeps
//! the method, path and headers of every request as the server received them.
//!
//! Between the recorder and s3s sits a fault hook ([`Fault`]): a test double
//! for what real S3 and real networks do and a healthy local server does not
//! (403 for a bucket owned by another account, 500/503, a connection that is
//! accepted and never answered, a slow answer). The requests that get through
//! are served by the real s3s code, so everything else stays real.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The access key the server accepts.
pub const ACCESS_KEY: &str = "AKIAXRAYPROFILETEST";
/// The secret key the server accepts.
pub const SECRET_KEY: &str = "xrayprofile-test-secret-key";

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `PUT`, `GET`, ...
    pub method: String,
    /// The path, `/{bucket}/{key}` with path-style addressing.
    pub path: String,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// When the request arrived.
    pub received_at: Instant,
}

impl Recorded {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A fault the server injects into every request that reaches it while set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and an S3 XML error of this code, as S3 does.
    Status {
        /// HTTP status, such as 403 or 503.
        status: u16,
        /// S3 error code, such as `AccessDenied` or `ServiceUnavailable`.
        code: &'static str,
    },
    /// Refuse, as S3 does, any request whose `x-amz-expected-bucket-owner`
    /// is not this account: the bucket belongs to someone else.
    BucketOwnedBy(String),
    /// Read the request and never answer; the connection stays open.
    Hang,
    /// Answer normally after this long.
    Delay(Duration),
}

type FaultSlot = Arc<Mutex<Option<Fault>>>;

/// The server; it stops when dropped.
pub struct S3Server {
    addr: SocketAddr,
    root: tempfile::TempDir,
    requests: Arc<Mutex<Vec<Recorded>>>,
    fault: FaultSlot,
    task: JoinHandle<()>,
}

impl S3Server {
    /// Starts the server with the given buckets already created.
    ///
    /// # Errors
    /// If the store or the port cannot be set up.
    pub async fn start(buckets: &[&str]) -> std::io::Result<S3Server> {
        let root = tempfile::tempdir()?;
        for bucket in buckets {
            std::fs::create_dir_all(root.path().join(bucket))?;
        }
        let fs = s3s_fs::FileSystem::new(root.path())
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let s3 = builder.build();

        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let fault: FaultSlot = Arc::new(Mutex::new(None));
        let faults = fault.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s3 = s3.clone();
                let log = log.clone();
                let faults = faults.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        record(s3.clone(), log.clone(), faults.clone(), req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(S3Server {
            addr,
            root,
            requests,
            fault,
            task,
        })
    }

    /// Injects `fault` into every later request, or stops injecting (`None`).
    pub fn set_fault(&self, fault: Option<Fault>) {
        if let Ok(mut slot) = self.fault.lock() {
            *slot = fault;
        }
    }

    /// `http://127.0.0.1:port`, the value of `AWS_ENDPOINT_URL_S3`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The `PUT` requests received so far.
    pub fn puts(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "PUT")
            .collect()
    }

    /// Where bucket `bucket`'s objects are stored.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.path().join(bucket)
    }

    /// The stored body of `bucket/key`.
    pub fn object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.bucket_dir(bucket).join(key)).ok()
    }

    /// Every object key in `bucket`, sorted.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let dir = self.bucket_dir(bucket);
        let mut keys = Vec::new();
        collect_keys(&dir, &dir, &mut keys);
        keys.sort();
        keys
    }

    /// Stops accepting connections: later uploads see connection refused.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn collect_keys(root: &Path, dir: &Path, keys: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_keys(root, &path, keys);
        } else if let Ok(relative) = path.strip_prefix(root) {
            let key = relative.to_string_lossy().into_owned();
            // s3s-fs keeps metadata in hidden side files.
            if !relative
                .components()
                .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
            {
                keys.push(key);
            }
        }
    }
}

async fn record(
    s3: S3Service,
    log: Arc<Mutex<Vec<Recorded>>>,
    fault: FaultSlot,
    req: Request<Incoming>,
) -> Result<Response<s3s::Body>, Infallible> {
    let recorded = Recorded {
        received_at: Instant::now(),
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    let owner = recorded
        .header("x-amz-expected-bucket-owner")
        .map(str::to_owned);
    if let Ok(mut log) = log.lock() {
        log.push(recorded);
    }
    let fault = fault.lock().ok().and_then(|f| f.clone());
    let refusal = match fault {
        None => None,
        Some(Fault::Status { status, code }) => Some((status, code)),
        Some(Fault::BucketOwnedBy(account)) => {
            (owner.as_deref() != Some(account.as_str())).then_some((403, "AccessDenied"))
        }
        Some(Fault::Hang) => {
            // Take the request, as a stuck server does, and never answer.
            let _ = req.into_body().collect().await;
            std::future::pending::<()>().await;
            return Ok(Response::new(s3s::Body::empty()));
        }
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            None
        }
    };
    if let Some((status, code)) = refusal {
        // Read the body first, so the client sees the answer rather than a
        // reset connection.
        let _ = req.into_body().collect().await;
        // S3's own text for a 403, whatever its cause.
        let message = if status == 403 {
            "Access Denied"
        } else {
            "injected by the test's fault hook"
        };
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>FAULT</RequestId></Error>"
        );
        let mut response = Response::new(s3s::Body::from(body));
        *response.status_mut() =
            hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/xml"),
        );
        return Ok(response);
    }
    let response = match s3.call(req.map(s3s::Body::from)).await {
        Ok(response) => response,
        Err(err) => {
            let mut response = Response::new(s3s::Body::from(format!("{err:?}")));
            *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    };
    Ok(response)
}
