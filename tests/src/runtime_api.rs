//! A Lambda Runtime API on loopback: `GET /runtime/invocation/next` hands out
//! queued invocations, `POST .../response` and `.../error` complete them.
//! The real `lambda_runtime` client drives it exactly as it drives Lambda's.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::ACCOUNT_ID;

/// One invocation to send to the function.
#[derive(Debug, Clone)]
pub struct Invoke {
    /// `Lambda-Runtime-Aws-Request-Id`.
    pub request_id: String,
    /// `Lambda-Runtime-Trace-Id`; `None` sends no trace header.
    pub trace_header: Option<String>,
    /// The event.
    pub payload: serde_json::Value,
    /// Time from now to the invocation deadline.
    pub timeout: Duration,
}

impl Invoke {
    /// An invocation with a 30 s timeout.
    pub fn new(
        request_id: impl Into<String>,
        trace_header: Option<String>,
        payload: serde_json::Value,
    ) -> Invoke {
        Invoke {
            request_id: request_id.into(),
            trace_header,
            payload,
            timeout: Duration::from_secs(30),
        }
    }
}

/// What the function answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Posted to `/response`.
    Response(serde_json::Value),
    /// Posted to `/error`.
    Error(serde_json::Value),
}

/// What the function answered, and when, against the deadline it was given.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The answer.
    pub outcome: Outcome,
    /// The deadline the invocation carried.
    pub deadline: SystemTime,
    /// When the answer reached the Runtime API.
    pub answered: SystemTime,
}

impl Answer {
    /// Time left before the deadline when the answer arrived; negative
    /// (as `Err`) if it came after.
    pub fn slack(&self) -> Result<Duration, Duration> {
        self.deadline
            .duration_since(self.answered)
            .map_err(|late| late.duration())
    }
}

struct Queued {
    invoke: Invoke,
    reply: oneshot::Sender<Answer>,
}

struct Waiter {
    reply: oneshot::Sender<Answer>,
    deadline: SystemTime,
}

/// One thing that happened at the Runtime API, in arrival order.
#[derive(Debug, Clone)]
pub struct Happened {
    /// When the request arrived.
    pub at: Instant,
    /// `runtime_next`, `response`, `error`, `extension_register` or `extension_next`.
    pub what: &'static str,
    /// The invocation it concerns, when it concerns one.
    pub request_id: Option<String>,
}

struct Shared {
    timeline: std::sync::Mutex<Vec<Happened>>,
    extension_events: Mutex<mpsc::UnboundedReceiver<serde_json::Value>>,
    extension_queue: mpsc::UnboundedSender<serde_json::Value>,
    extension_registered: std::sync::atomic::AtomicBool,
    extension_broken: std::sync::atomic::AtomicBool,
    queue: Mutex<mpsc::UnboundedReceiver<Queued>>,
    waiting: std::sync::Mutex<HashMap<String, Waiter>>,
}

/// The Runtime API server; it runs until dropped with its runtime.
pub struct RuntimeApi {
    addr: SocketAddr,
    queue: mpsc::UnboundedSender<Queued>,
    shared: Arc<Shared>,
}

impl RuntimeApi {
    /// Starts the server on an ephemeral loopback port.
    ///
    /// # Errors
    /// If the port cannot be bound.
    pub async fn start() -> std::io::Result<RuntimeApi> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (queue, rx) = mpsc::unbounded_channel();
        let (extension_queue, extension_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            timeline: std::sync::Mutex::new(Vec::new()),
            extension_events: Mutex::new(extension_rx),
            extension_queue,
            extension_registered: std::sync::atomic::AtomicBool::new(false),
            extension_broken: std::sync::atomic::AtomicBool::new(false),
            queue: Mutex::new(rx),
            waiting: std::sync::Mutex::new(HashMap::new()),
        });
        let timeline = shared.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req| handle(shared.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(RuntimeApi {
            addr,
            queue,
            shared: timeline,
        })
    }

    /// Everything that has happened so far, in arrival order.
    pub fn timeline(&self) -> Vec<Happened> {
        self.shared
            .timeline
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    /// Breaks the Extensions API's `event/next` (an HTTP 500 with a body that
    /// is not an event), or mends it: what an extension sees when Lambda's
    /// agent fails. Registration keeps working.
    pub fn break_extension_next(&self, broken: bool) {
        self.shared
            .extension_broken
            .store(broken, std::sync::atomic::Ordering::SeqCst);
    }

    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Queues an invocation and waits for the function's answer.
    ///
    /// # Errors
    /// If the function never answers (it exited).
    pub async fn invoke(&self, invoke: Invoke) -> Result<Outcome, String> {
        self.invoke_timed(invoke).await.map(|answer| answer.outcome)
    }

    /// Like [`RuntimeApi::invoke`], with when the answer came.
    ///
    /// # Errors
    /// If the function never answers (it exited).
    pub async fn invoke_timed(&self, invoke: Invoke) -> Result<Answer, String> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Queued { invoke, reply })
            .map_err(|_| "runtime API stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the function never answered".to_owned())
    }
}

type Body = Full<Bytes>;

fn record(shared: &Shared, what: &'static str, request_id: Option<&str>) {
    if let Ok(mut timeline) = shared.timeline.lock() {
        timeline.push(Happened {
            at: Instant::now(),
            what,
            request_id: request_id.map(str::to_owned),
        });
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/2020-01-01/extension/register" {
        record(&shared, "extension_register", None);
        shared
            .extension_registered
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let body = r#"{"functionName":"fixture-function","functionVersion":"$LATEST","handler":"bootstrap"}"#;
        let response = Response::builder()
            .status(StatusCode::OK)
            .header("lambda-extension-identifier", "xrayprofile-test-extension")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| reply(StatusCode::INTERNAL_SERVER_ERROR, ""));
        return Ok(response);
    }
    if path == "/2020-01-01/extension/event/next" {
        record(&shared, "extension_next", None);
        if shared
            .extension_broken
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(reply(StatusCode::INTERNAL_SERVER_ERROR, "agent failure"));
        }
        let event = shared.extension_events.lock().await.recv().await;
        return Ok(match event {
            Some(event) => reply(StatusCode::OK, event.to_string()),
            None => reply(StatusCode::GONE, ""),
        });
    }
    let Some(rest) = path.strip_prefix("/2018-06-01/runtime/") else {
        return Ok(reply(StatusCode::NOT_FOUND, "unknown path"));
    };
    if rest == "invocation/next" {
        record(&shared, "runtime_next", None);
        return Ok(next(&shared).await);
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let value: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
    let parts: Vec<&str> = rest.split('/').collect();
    let outcome = match parts.as_slice() {
        ["invocation", id, "response"] => Some((id.to_string(), Outcome::Response(value))),
        ["invocation", id, "error"] => Some((id.to_string(), Outcome::Error(value))),
        _ => None,
    };
    let Some((id, outcome)) = outcome else {
        return Ok(reply(StatusCode::ACCEPTED, ""));
    };
    let what = if matches!(outcome, Outcome::Response(_)) {
        "response"
    } else {
        "error"
    };
    record(&shared, what, Some(&id));
    let waiter = shared.waiting.lock().ok().and_then(|mut w| w.remove(&id));
    match waiter {
        Some(waiter) => {
            let _ = waiter.reply.send(Answer {
                outcome,
                deadline: waiter.deadline,
                answered: SystemTime::now(),
            });
            Ok(reply(StatusCode::ACCEPTED, r#"{"status":"OK"}"#))
        }
        None => Ok(reply(StatusCode::BAD_REQUEST, "unknown request id")),
    }
}

async fn next(shared: &Shared) -> Response<Body> {
    let queued = shared.queue.lock().await.recv().await;
    let Some(Queued {
        invoke,
        reply: waiter,
    }) = queued
    else {
        return reply(StatusCode::GONE, "no more invocations");
    };
    let deadline = SystemTime::now() + invoke.timeout;
    let deadline_ms = deadline
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    if let Ok(mut waiting) = shared.waiting.lock() {
        waiting.insert(
            invoke.request_id.clone(),
            Waiter {
                reply: waiter,
                deadline,
            },
        );
    }
    if shared
        .extension_registered
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        let mut event = serde_json::json!({
            "eventType": "INVOKE",
            "deadlineMs": u64::try_from(deadline_ms).unwrap_or(u64::MAX),
            "requestId": invoke.request_id,
            "invokedFunctionArn": format!("arn:aws:lambda:{}:{ACCOUNT_ID}:function:fixture-function", crate::REGION),
        });
        if let Some(trace) = &invoke.trace_header {
            event["tracing"] = serde_json::json!({ "type": "X-Amzn-Trace-Id", "value": trace });
        }
        let _ = shared.extension_queue.send(event);
    }
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("lambda-runtime-aws-request-id", &invoke.request_id)
        .header("lambda-runtime-deadline-ms", deadline_ms.to_string())
        .header(
            "lambda-runtime-invoked-function-arn",
            format!(
                "arn:aws:lambda:{}:{ACCOUNT_ID}:function:fixture-function",
                crate::REGION
            ),
        );
    if let Some(trace) = &invoke.trace_header {
        response = response.header("lambda-runtime-trace-id", trace);
    }
    response
        .body(Full::new(Bytes::from(invoke.payload.to_string())))
        .unwrap_or_else(|_| reply(StatusCode::INTERNAL_SERVER_ERROR, "bad invocation"))
}
