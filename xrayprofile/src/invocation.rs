//! The per-invocation flow the macro calls: decide → start the profiler →
//! await the handler's body → stop → hand the profile to its upload →
//! return the body's output, unchanged, on every path.
//!
//! Each step it names lives in its own module: the settings ([`crate::config`]),
//! the decision ([`crate::sampling`]), the object key ([`crate::object_key`]),
//! the destination ([`crate::destination`]), the profile ([`crate::profiler`],
//! [`crate::wall`], [`crate::report`]) and its upload ([`crate::upload`],
//! [`crate::deferred`]).

use std::future::Future;
use std::time::SystemTime;

use lambda_runtime::Context;

use crate::config::{Mode, Overrides, Settings, Site};
use crate::deferred;
use crate::destination::{self, Destination};
use crate::handler::{HandlerOutput, Invocation};
use crate::limit;
use crate::object_key::{ObjectKey, RequestId};
use crate::pprof_file::Identity;
use crate::profiler::{self, ActiveProfile, StoppedProfile};
use crate::report;
use crate::sampling::{self, Decision};
use crate::symbolize::Detail;
use crate::trace::TraceRoot;
use crate::untrusted;
use crate::upload::{self, PendingUpload, UploadJob};
use crate::wall::{Observed, Recorder, Recording};

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
    mode: Mode,
}

impl Wrapper {
    /// Decides whether this invocation is profiled. Allocates nothing unless it is.
    pub fn begin(site: &'static Site, invocation: &impl Invocation) -> Wrapper {
        let Some(ctx) = invocation.lambda_context() else {
            tracing::debug!("not profiled: the handler's first argument carries no Lambda context");
            return Wrapper { plan: None };
        };
        let settings = Overrides::get().settings(site);
        Wrapper {
            plan: plan(ctx, settings).map(Box::new),
        }
    }

    /// Whether this invocation will be profiled.
    pub fn is_sampled(&self) -> bool {
        self.plan.is_some()
    }

    /// Runs `body`, profiling it if this invocation was sampled, and returns
    /// its output unchanged.
    pub async fn run<F>(self, body: F) -> F::Output
    where
        F: Future,
        F::Output: HandlerOutput,
    {
        match self.plan {
            None => body.await,
            // Boxed: the sampled path's state (the recorder, the upload) would
            // otherwise make every invocation's future that large (P1 in
            // docs/performance.md).
            Some(plan) => Box::pin(profiled(plan, body)).await,
        }
    }
}

/// A sampled invocation: profile the body, hand the profile to the upload,
/// return the body's output (or resume its panic).
async fn profiled<F>(plan: Box<Plan>, body: F) -> F::Output
where
    F: Future,
    F::Output: HandlerOutput,
{
    let profile = match ActiveProfile::start() {
        Ok(profile) => profile,
        Err(err) => {
            tracing::warn!(request_id = %plan.request_id, trace_root = %plan.root, error = %err, "profile not started: this invocation runs unprofiled; profiling needs SIGPROF, mmap and one extra thread (the sampler's ticker)");
            return body.await;
        }
    };
    let invocation = profile.invocation();
    let wall = plan.mode == Mode::Wall;
    let mut session = Session {
        plan: Some(plan),
        profile: Some(profile),
        recorder: wall.then(Recorder::default),
    };
    // A panic in the body is caught here and resumed below, after its
    // profile (outcome `panic`) has been handed over.
    let output = Observed::tagged(body, session.recorder.as_mut(), invocation).await;
    let outcome = match &output {
        Ok(output) if output.is_error() => "error",
        Ok(_) => "ok",
        Err(_) => "panic",
    };
    if let Some(upload) = session.finish(outcome) {
        // Under `xrayprofile::run` building and uploading wait for the
        // response to go out; otherwise they run here, before the response.
        if let Some(upload) = deferred::defer(upload) {
            upload.run_boxed().await;
        }
    }
    match output {
        Ok(output) => output,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A sampled invocation's profile in progress. If the invocation's future
/// is dropped before the body ends (a timeout around the handler, a
/// cancelled task), `Drop` still writes what was recorded, as `cancelled`.
struct Session {
    plan: Option<Box<Plan>>,
    profile: Option<ActiveProfile>,
    recorder: Option<Recorder>,
}

impl Session {
    /// Stops the sampler and the recorder now; building the profile waits
    /// in the returned upload.
    fn finish(&mut self, outcome: &'static str) -> Option<PendingUpload> {
        let plan = self.plan.take()?;
        let profile = self.profile.take()?;
        let recording = self.recorder.take().map(Recorder::finish);
        plan.stop(profile, recording, outcome)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Never build a profile while a panic unwinds through here (a second
        // panic would abort); dropping the profile stops the sampler.
        if self.plan.is_none() || std::thread::panicking() {
            return;
        }
        let Some(job) = self.finish("cancelled") else {
            return;
        };
        let Some(job) = deferred::defer(job) else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(job.run())),
            Err(_) => tracing::warn!(
                request_id = %job.request_id,
                key = %job.key,
                "profile dropped: the invocation was cancelled outside a tokio runtime, so its upload cannot start"
            ),
        }
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
    let Some(header) = ctx.xray_trace_id.as_deref().filter(|h| !h.is_empty()) else {
        // Said once at info: without trace headers nothing is ever profiled,
        // which is what SAM's `sam local invoke` (the Runtime Interface
        // Emulator) gives unless the request carries one.
        static TOLD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if TOLD.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::debug!(request_id = %ctx.request_id, "not profiled: the invocation has no X-Ray trace header");
        } else {
            tracing::info!(request_id = %ctx.request_id, "not profiled: the invocation has no X-Ray trace header; turn on active tracing for the function, or when invoking locally through the Runtime Interface Emulator (sam local) send an `X-Amzn-Trace-Id: Root=1-...` header (logged once; later invocations at debug)");
        }
        return None;
    };
    let root = match TraceRoot::from_header(header) {
        Ok(root) => root,
        Err(err) => {
            tracing::debug!(request_id = %ctx.request_id, header = ?untrusted::truncate_for_log(header), "not profiled: {err}");
            return None;
        }
    };
    if sampling::decide(&root, settings.threshold) == Decision::Skip {
        tracing::debug!(request_id = %ctx.request_id, trace_root = %root, threshold = settings.threshold.0, "not profiled: trace key above threshold");
        return None;
    }
    let Some(request_id) = RequestId::parse(&ctx.request_id) else {
        tracing::warn!(request_id = ?untrusted::truncate_for_log(&ctx.request_id), "not profiled: the request ID is not letters, digits and `-`, so it cannot name a profile object");
        return None;
    };
    let destination = destination::resolve(ctx, &settings)?;
    // Last, so that an invocation refused for another reason takes no token.
    if let Some(max_per_minute) = settings.max_per_minute
        && !limit::admit(max_per_minute, request_id.as_str())
    {
        return None;
    }
    tracing::debug!(request_id = %ctx.request_id, trace_root = %root, threshold = settings.threshold.0, "profiling this invocation");
    Some(Plan {
        root,
        request_id: request_id.as_str().to_owned(),
        key: ObjectKey::new(settings.prefix, &root, &request_id),
        function_name: ctx.env_config.function_name.clone(),
        function_version: ctx.env_config.version.clone(),
        deadline: crate::deadline::plausible(ctx.deadline, SystemTime::now()),
        destination,
        detail: if settings.symbolize {
            Detail::Names
        } else {
            Detail::Addresses
        },
        mode: settings.mode,
    })
}

impl Plan {
    /// Stops the profile and returns its upload, which builds it when it
    /// starts; `None` (logged) when there is no time left to store it.
    fn stop(
        self,
        profile: ActiveProfile,
        recording: Option<Recording>,
        outcome: &'static str,
    ) -> Option<PendingUpload> {
        // Building the profile (symbolizing) takes CPU time too; when the
        // deadline is already within the margin, stop the sampler and answer.
        // Not on Lambda Managed Instances: there a timed-out invocation is
        // not stopped, the environment runs on, and the build and upload
        // come after the response anyway.
        if !deferred::never_frozen() && upload::budget(self.deadline).is_zero() {
            drop(profile);
            tracing::warn!(request_id = %self.request_id, key = %self.key, "profile dropped: the invocation deadline is too close to build and upload it; raise the function timeout");
            return None;
        }
        let stopped = profile.stop();
        let bytes = stopped
            .memory_estimate()
            .saturating_add(recording.as_ref().map_or(0, Recording::memory_estimate));
        let (request_id, key) = (self.request_id.clone(), self.key.clone());
        let build =
            move || profiler::as_profiler_work(|| self.build(stopped, recording.as_ref(), outcome));
        Some(PendingUpload::new(request_id, key, bytes, Box::new(build)))
    }

    /// Builds the profile and its upload job; `None` (logged) if building
    /// it failed.
    fn build(
        self,
        stopped: StoppedProfile,
        recording: Option<&Recording>,
        outcome: &'static str,
    ) -> Option<UploadJob> {
        let identity = Identity {
            trace_id: self.root.as_str(),
            request_id: &self.request_id,
            function_name: &self.function_name,
            function_version: &self.function_version,
            outcome,
        };
        let (file, duration) = report::build_file(stopped, self.detail, recording, &identity)?;
        let metadata = identity.metadata(duration, file.samples);
        Some(UploadJob {
            request_id: self.request_id,
            destination: self.destination,
            key: self.key,
            samples: file.samples,
            body: file.gzipped,
            metadata,
            duration,
            // On Lambda Managed Instances the environment runs on after the
            // deadline, and the upload goes after the response: only its
            // own time limit applies.
            deadline: self.deadline.filter(|_| !deferred::never_frozen()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::Threshold;
    use proptest::prelude::*;

    /// Every invocation is sampled, so only validation can keep a plan out.
    fn settings() -> Settings<'static> {
        Settings {
            enabled: true,
            threshold: Threshold(u16::MAX),
            bucket: Some("fuzz-bucket"),
            prefix: "profiles",
            output_dir: None,
            force_path_style: false,
            max_per_minute: None,
            symbolize: true,
            mode: Mode::Wall,
            region: Some("us-east-1"),
        }
    }

    fn context(header: Option<String>, request_id: String, arn: String) -> Context {
        let mut ctx = Context::default();
        ctx.xray_trace_id = header;
        ctx.request_id = request_id;
        ctx.invoked_function_arn = arn;
        ctx
    }

    fn header() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "Root=1-[0-9a-fA-F]{8}-[0-9a-fA-F]{24}(;Parent=[0-9a-f]{16})?",
            "Root=1-[0-9a-fA-F./\\\\-]{8}-[0-9a-fA-F./\\x00\\n-]{24}",
            "(Root=[^;]{0,40};){1,4}",
        ]
    }

    fn request_id() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            any::<String>(),
            "[./\\\\A-Za-z0-9\\x00\\n-]{0,140}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3_000))]

        /// The object key of a planned profile is made only of a root that
        /// validates and a request ID of `[A-Za-z0-9-]`, whatever the
        /// invocation carried.
        #[test]
        fn a_planned_key_is_built_only_from_validated_parts(
            header in header(),
            id in request_id(),
        ) {
            let arn = "arn:aws:lambda:us-east-1:123456789012:function:f".to_owned();
            let ctx = context(Some(header.clone()), id.clone(), arn);
            let planned = plan(&ctx, settings());
            let root = TraceRoot::from_header(&header);
            let id_ok = RequestId::parse(&id).is_some();
            prop_assert_eq!(planned.is_some(), root.is_ok() && id_ok);
            if let Some(planned) = planned {
                let key = planned.key.as_str();
                let segments: Vec<&str> = key.split('/').collect();
                prop_assert_eq!(segments.len(), 3, "{}", key);
                prop_assert_eq!(segments[0], "profiles");
                prop_assert!(TraceRoot::parse(segments[1]).is_ok(), "{}", key);
                let file = segments[2].strip_suffix(".pprof").unwrap_or_default();
                prop_assert!(!file.is_empty() && file.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "{}", key);
                prop_assert!(!key.contains(".."), "{}", key);
            }
        }
    }

    #[test]
    fn no_account_in_the_arn_means_no_profile_rather_than_no_owner_check() {
        let header = "Root=1-5759e988-bd862e3fe1be46a9942701f0".to_owned();
        for arn in ["", "arn:aws:lambda:us-east-1::function:f", "not an arn"] {
            let ctx = context(Some(header.clone()), "id-1".to_owned(), arn.to_owned());
            assert!(plan(&ctx, settings()).is_none(), "{arn:?}");
        }
    }
}
