//! [`ProfileLayer`]: the attribute's profiling as a `tower::Layer` on
//! lambda_runtime's [`Runtime`](lambda_runtime::Runtime), for functions that
//! configure the runtime in code instead of annotating the handler.
//!
//! `Runtime::layer` wraps the runtime's client service, whose future runs the
//! handler *and* posts its answer to the Runtime API; the runtime asks for
//! the next event only once that future ends (lambda_runtime 1.5,
//! `runtime.rs: process_invocation`). So the wrapper profiles that future
//! and uploads after it has ended: after the response is out, and before
//! Lambda can freeze the environment. No extension is needed.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use lambda_runtime::tower::{Layer, Service};
use lambda_runtime::{Error, LambdaInvocation};

use crate::config::{self, Mode, Site};
use crate::invocation::Wrapper;

/// Profiles a sampled share of invocations, configured like
/// `#[xrayprofile(...)]`, as a layer on lambda_runtime's `Runtime`.
///
/// ```no_run
/// use lambda_runtime::{service_fn, Error, LambdaEvent, Runtime};
/// use serde_json::Value;
/// use xrayprofile::ProfileLayer;
///
/// async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
///     Ok(event.payload)
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), Error> {
///     Runtime::new(service_fn(handler))
///         .layer(ProfileLayer::new().threshold(655).bucket("my-profiles"))
///         .run()
///         .await
/// }
/// ```
///
/// The settings are the attribute's arguments, with the same defaults, and
/// the same `XRAYPROFILE_*` environment variables override them (see the
/// [crate documentation](crate)). A later call to the same setting replaces
/// the earlier one (`sample_rate` and `threshold` set the same thing).
///
/// **Invalid values** (a bucket name S3 would refuse, a prefix that could
/// not start a key, a `sample_rate` outside `(0, 1]`) are ignored, so the
/// default or the previous value applies, and each is logged once as a
/// warning with its fix when the layer is applied to the runtime. A mistake
/// in profiling settings never stops the function from starting.
///
/// **When the upload happens.** The layer sees the whole invocation: the
/// handler, then the runtime posting its response. A sampled invocation's
/// profile covers both, and its upload starts once the response has been
/// posted, before the runtime asks Lambda for the next event. The response is
/// not delayed; the environment stays awake (and billed) until the upload is
/// done or abandoned, within the same budget as the attribute (at most 5 s,
/// ending 300 ms before the deadline).
///
/// **Outcome.** The layer sees what the runtime did with the answer, not the
/// handler's `Result`: a handler error that was reported to Lambda records
/// `outcome=ok`; `outcome=error` means the answer could not be posted. Use
/// the attribute when profiles must be told apart by the handler's result.
///
/// Give it an unannotated handler: with `#[xrayprofile]` too, each sampled
/// invocation would start two profiles, and the second is refused (logged as
/// an overlap).
///
/// The runtime's invocation future must be `Send + 'static`, as it is for
/// `service_fn` handlers whose futures are `Send` (what `run_concurrent`
/// requires too): a sampled invocation's future is boxed.
///
/// Each application of the layer (`Runtime::layer` calls [`Layer::layer`]
/// once) keeps its settings for the life of the process, a few dozen bytes:
/// the profiling wrapper reads them from `'static` memory, as the
/// attribute's settings live in a `static`.
#[derive(Clone, Default)]
pub struct ProfileLayer {
    threshold: Option<u16>,
    bucket: Option<String>,
    prefix: Option<String>,
    max_per_minute: Option<u32>,
    mode: Option<Mode>,
    symbolize: Option<bool>,
    /// Values ignored by the builder, logged when the layer is applied.
    problems: Vec<String>,
}

impl fmt::Debug for ProfileLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProfileLayer")
            .field("threshold", &self.threshold)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("max_per_minute", &self.max_per_minute)
            .finish_non_exhaustive()
    }
}

impl ProfileLayer {
    /// A layer with the attribute's defaults: threshold 0 (1 in 65,536), the
    /// default bucket `xrayprofile-{account id}-{AWS_REGION}`, no prefix, at
    /// most 10 profiles a minute.
    pub fn new() -> ProfileLayer {
        ProfileLayer::default()
    }

    /// Profiles invocations whose trace root's last 4 hex digits are `<=
    /// threshold`: 655 ≈ 1 %, 6553 ≈ 10 %, 65535 = all.
    #[must_use]
    pub fn threshold(mut self, threshold: u16) -> ProfileLayer {
        self.threshold = Some(threshold);
        self
    }

    /// The share of invocations to profile, `0.0 < rate <= 1.0`; sets the
    /// threshold to `ceil(rate × 65536) − 1` (0.01 → 655). A rate outside
    /// that range is ignored and logged.
    #[must_use]
    pub fn sample_rate(mut self, rate: f64) -> ProfileLayer {
        match config::threshold_from_rate(rate) {
            Some(threshold) => self.threshold = Some(threshold),
            None => self.problems.push(format!(
                "sample_rate {rate} is ignored: it must be greater than 0.0 and at most 1.0; 0.01 profiles about 1 % of invocations"
            )),
        }
        self
    }

    /// The S3 bucket profiles are written to. A name S3 would refuse is
    /// ignored and logged.
    #[must_use]
    pub fn bucket(mut self, bucket: impl Into<String>) -> ProfileLayer {
        let bucket = bucket.into();
        match config::bucket_problem(&bucket) {
            None => self.bucket = Some(bucket),
            Some(problem) => self.problems.push(format!(
                "bucket {:?} is ignored: an S3 bucket name {problem}",
                crate::untrusted::truncate_for_log(&bucket)
            )),
        }
        self
    }

    /// The key prefix; a `/` is added if missing. A prefix that could not
    /// start an object key is ignored and logged.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> ProfileLayer {
        let prefix = prefix.into();
        match config::prefix_problem(&prefix) {
            None => self.prefix = Some(prefix),
            Some(problem) => self.problems.push(format!(
                "prefix {:?} is ignored: it {problem}; use a key prefix such as `profiles/`",
                crate::untrusted::truncate_for_log(&prefix)
            )),
        }
        self
    }

    /// The most profiles per minute per execution environment, as a token
    /// bucket (bursts of `max`); `0` removes the cap.
    #[must_use]
    pub fn max_per_minute(mut self, max: u32) -> ProfileLayer {
        self.max_per_minute = Some(max);
        self
    }

    /// What the profile measures: [`Mode::Wall`] (the default: where the
    /// time went, awaits included) or [`Mode::Cpu`].
    #[must_use]
    pub fn mode(mut self, mode: Mode) -> ProfileLayer {
        self.mode = Some(mode);
        self
    }

    /// `false` writes address-level profiles (mappings and GNU build IDs)
    /// for stripped binaries, to be symbolized later from the unstripped one.
    #[must_use]
    pub fn symbolize(mut self, symbolize: bool) -> ProfileLayer {
        self.symbolize = Some(symbolize);
        self
    }

    /// The settings as the wrapper reads them, in memory that lives as long
    /// as the process (see the type's documentation).
    fn site(&self) -> &'static Site {
        let leak = |s: &Option<String>| -> Option<&'static str> {
            s.clone().map(|s| &*Box::leak(s.into_boxed_str()))
        };
        Box::leak(Box::new(Site {
            threshold: self.threshold,
            bucket: leak(&self.bucket),
            prefix: leak(&self.prefix),
            max_per_minute: self.max_per_minute,
            mode: self.mode,
            symbolize: self.symbolize,
        }))
    }
}

impl<S> Layer<S> for ProfileLayer {
    type Service = Profiled<S>;

    fn layer(&self, inner: S) -> Profiled<S> {
        for problem in &self.problems {
            tracing::warn!(
                "xrayprofile::ProfileLayer: {problem}; the default or the previous value applies"
            );
        }
        Profiled {
            inner,
            site: self.site(),
        }
    }
}

/// The runtime's service wrapped by [`ProfileLayer`].
#[derive(Clone)]
pub struct Profiled<S> {
    inner: S,
    site: &'static Site,
}

impl<S> fmt::Debug for Profiled<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profiled")
            .field("site", self.site)
            .finish_non_exhaustive()
    }
}

impl<S> Service<LambdaInvocation> for Profiled<S>
where
    S: Service<LambdaInvocation, Response = (), Error = Error>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = Error;
    type Future = ProfiledFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, invocation: LambdaInvocation) -> Self::Future {
        let wrapper = Wrapper::begin(self.site, &invocation.context);
        let answer = self.inner.call(invocation);
        // Only a sampled invocation pays for a box: `Wrapper::run`'s future
        // cannot be named in `Self::Future`.
        let state = if wrapper.is_sampled() {
            State::Sampled {
                run: Box::pin(wrapper.run(answer)),
            }
        } else {
            State::Unsampled { answer }
        };
        ProfiledFuture { state }
    }
}

pin_project_lite::pin_project! {
    /// The future of one invocation under [`ProfileLayer`]: the runtime's own
    /// future, or (sampled) that future profiled and followed by the upload.
    pub struct ProfiledFuture<F> {
        #[pin]
        state: State<F>,
    }
}

type Sampled = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Unsampled { #[pin] answer: F },
        Sampled { run: Sampled },
    }
}

impl<F> fmt::Debug for ProfiledFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sampled = matches!(self.state, State::Sampled { .. });
        f.debug_struct("ProfiledFuture")
            .field("sampled", &sampled)
            .finish()
    }
}

impl<F: Future<Output = Result<(), Error>>> Future for ProfiledFuture<F> {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Unsampled { answer } => answer.poll(cx),
            StateProj::Sampled { run } => run.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_settings_are_kept() {
        let layer = ProfileLayer::new()
            .sample_rate(0.01)
            .bucket("my-profiles")
            .prefix("p/")
            .max_per_minute(0);
        assert_eq!(layer.threshold, Some(655));
        assert_eq!(layer.bucket.as_deref(), Some("my-profiles"));
        assert_eq!(layer.prefix.as_deref(), Some("p/"));
        assert_eq!(layer.max_per_minute, Some(0));
        assert!(layer.problems.is_empty(), "{:?}", layer.problems);
    }

    #[test]
    fn invalid_settings_are_ignored_and_reported() {
        let layer = ProfileLayer::new()
            .threshold(6553)
            .bucket("ok-bucket")
            .sample_rate(1.5)
            .bucket("Not_A_Bucket")
            .prefix("/abs");
        assert_eq!(layer.threshold, Some(6553), "the earlier value stays");
        assert_eq!(layer.bucket.as_deref(), Some("ok-bucket"));
        assert_eq!(layer.prefix, None);
        assert_eq!(layer.problems.len(), 3, "{:?}", layer.problems);
        assert!(layer.problems[0].contains("sample_rate"));
        assert!(layer.problems[1].contains("Not_A_Bucket"));
        assert!(layer.problems[2].contains("starts with `/`"));
    }

    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../xrayprofile-rules/tests/same_verdict/table.rs"
    ));

    /// The environment (`XRAYPROFILE_*`) and this layer accept exactly the
    /// values the attribute accepts at compile time (the same table is fed
    /// to `xrayprofile-macros`' `args.rs` tests).
    #[test]
    fn the_environment_and_the_layer_give_the_attributes_verdicts() {
        for &(argument, value, accepted) in SAME_VERDICT {
            let env = |name: &'static str| {
                let (overrides, problems) = config::Overrides::from_env(|var| {
                    (var == name).then(|| std::ffi::OsString::from(value))
                });
                assert_eq!(problems.is_empty(), accepted, "{name}={value:?}");
                overrides
            };
            let layer = ProfileLayer::new();
            let (by_env, by_layer) = match argument {
                "bucket" => (
                    env(config::ENV_BUCKET).bucket.is_some(),
                    layer.bucket(value).bucket.is_some(),
                ),
                "prefix" => (
                    env(config::ENV_PREFIX).prefix.is_some(),
                    layer.prefix(value).prefix.is_some(),
                ),
                // The layer takes a `Mode`, not a name.
                "mode" => (env(config::ENV_MODE).mode.is_some(), accepted),
                // There is no environment variable for a rate.
                "sample_rate" => {
                    let rate: f64 = value.parse().unwrap();
                    (accepted, layer.sample_rate(rate).threshold.is_some())
                }
                other => panic!("no runtime check for `{other}` in the table"),
            };
            assert_eq!(by_env, accepted, "{argument} = {value:?} (environment)");
            assert_eq!(by_layer, accepted, "{argument} = {value:?} (layer)");
        }
    }
}
