//! The per-invocation wrapper the macro calls: decide → start the profiler →
//! await the handler's body → stop → store the profile → return the body's
//! output, unchanged, on every path.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, SystemTime};

use lambda_runtime::{Context, LambdaEvent};

use crate::config::{Defaults, Overrides, Settings};
use crate::pprof_file::{self, Identity};
use crate::profiler::{ActiveProfile, Detail, ProfileError};
use crate::sampling::{self, Decision};
use crate::trace::{self, TraceRoot};
use crate::upload::{self, Destination, ObjectKey, RequestId};

/// The longest an upload may take, however far away the deadline is.
const MAX_UPLOAD_TIME: Duration = Duration::from_secs(5);
/// Left between the end of an upload and the invocation deadline, so the
/// handler's response still reaches Lambda in time.
const DEADLINE_MARGIN: Duration = Duration::from_millis(300);

/// A handler argument that carries the Lambda invocation: its request ID,
/// deadline, function ARN and X-Ray trace header.
///
/// `#[xrayprofile]` reads the invocation from the handler's first argument
/// through this trait.
///
/// ```
/// use lambda_runtime::{Context, LambdaEvent};
/// use xrayprofile::Invocation;
///
/// let event = LambdaEvent::new(serde_json::json!({}), Context::default());
/// assert_eq!(event.lambda_context().request_id, "");
/// ```
#[diagnostic::on_unimplemented(
    message = "`#[xrayprofile]` cannot find the Lambda invocation in `{Self}`",
    label = "the handler's first argument must carry the invocation",
    note = "make the first argument a `lambda_runtime::LambdaEvent<T>` or a `lambda_runtime::Context`"
)]
pub trait Invocation {
    /// The invocation's context, as lambda_runtime received it.
    fn lambda_context(&self) -> &Context;
}

impl<T> Invocation for LambdaEvent<T> {
    fn lambda_context(&self) -> &Context {
        &self.context
    }
}

impl Invocation for Context {
    fn lambda_context(&self) -> &Context {
        self
    }
}

impl<T: Invocation + ?Sized> Invocation for &T {
    fn lambda_context(&self) -> &Context {
        (**self).lambda_context()
    }
}

/// One annotated handler: the values its attribute wrote. The macro puts one
/// in a `static` per handler.
#[doc(hidden)]
#[derive(Debug)]
pub struct Site {
    defaults: Defaults,
}

impl Site {
    /// The attribute's values; `None` where it was silent.
    pub const fn new(
        threshold: Option<u16>,
        bucket: Option<&'static str>,
        prefix: Option<&'static str>,
    ) -> Site {
        Site {
            defaults: Defaults {
                threshold,
                bucket,
                prefix,
            },
        }
    }
}

/// What was decided for one invocation before its body runs.
#[doc(hidden)]
#[derive(Debug)]
#[must_use = "call `.run(body)` so the handler's body runs"]
pub struct Wrapper {
    plan: Option<Box<Plan>>,
}

/// Everything a sampled invocation needs after its body returns, copied out of
/// the context so the body can take the event by value.
#[derive(Debug)]
struct Plan {
    root: TraceRoot,
    request_id: String,
    key: ObjectKey,
    function_name: String,
    function_version: String,
    deadline: Option<SystemTime>,
    destination: Destination<'static>,
    detail: Detail,
}

impl Wrapper {
    /// Decides whether this invocation is profiled. Allocates nothing unless it is.
    pub fn begin(site: &'static Site, invocation: &impl Invocation) -> Wrapper {
        let ctx = invocation.lambda_context();
        let settings = Overrides::get().settings(&site.defaults);
        Wrapper {
            plan: plan(ctx, settings).map(Box::new),
        }
    }

    /// Runs `body`, profiling it if this invocation was sampled, and returns
    /// its output unchanged.
    pub async fn run<F, T, E>(self, body: F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
    {
        let Some(plan) = self.plan else {
            return body.await;
        };
        let profile = match ActiveProfile::start() {
            Ok(profile) => profile,
            Err(err) => {
                let hint = match err {
                    ProfileError::Busy => {
                        "overlapping invocations are not profiled; this one runs unprofiled"
                    }
                    ProfileError::Sampler(_) | ProfileError::Encode(_) => {
                        "this invocation runs unprofiled; profiling needs SIGPROF and setitimer"
                    }
                };
                tracing::warn!(request_id = %plan.request_id, trace_root = %plan.root, error = %err, "profile not started: {hint}");
                return body.await;
            }
        };
        let output = body.await;
        let outcome = if output.is_ok() { "ok" } else { "error" };
        // Boxed: the upload's future (aws-sdk-s3's PutObject) is ~12 KiB, and
        // inline it would make every invocation's future, sampled or not,
        // that large (P1 in docs/performance.md). Only sampled invocations
        // get here, and they allocate anyway.
        Box::pin(plan.store(profile, outcome)).await;
        output
    }
}

fn plan(ctx: &Context, settings: Settings<'static>) -> Option<Plan> {
    if !settings.enabled {
        tracing::debug!(request_id = %ctx.request_id, "not profiled: XRAYPROFILE_ENABLED is off");
        return None;
    }
    // Only the context: lambda_runtime sets `_X_AMZN_TRACE_ID` from this same
    // value (and removes it when there is none), so reading the variable
    // would cost an env lock and `getenv` on every untraced invocation for
    // nothing (P1 in docs/performance.md).
    let Some(header) = ctx.xray_trace_id.as_deref() else {
        tracing::debug!(request_id = %ctx.request_id, "not profiled: the invocation has no X-Ray trace header");
        return None;
    };
    let root = match TraceRoot::from_header(header) {
        Ok(root) => root,
        Err(err) => {
            tracing::debug!(request_id = %ctx.request_id, header = ?trace::truncate_for_log(header), "not profiled: {err}");
            return None;
        }
    };
    if sampling::decide(&root, settings.threshold) == Decision::Skip {
        tracing::debug!(request_id = %ctx.request_id, trace_root = %root, threshold = settings.threshold.0, "not profiled: trace key above threshold");
        return None;
    }
    let Some(request_id) = RequestId::parse(&ctx.request_id) else {
        tracing::warn!(request_id = ?trace::truncate_for_log(&ctx.request_id), "not profiled: the request ID is not letters, digits and `-`, so it cannot name a profile object");
        return None;
    };
    let destination = destination(ctx, &settings)?;
    tracing::debug!(request_id = %ctx.request_id, trace_root = %root, threshold = settings.threshold.0, "profiling this invocation");
    Some(Plan {
        root,
        request_id: request_id.as_str().to_owned(),
        key: ObjectKey::new(settings.prefix, &root, &request_id),
        function_name: ctx.env_config.function_name.clone(),
        function_version: ctx.env_config.version.clone(),
        deadline: (ctx.deadline > 0).then(|| ctx.deadline()),
        destination,
        detail: if settings.symbolize {
            Detail::Names
        } else {
            Detail::Addresses
        },
    })
}

fn destination(ctx: &Context, settings: &Settings<'static>) -> Option<Destination<'static>> {
    if let Some(dir) = settings.output_dir {
        return Some(Destination::Dir(dir));
    }
    let Some(account) = upload::account_id(&ctx.invoked_function_arn) else {
        tracing::warn!(
            function_arn = ?trace::truncate_for_log(&ctx.invoked_function_arn),
            "not profiled: the function ARN has no account ID, so the bucket owner cannot be checked; for local runs set XRAYPROFILE_OUTPUT_DIR"
        );
        return None;
    };
    let bucket = match (settings.bucket, settings.region) {
        (Some(bucket), _) => bucket.to_owned(),
        (None, Some(region)) => upload::default_bucket(account, region),
        (None, None) => {
            tracing::warn!(
                "not profiled: no bucket is configured and AWS_REGION is unset, so the default bucket name cannot be built; set XRAYPROFILE_S3_BUCKET"
            );
            return None;
        }
    };
    // The ARN lives in the per-invocation context, the destination outlives
    // the borrow; the account ID is 12 digits, so leaking it once per distinct
    // account (one per process in practice) is bounded.
    let expected_owner: &'static str = owner_str(account);
    Some(Destination::S3 {
        bucket,
        expected_owner,
        force_path_style: settings.force_path_style,
    })
}

/// Interns the account ID: a function runs in one account, so this holds one entry.
fn owner_str(account: &str) -> &'static str {
    static OWNERS: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let Ok(mut owners) = OWNERS.lock() else {
        return "";
    };
    if let Some(known) = owners.iter().find(|known| **known == account) {
        return known;
    }
    let leaked: &'static str = Box::leak(account.to_owned().into_boxed_str());
    owners.push(leaked);
    leaked
}

impl Plan {
    async fn store(&self, profile: ActiveProfile, outcome: &'static str) {
        let identity = Identity {
            trace_id: self.root.as_str(),
            request_id: &self.request_id,
            function_name: &self.function_name,
            function_version: &self.function_version,
            outcome,
        };
        // pprof-rs runs symbolization code we do not control; a panic there
        // must not become the handler's failure.
        let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let finished = profile.finish_with(self.detail)?;
            let file =
                pprof_file::encode(finished.profile, &identity).map_err(ProfileError::Encode)?;
            Ok::<_, ProfileError>((file, finished.duration))
        }));
        let (file, duration) = match encoded {
            Ok(Ok(done)) => done,
            Ok(Err(err)) => {
                tracing::warn!(request_id = %self.request_id, error = %err, "profile dropped, handler result unaffected");
                return;
            }
            Err(_) => {
                tracing::warn!(request_id = %self.request_id, "profile dropped: the profiler panicked while building the report; handler result unaffected");
                return;
            }
        };
        let key = &self.key;
        let budget = self.upload_budget();
        if budget.is_zero() {
            tracing::warn!(request_id = %self.request_id, key = %key, "profile dropped: the invocation deadline is too close to upload it; raise the function timeout");
            return;
        }
        let metadata = HashMap::from([
            ("trace-id", self.root.as_str().to_owned()),
            ("request-id", self.request_id.clone()),
            ("function-name", self.function_name.clone()),
            ("function-version", self.function_version.clone()),
            ("duration-ms", duration.as_millis().to_string()),
            ("samples", file.samples.to_string()),
            ("outcome", outcome.to_owned()),
        ]);
        let bytes = file.gzipped.len();
        match upload::store(&self.destination, key, file.gzipped, metadata, budget).await {
            Ok(()) => tracing::info!(
                destination = %self.destination,
                key = %key,
                bytes,
                samples = file.samples,
                duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                "profile written"
            ),
            Err(err) => tracing::warn!(
                destination = %self.destination,
                key = %key,
                error = %err,
                "profile upload failed, profile dropped, handler result unaffected"
            ),
        }
    }

    fn upload_budget(&self) -> Duration {
        let Some(deadline) = self.deadline else {
            return MAX_UPLOAD_TIME;
        };
        let remaining = deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        remaining
            .saturating_sub(DEADLINE_MARGIN)
            .min(MAX_UPLOAD_TIME)
    }
}
