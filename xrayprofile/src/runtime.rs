//! [`run`]: `lambda_runtime::run` plus deferred uploads, so a profiled
//! invocation's response is not held back by its upload.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime};

use lambda_runtime::tower::{Layer, Service};
use lambda_runtime::{
    Diagnostic, Error, IntoFunctionResponse, LambdaEvent, LambdaInvocation, Runtime,
};
use serde::{Deserialize, Serialize};
use tokio_stream::Stream;

use crate::{deadline, deferred};

/// Starts the Lambda runtime like [`lambda_runtime::run`], with profile
/// uploads moved off the response path.
///
/// It registers an internal Lambda extension named `xrayprofile` that keeps
/// the execution environment awake after each response until that
/// invocation's profile upload has finished (bounded by the invocation's
/// deadline). A sampled invocation's response therefore goes out as fast as
/// an unsampled one's. With plain `lambda_runtime::run` profiling still works,
/// but the upload runs before the response is sent.
///
/// If the extension cannot register (for example outside Lambda), this logs
/// once and runs the plain runtime with inline uploads. If it stops later (an
/// Extensions API failure), this logs once and keeps serving, with inline
/// uploads from then on: the function never fails because of the extension.
///
/// **Shutdown.** With the extension registered, Lambda sends the runtime
/// SIGTERM before shutting the environment down and kills it about 500 ms
/// later. `run` then gives uploads still pending up to 300 ms to finish,
/// logs the keys of any it had to drop, and returns `Ok(())`, so `main`
/// returns and the process exits before the kill.
///
/// ```no_run
/// use lambda_runtime::{service_fn, Error, LambdaEvent};
/// use serde_json::Value;
/// use xrayprofile::xrayprofile;
///
/// #[xrayprofile(threshold = 655)]
/// async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
///     Ok(event.payload)
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), Error> {
///     xrayprofile::run(service_fn(handler)).await
/// }
/// ```
///
/// # Errors
/// What [`lambda_runtime::run`] returns: a Runtime API failure.
pub async fn run<A, F, R, B, S, D, E>(handler: F) -> Result<(), Error>
where
    F: Service<LambdaEvent<A>, Response = R>,
    F::Future: Future<Output = Result<R, F::Error>>,
    F::Error: Into<Diagnostic> + fmt::Debug,
    A: for<'de> Deserialize<'de>,
    R: IntoFunctionResponse<B, S>,
    B: Serialize,
    S: Stream<Item = Result<D, E>> + Unpin + Send + 'static,
    D: Into<bytes::Bytes> + Send,
    E: Into<Error> + Send + fmt::Debug,
{
    let processor = lambda_runtime::service_fn(|event: lambda_extension::LambdaEvent| async move {
        if let lambda_extension::NextEvent::Invoke(invoke) = event.next {
            let deadline = deadline::plausible(invoke.deadline_ms, SystemTime::now());
            deferred::wait_until_idle(&invoke.request_id, deadline).await;
        }
        Ok::<(), Error>(())
    });
    let registered = lambda_extension::Extension::new()
        .with_events(&["INVOKE"])
        .with_events_processor(processor)
        .with_extension_name("xrayprofile")
        .register()
        .await;
    let runtime = Runtime::new(handler).layer(lambda_runtime::layers::TracingLayer::new());
    match registered {
        Ok(extension) => {
            deferred::enable();
            // Installed now, so a SIGTERM from here on is ours to handle.
            let terminate = sigterm();
            let runtime = runtime.layer(ResponseSentLayer);
            tokio::select! {
                result = runtime.run() => result,
                () = keep_extension(extension.run()) => Ok(()),
                () = shut_down(terminate) => Ok(()),
            }
        }
        Err(err) => {
            tracing::warn!(
                error = %err,
                "the xrayprofile extension could not register, so profile uploads run before each response; check that AWS_LAMBDA_RUNTIME_API is the Lambda Runtime API"
            );
            runtime.run().await
        }
    }
}

/// Starts the Lambda runtime like [`lambda_runtime::run_concurrent`], for
/// Lambda Managed Instances: up to `AWS_LAMBDA_MAX_CONCURRENCY` invocations
/// at once in this process, each sampled one profiled on its own.
///
/// With `AWS_LAMBDA_MAX_CONCURRENCY` unset or 1 this is [`run`]. Above 1
/// the environment is never frozen between invocations, so no extension is
/// registered: each profile's upload starts once its invocation's response
/// is posted and runs in the background, never delaying a response;
/// uploads waiting at once are bounded (4 per concurrent invocation, and
/// 16 MiB), more are dropped and logged. On SIGTERM, uploads still pending
/// get up to 300 ms, as under [`run`]. The trace ID of each invocation
/// comes from its own context, never from `_X_AMZN_TRACE_ID` (which
/// `run_concurrent` does not set).
///
/// Requires the `concurrency` feature (which enables lambda_runtime's
/// `concurrency-tokio`).
///
/// ```no_run
/// use lambda_runtime::{service_fn, Error, LambdaEvent};
/// use serde_json::Value;
/// use xrayprofile::xrayprofile;
///
/// #[xrayprofile(threshold = 655)]
/// async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
///     Ok(event.payload)
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), Error> {
///     xrayprofile::run_concurrent(service_fn(handler)).await
/// }
/// ```
///
/// # Errors
/// What [`lambda_runtime::run_concurrent`] returns: a Runtime API failure.
#[cfg(feature = "concurrency")]
pub async fn run_concurrent<A, F, R, B, S, D, E>(handler: F) -> Result<(), Error>
where
    F: Service<LambdaEvent<A>, Response = R> + Clone + Send + 'static,
    F::Future: Future<Output = Result<R, F::Error>> + Send + 'static,
    F::Error: Into<Diagnostic> + fmt::Debug,
    A: for<'de> Deserialize<'de> + Send + 'static,
    R: IntoFunctionResponse<B, S> + Send + 'static,
    B: Serialize + Send + 'static,
    S: Stream<Item = Result<D, E>> + Unpin + Send + 'static,
    D: Into<bytes::Bytes> + Send + 'static,
    E: Into<Error> + Send + fmt::Debug + 'static,
{
    let concurrency = std::env::var("AWS_LAMBDA_MAX_CONCURRENCY")
        .ok()
        .and_then(|value| value.trim().parse::<usize>().ok())
        .unwrap_or(1);
    if concurrency <= 1 {
        return run(handler).await;
    }
    deferred::enable_concurrent(concurrency);
    let terminate = sigterm();
    let runtime = Runtime::new(handler)
        .layer(lambda_runtime::layers::TracingLayer::new())
        .layer(ResponseSentLayer);
    tokio::select! {
        result = runtime.run_concurrent() => result,
        () = shut_down(terminate) => Ok(()),
    }
}

/// What Lambda leaves a runtime with an internal extension between SIGTERM
/// and SIGKILL is 500 ms; the flush takes at most this, leaving time to log
/// and exit.
const SHUTDOWN_FLUSH: Duration = Duration::from_millis(300);

/// Runs the extension; if it stops, the function goes on without it.
///
/// The extension's loop ends only on an Extensions API failure. That must
/// not stop the runtime (our extension would take the function down), so
/// uploads go back to running before the response, which needs no
/// extension, and this future never completes.
async fn keep_extension(extension: impl Future<Output = Result<(), Error>>) {
    let err = match extension.await {
        Ok(()) => "its event loop ended".into(),
        Err(err) => err.to_string(),
    };
    deferred::disable();
    tracing::warn!(
        error = %err,
        "the xrayprofile extension stopped, so profile uploads now run before each response and Lambda may wait for the extension until the invocation times out; check the Lambda Extensions API and report this error"
    );
    std::future::pending::<()>().await;
}

/// Listens for SIGTERM; `None` (logged) when the signal cannot be handled,
/// and then Lambda's SIGTERM ends the process as it would without us.
fn sigterm() -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => Some(signal),
        Err(err) => {
            tracing::warn!(error = %err, "SIGTERM is not handled, so profile uploads pending at shutdown are lost without a log line; build the tokio runtime with `enable_all()`");
            None
        }
    }
}

/// Completes after SIGTERM, once pending uploads are stored or
/// [`SHUTDOWN_FLUSH`] has passed; never without a signal. Lambda sends
/// SIGTERM to the runtime at shutdown because our extension is registered,
/// and kills the process soon after, so `run` then returns and lets the
/// process exit on its own terms.
async fn shut_down(terminate: Option<tokio::signal::unix::Signal>) {
    let Some(mut terminate) = terminate else {
        return std::future::pending().await;
    };
    if terminate.recv().await.is_none() {
        return std::future::pending().await;
    }
    let dropped = deferred::flush(SHUTDOWN_FLUSH).await;
    if dropped.is_empty() {
        tracing::debug!("SIGTERM: no profile upload pending; shutting down");
    } else {
        tracing::warn!(
            keys = ?dropped,
            "SIGTERM: {} profile(s) dropped, their uploads did not finish in the {} ms shutdown window; check why uploads to S3 are slow",
            dropped.len(),
            SHUTDOWN_FLUSH.as_millis(),
        );
    }
}

/// Wraps the runtime's client service, whose future ends once the response
/// (or error) has been posted to the Runtime API: that is when the
/// invocation's deferred uploads may start.
#[derive(Clone, Copy, Debug)]
struct ResponseSentLayer;

impl<S> Layer<S> for ResponseSentLayer {
    type Service = ResponseSent<S>;

    fn layer(&self, inner: S) -> ResponseSent<S> {
        ResponseSent { inner }
    }
}

#[derive(Clone, Debug)]
struct ResponseSent<S> {
    inner: S,
}

impl<S> Service<LambdaInvocation> for ResponseSent<S>
where
    S: Service<LambdaInvocation, Response = (), Error = Error>,
{
    type Response = ();
    type Error = Error;
    type Future = ResponseSentFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, invocation: LambdaInvocation) -> Self::Future {
        deferred::invocation_started(&invocation.context.request_id);
        let answered = Answered(invocation.context.request_id.clone());
        ResponseSentFuture {
            response: self.inner.call(invocation),
            answered: Some(answered),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner response future, then [`Answered`] dropped.
    struct ResponseSentFuture<F> {
        #[pin]
        response: F,
        answered: Option<Answered>,
    }
}

impl<F: Future> Future for ResponseSentFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        let output = std::task::ready!(this.response.poll(cx));
        drop(this.answered.take());
        Poll::Ready(output)
    }
}

/// Marks the invocation answered when dropped, so a failed or cancelled
/// response still releases the extension.
struct Answered(String);

impl Drop for Answered {
    fn drop(&mut self) {
        deferred::response_sent(&self.0);
    }
}
