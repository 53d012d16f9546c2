//! The transport: a profile's write to S3 or to a local directory, within a
//! time budget.
//!
//! Every S3 write names the bucket owner it expects (the function's own
//! account, so a same-named bucket in another account is refused by S3) and
//! grants the bucket owner full control of the object. The write is given a
//! time budget that ends before the invocation's deadline; when the budget is
//! spent the upload is abandoned and the handler's result goes back anyway.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::destination::Destination;
use crate::object_key::ObjectKey;

/// Why a profile was not stored.
#[derive(Debug)]
#[non_exhaustive]
pub(crate) enum UploadError {
    /// The budget before the invocation deadline ran out.
    TimedOut(Duration),
    /// Writing the local file failed.
    Io(std::io::Error),
    /// S3 refused the object or could not be reached.
    #[cfg(feature = "s3")]
    S3 { message: String, hint: String },
    /// The crate was built without the `s3` feature.
    #[cfg(not(feature = "s3"))]
    NoS3,
}

impl fmt::Display for UploadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // At the cap the deadline did not bind (it is far, or unknown
            // under an emulator): a longer timeout would not help.
            UploadError::TimedOut(budget) if *budget >= MAX_UPLOAD_TIME => write!(
                f,
                "the upload did not finish within its {} ms budget, the most an upload may take; check the network path to S3",
                budget.as_millis()
            ),
            UploadError::TimedOut(budget) => write!(
                f,
                "the upload did not finish within its {} ms budget before the invocation deadline; raise the function timeout or check the network path to S3",
                budget.as_millis()
            ),
            UploadError::Io(err) => write!(f, "writing the profile file failed: {err}; check that XRAYPROFILE_OUTPUT_DIR is writable"),
            #[cfg(feature = "s3")]
            UploadError::S3 { message, hint } => write!(f, "{message}; {hint}"),
            #[cfg(not(feature = "s3"))]
            UploadError::NoS3 => f.write_str("xrayprofile was built without its `s3` feature; enable it or set XRAYPROFILE_OUTPUT_DIR"),
        }
    }
}

impl std::error::Error for UploadError {}

/// The longest an upload may take, however far away the deadline is.
const MAX_UPLOAD_TIME: Duration = Duration::from_secs(5);
/// Left between the end of an upload and the invocation deadline, so the
/// response (inline mode) or the extension's `next` (deferred mode) still
/// reaches Lambda in time.
const DEADLINE_MARGIN: Duration = Duration::from_millis(300);

/// One encoded profile on its way to its destination.
#[derive(Debug)]
pub(crate) struct UploadJob {
    pub(crate) request_id: String,
    pub(crate) destination: Destination<'static>,
    pub(crate) key: ObjectKey,
    pub(crate) body: Vec<u8>,
    pub(crate) samples: i64,
    pub(crate) metadata: HashMap<&'static str, String>,
    /// How long the profile ran.
    pub(crate) duration: Duration,
    /// The invocation's deadline; the upload ends before it.
    pub(crate) deadline: Option<SystemTime>,
}

/// The profiles being built at once in this process: one (see
/// [`PendingUpload::run`]).
static BUILDS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// A profile whose sampling has stopped but which is not built yet: building
/// it (symbolizing, encoding) goes with its upload, so under
/// [`crate::run`] it happens after the response too (P7 in
/// `docs/performance.md`).
pub(crate) struct PendingUpload {
    pub(crate) request_id: String,
    pub(crate) key: ObjectKey,
    /// About the memory it holds until built (its raw samples and stacks),
    /// for the bound on pending uploads.
    pub(crate) bytes: usize,
    build: Box<dyn FnOnce() -> Option<UploadJob> + Send>,
}

impl PendingUpload {
    pub(crate) fn new(
        request_id: String,
        key: ObjectKey,
        bytes: usize,
        build: Box<dyn FnOnce() -> Option<UploadJob> + Send>,
    ) -> PendingUpload {
        PendingUpload {
            request_id,
            key,
            bytes,
            build,
        }
    }

    /// [`PendingUpload::run`], boxed, for callers on the invocation path.
    /// Never inlined: the upload's future is ~12 KiB (aws-sdk-s3's
    /// PutObject), and built in the caller's frame it gives every
    /// invocation's `poll`, sampled or not, a 12 KiB stack frame with three
    /// stack probes (P1 in docs/performance.md).
    #[inline(never)]
    pub(crate) fn run_boxed(self) -> std::pin::Pin<Box<impl Future<Output = ()>>> {
        Box::pin(self.run())
    }

    /// Builds the profile on tokio's blocking pool (symbolizing takes a
    /// millisecond or more, too long for a worker thread), one profile at a
    /// time in the process, then stores it.
    ///
    /// One at a time because symbolizing holds up to
    /// `symbolize::SYMBOLIZE_BUDGET` per profile: under `run_concurrent`
    /// eight responses arriving together built their eight profiles at
    /// once, which on a 104 MB binary added 15 MiB of peak RSS instead of
    /// one budget's worth (issue 18 in docs/performance.md). Waiting costs
    /// nothing on the response path (uploads start after it) and no CPU:
    /// the builds take the same time in turn on the 2 vCPUs the handlers
    /// are using anyway.
    pub(crate) async fn run(self) {
        let PendingUpload {
            request_id,
            key,
            build,
            ..
        } = self;
        // Never closed, so the permit always comes; if it did not, building
        // anyway is better than dropping the profile.
        let one_at_a_time = BUILDS.acquire().await.ok();
        let built = tokio::task::spawn_blocking(build).await;
        drop(one_at_a_time);
        match built {
            Ok(Some(job)) => job.run().await,
            Ok(None) => {}
            Err(_) => tracing::warn!(
                request_id = %request_id,
                key = %key,
                "profile dropped: building it failed; handler result unaffected"
            ),
        }
    }
}

impl std::fmt::Debug for PendingUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingUpload")
            .field("request_id", &self.request_id)
            .field("key", &self.key)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl UploadJob {
    /// Stores the profile within its budget and logs the outcome once.
    pub(crate) async fn run(self) {
        let budget = budget(self.deadline);
        let key = &self.key;
        if budget.is_zero() {
            tracing::warn!(request_id = %self.request_id, key = %key, "profile dropped: the invocation deadline is too close to upload it; raise the function timeout");
            return;
        }
        let bytes = self.body.len();
        match store(&self.destination, key, self.body, self.metadata, budget).await {
            Ok(()) => tracing::info!(
                destination = %self.destination,
                key = %key,
                bytes,
                samples = self.samples,
                duration_ms = u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
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
}

/// How long an upload may take: at most [`MAX_UPLOAD_TIME`], and ending
/// [`DEADLINE_MARGIN`] before `deadline`; zero when that moment has passed.
pub(crate) fn budget(deadline: Option<SystemTime>) -> Duration {
    let Some(deadline) = deadline else {
        return MAX_UPLOAD_TIME;
    };
    let remaining = deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    remaining
        .saturating_sub(DEADLINE_MARGIN)
        .min(MAX_UPLOAD_TIME)
}

/// Stores `body` at `key`, giving up after `budget`.
///
/// # Errors
/// Any failure to store the object; the caller logs it and moves on.
pub(crate) async fn store(
    destination: &Destination<'_>,
    key: &ObjectKey,
    body: Vec<u8>,
    metadata: HashMap<&'static str, String>,
    budget: Duration,
) -> Result<(), UploadError> {
    let write = async {
        match destination {
            Destination::Dir(dir) => write_file(dir, key, &body).await,
            #[cfg(feature = "s3")]
            Destination::S3 {
                bucket,
                expected_owner,
                force_path_style,
            } => {
                s3::put(
                    bucket,
                    expected_owner,
                    *force_path_style,
                    key,
                    body,
                    metadata,
                )
                .await
            }
            #[cfg(not(feature = "s3"))]
            Destination::S3 { .. } => {
                drop(metadata);
                Err(UploadError::NoS3)
            }
        }
    };
    tokio::time::timeout(budget, write)
        .await
        .unwrap_or(Err(UploadError::TimedOut(budget)))
}

async fn write_file(dir: &Path, key: &ObjectKey, body: &[u8]) -> Result<(), UploadError> {
    let path = dir.join(key.as_str());
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(UploadError::Io)?;
    }
    tokio::fs::write(&path, body).await.map_err(UploadError::Io)
}

#[cfg(feature = "s3")]
mod s3 {
    //! The S3 client, built on the first sampled invocation (never at init, so
    //! unsampled functions pay nothing) from aws-config's default chain.

    use std::collections::HashMap;

    use std::time::Duration;

    use aws_sdk_s3::config::http::HttpResponse;
    use aws_sdk_s3::config::retry::RetryConfig;
    use aws_sdk_s3::config::timeout::TimeoutConfig;
    use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
    use aws_sdk_s3::operation::put_object::PutObjectError;
    use aws_sdk_s3::primitives::ByteStream;
    use aws_sdk_s3::types::ObjectCannedAcl;
    use tokio::sync::OnceCell;

    use super::{ObjectKey, UploadError};

    /// Attempts per upload, the first included: a 500/503 is retried, but a
    /// persistent one costs the invocation at most this many round trips.
    const MAX_ATTEMPTS: u32 = 3;
    /// A connection that is not up by then will not be; in-region S3 connects
    /// in milliseconds.
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    /// One attempt that has not finished by then is cut, so a server that
    /// accepts and never answers leaves time for a retry on a new connection
    /// within the upload's budget (see `invocation.rs`).
    const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

    async fn client(force_path_style: bool) -> &'static aws_sdk_s3::Client {
        static CLIENT: OnceCell<aws_sdk_s3::Client> = OnceCell::const_new();
        CLIENT
            .get_or_init(|| async {
                let shared = aws_config::load_from_env().await;
                let config = aws_sdk_s3::config::Builder::from(&shared)
                    .force_path_style(force_path_style)
                    .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
                    .timeout_config(
                        TimeoutConfig::builder()
                            .connect_timeout(CONNECT_TIMEOUT)
                            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                            .build(),
                    )
                    .build();
                aws_sdk_s3::Client::from_conf(config)
            })
            .await
    }

    pub(super) async fn put(
        bucket: &str,
        expected_owner: &str,
        force_path_style: bool,
        key: &ObjectKey,
        body: Vec<u8>,
        metadata: HashMap<&'static str, String>,
    ) -> Result<(), UploadError> {
        let mut request = client(force_path_style)
            .await
            .put_object()
            .bucket(bucket)
            .key(key.as_str())
            .body(ByteStream::from(body))
            .content_type("application/octet-stream")
            .acl(ObjectCannedAcl::BucketOwnerFullControl)
            .expected_bucket_owner(expected_owner);
        for (name, value) in metadata {
            request = request.metadata(name, value);
        }
        request
            .send()
            .await
            .map(drop)
            .map_err(|err| explain(&err, bucket, expected_owner))
    }

    /// `err: cause: cause ...`, each level once.
    fn error_chain(err: &dyn std::error::Error) -> String {
        let mut text = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            let next = cause.to_string();
            if !text.ends_with(&next) {
                text.push_str(": ");
                text.push_str(&next);
            }
            source = cause.source();
        }
        text
    }

    /// Turns an SDK error into one message that says what happened and what
    /// to change; the caller logs it once.
    fn explain(
        err: &SdkError<PutObjectError, HttpResponse>,
        bucket: &str,
        expected_owner: &str,
    ) -> UploadError {
        let status = err.raw_response().map(|r| r.status().as_u16());
        // S3's own code and message when it answered; the cause chain
        // (refused, DNS, timeout) when it did not. Not the SDK's Debug dump,
        // which would bury the fix at the end of a very long line.
        let message = match (status, err.code()) {
            (Some(status), Some(code)) => format!(
                "S3 PutObject answered {status} {code}: {:?}",
                crate::untrusted::truncate_for_log(err.message().unwrap_or_default())
            ),
            _ => format!("S3 PutObject failed: {}", error_chain(err)),
        };
        let hint = match (err, err.code(), status) {
            (_, Some("AccessDenied"), _) | (_, _, Some(403)) => format!(
                "S3 gives 403 for two causes it does not tell apart: either bucket `{bucket}` is not owned by this function's account {expected_owner} (every write names ExpectedBucketOwner={expected_owner}, and S3 refuses it when the bucket belongs to another account, as a same-named bucket created by someone else would; create `{bucket}` in account {expected_owner} or set XRAYPROFILE_S3_BUCKET to a bucket it owns), or the function's role lacks s3:PutObject and s3:PutObjectAcl on arn:aws:s3:::{bucket}/<prefix>* (grant them; see the IAM policy in docs/security.md)"
            ),
            (_, Some("NoSuchBucket"), _) | (_, _, Some(404)) => format!(
                "bucket `{bucket}` does not exist: create it in account {expected_owner}, or set XRAYPROFILE_S3_BUCKET to an existing one"
            ),
            (_, _, Some(status)) if status >= 500 => format!(
                "S3 answered {status} on every one of the SDK's {MAX_ATTEMPTS} attempts; this is usually transient and needs no change; if it persists (SlowDown), profile less: lower the threshold or XRAYPROFILE_MAX_PER_MINUTE"
            ),
            (SdkError::DispatchFailure(failure), _, _) if failure.is_timeout() => "connecting to S3 timed out; check that S3 is reachable from the function (a function in a VPC needs an S3 gateway endpoint or a NAT) and AWS_ENDPOINT_URL_S3 if set".to_owned(),
            (SdkError::DispatchFailure(failure), _, _) if failure.is_io() => "S3 could not be reached (connection refused, reset or DNS failure); check that S3 is reachable from the function (a function in a VPC needs an S3 gateway endpoint or a NAT) and AWS_ENDPOINT_URL_S3 if set".to_owned(),
            (SdkError::DispatchFailure(_), _, _) | (SdkError::ConstructionFailure(_), _, _) => {
                "the request could not be sent; check the function's role credentials and AWS_ENDPOINT_URL_S3 if set".to_owned()
            }
            (SdkError::TimeoutError(_), _, _) => format!(
                "S3 did not answer within {} s per attempt; check the network path to S3",
                ATTEMPT_TIMEOUT.as_secs()
            ),
            (_, Some(code), _) => format!("S3 answered `{code}`; see its message above"),
            _ => "check the network path to S3 and AWS_ENDPOINT_URL_S3 if set".to_owned(),
        };
        UploadError::S3 { message, hint }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn profiles_are_built_one_at_a_time() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (building, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let uploads: Vec<_> = (0..8)
            .map(|n| {
                let (building, most) = (building.clone(), most.clone());
                let build = move || {
                    let now = building.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    building.fetch_sub(1, Ordering::SeqCst);
                    None
                };
                let root = crate::trace::TraceRoot::parse("1-5759e988-bd862e3fe1be46a994272793")
                    .expect("a valid root");
                let id = format!("request-{n}");
                let request_id =
                    crate::object_key::RequestId::parse(&id).expect("a valid request ID");
                let key = ObjectKey::new("p", &root, &request_id);
                tokio::spawn(PendingUpload::new(id.clone(), key, 0, Box::new(build)).run())
            })
            .collect();
        for upload in uploads {
            upload.await.expect("the upload task ran");
        }
        assert_eq!(most.load(Ordering::SeqCst), 1, "builds at once");
    }

    #[test]
    fn a_timeout_advises_a_longer_function_timeout_only_when_the_deadline_bound_it() {
        let unknown_deadline = UploadError::TimedOut(budget(None)).to_string();
        assert!(
            !unknown_deadline.contains("function timeout"),
            "{unknown_deadline}"
        );
        assert!(
            unknown_deadline.contains("network path to S3"),
            "{unknown_deadline}"
        );
        let near = SystemTime::now() + DEADLINE_MARGIN + Duration::from_secs(1);
        let bound = UploadError::TimedOut(budget(Some(near))).to_string();
        assert!(bound.contains("raise the function timeout"), "{bound}");
    }
}
