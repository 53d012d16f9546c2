//! Profiles in S3, read with aws-sdk-s3 through aws-config's default chain
//! (environment, profiles, SSO, instance roles; `AWS_ENDPOINT_URL_S3` and
//! `AWS_ENDPOINT_URL` for S3-compatible servers). Only `ListObjectsV2`,
//! `HeadObject` and `GetObject` are sent: a read-only policy is enough.

use std::time::SystemTime;

use aws_config::BehaviorVersion;
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use tokio::task::JoinSet;

use super::{Entry, Location, ids_from_key};
use crate::console;
use crate::error::{CliError, CliResult, chain};
use crate::filter::Filter;
use crate::info::ProfileInfo;
use crate::profile_file::MAX_PROFILE_BYTES;

/// How many `HeadObject` requests run at once while listing.
const HEAD_JOBS: usize = 32;

/// The bucket and prefix to read, as the library would write them.
#[derive(Debug, Clone, Default)]
pub(crate) struct S3Options {
    /// The bucket; default `xrayprofile-{account}-{region}` of the caller.
    pub(crate) bucket: Option<String>,
    /// The key prefix; a `/` is added if missing, as the library does.
    pub(crate) prefix: Option<String>,
    /// Path-style addressing, for S3-compatible servers.
    pub(crate) path_style: bool,
}

/// A connected bucket and prefix.
#[derive(Debug, Clone)]
pub(crate) struct S3Source {
    client: Client,
    bucket: String,
    prefix: String,
}

impl S3Source {
    /// Loads the AWS configuration, checks that there are credentials, and
    /// picks the bucket (asking STS for the account when none is named).
    ///
    /// # Errors
    /// No credentials; no region or account for the default bucket.
    pub(crate) async fn connect(options: &S3Options) -> CliResult<S3Source> {
        let shared = aws_config::load_defaults(BehaviorVersion::latest()).await;
        let Some(credentials) = shared.credentials_provider() else {
            return Err(no_credentials("no credentials provider is configured"));
        };
        if let Err(err) = ProvideCredentials::provide_credentials(&credentials).await {
            return Err(no_credentials(&chain(&err)));
        }
        let bucket = match &options.bucket {
            Some(bucket) => bucket.clone(),
            None => default_bucket(&shared).await?,
        };
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(options.path_style)
            .build();
        Ok(S3Source {
            client: Client::from_conf(config),
            bucket,
            prefix: normalise_prefix(options.prefix.as_deref().unwrap_or("")),
        })
    }

    /// `s3://bucket/prefix`.
    pub(crate) fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// Lists the objects under the prefix (under `{prefix}{trace}/` when the
    /// filter names a trace), page by page, and, with `metadata`, reads each
    /// one's metadata with `HeadObject` unless the time filter already rules
    /// it out.
    ///
    /// # Errors
    /// The bucket does not exist or the caller may not list it.
    pub(super) async fn list(&self, filter: &Filter, metadata: bool) -> CliResult<Vec<Entry>> {
        let prefix = match &filter.trace {
            Some(trace) => format!("{}{trace}/", self.prefix),
            None => self.prefix.clone(),
        };
        let spinner = console::spinner("listing");
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .into_paginator()
            .send();
        let mut entries = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.explain(&e, "ListObjectsV2", "s3:ListBucket"))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let written = object
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                if filter.from.is_some_and(|f| written < f)
                    || filter.to.is_some_and(|t| written > t)
                {
                    continue;
                }
                let (trace_id, request_id) = ids_from_key(key);
                entries.push(Entry {
                    key: key.to_owned(),
                    location: Location::Object(key.to_owned()),
                    size: u64::try_from(object.size().unwrap_or(0)).unwrap_or(0),
                    etag: object.e_tag().map(str::to_owned),
                    written,
                    info: ProfileInfo {
                        trace_id,
                        request_id,
                        ..ProfileInfo::default()
                    },
                });
                spinner.inc(1);
            }
        }
        spinner.finish_and_clear();
        if metadata {
            self.head_all(&mut entries).await?;
        }
        Ok(entries)
    }

    /// Fills each entry's info from its object metadata.
    async fn head_all(&self, entries: &mut [Entry]) -> CliResult<()> {
        let bar = console::progress(entries.len() as u64, "reading metadata");
        let mut tasks = JoinSet::new();
        let mut next = 0;
        let mut done = 0;
        while done < entries.len() {
            while next < entries.len() && tasks.len() < HEAD_JOBS {
                let (client, bucket) = (self.client.clone(), self.bucket.clone());
                let key = entries.get(next).map(|e| e.key.clone()).unwrap_or_default();
                let index = next;
                tasks.spawn(async move {
                    let head = client.head_object().bucket(bucket).key(key).send().await;
                    (index, head)
                });
                next += 1;
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let (index, head) =
                joined.map_err(|e| CliError::new(format!("a HeadObject task failed: {e}")))?;
            let head = head.map_err(|e| self.explain(&e, "HeadObject", "s3:GetObject"))?;
            if let (Some(entry), Some(metadata)) = (entries.get_mut(index), head.metadata()) {
                let from_metadata = ProfileInfo::from_metadata(metadata);
                entry.info = ProfileInfo {
                    trace_id: from_metadata.trace_id.or(entry.info.trace_id.take()),
                    request_id: from_metadata.request_id.or(entry.info.request_id.take()),
                    ..from_metadata
                };
            }
            done += 1;
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(())
    }

    /// Downloads each entry, `jobs` at a time, and hands its bytes to
    /// `consume` in the order they arrive. An object larger than
    /// [`MAX_PROFILE_BYTES`] is skipped with a warning.
    ///
    /// # Errors
    /// An S3 error, or the first error of `consume`.
    pub(super) async fn read_all(
        &self,
        entries: &[Entry],
        jobs: usize,
        mut consume: impl FnMut(&Entry, Vec<u8>) -> CliResult<()>,
    ) -> CliResult<()> {
        let bar = console::progress(entries.len() as u64, "downloading");
        let mut tasks = JoinSet::new();
        let mut next = 0;
        let mut done = 0;
        while done < entries.len() {
            while next < entries.len() && tasks.len() < jobs.max(1) {
                let (client, bucket) = (self.client.clone(), self.bucket.clone());
                let key = entries.get(next).map(|e| e.key.clone()).unwrap_or_default();
                let index = next;
                tasks.spawn(async move { (index, get(&client, &bucket, &key).await) });
                next += 1;
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let (index, got) =
                joined.map_err(|e| CliError::new(format!("a GetObject task failed: {e}")))?;
            done += 1;
            bar.inc(1);
            let Some(entry) = entries.get(index) else {
                continue;
            };
            match got {
                Ok(Some(bytes)) => consume(entry, bytes)?,
                Ok(None) => console::warn(&format!(
                    "skipped `{}`: larger than {} MiB, more than any profile",
                    entry.key,
                    MAX_PROFILE_BYTES >> 20
                )),
                Err(GetFailure::Sdk(err)) => {
                    return Err(self.explain(&err, "GetObject", "s3:GetObject"));
                }
                Err(GetFailure::Body(err)) => {
                    return Err(CliError::new(format!(
                        "reading `{}` from S3 broke off: {err}; check the network path to S3 and run the command again",
                        entry.key
                    )));
                }
            }
        }
        bar.finish_and_clear();
        Ok(())
    }

    /// One message for an SDK error: what S3 said, and what to change.
    fn explain<E>(&self, err: &SdkError<E, HttpResponse>, operation: &str, action: &str) -> CliError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let bucket = &self.bucket;
        let status = err.raw_response().map(|r| r.status().as_u16());
        let what = match (status, err.code()) {
            (Some(status), Some(code)) => {
                format!("S3 {operation} on bucket `{bucket}` answered {status} {code}")
            }
            (Some(status), None) => {
                format!("S3 {operation} on bucket `{bucket}` answered {status}")
            }
            _ => format!("S3 {operation} on bucket `{bucket}` failed: {}", chain(err)),
        };
        let hint = match (err.code(), status) {
            (Some("NoSuchBucket"), _) => format!(
                "bucket `{bucket}` does not exist; name the bucket the functions write to with --bucket or XRAYPROFILE_S3_BUCKET (and its region with AWS_REGION)"
            ),
            (Some("AccessDenied"), _) | (_, Some(403)) => format!(
                "the caller may not do this; grant {action} on arn:aws:s3:::{bucket} (docs/security.md has the read-only policy for the command line), or check that the bucket is the right one"
            ),
            (Some("PermanentRedirect" | "AuthorizationHeaderMalformed"), _) | (_, Some(301)) => {
                "the bucket is in another region; set AWS_REGION to the bucket's region".to_owned()
            }
            (_, Some(404)) if operation == "ListObjectsV2" => format!(
                "bucket `{bucket}` does not exist; name the bucket the functions write to with --bucket or XRAYPROFILE_S3_BUCKET"
            ),
            (_, None) => "check the network path to S3, and AWS_ENDPOINT_URL_S3 if set".to_owned(),
            _ => "see S3's answer above".to_owned(),
        };
        CliError::new(format!("{what}; {hint}"))
    }
}

/// Why a download failed.
enum GetFailure {
    /// S3 refused or could not be reached.
    Sdk(Box<SdkError<GetObjectError, HttpResponse>>),
    /// The body broke off.
    Body(String),
}

/// The object's bytes; `None` when it is larger than [`MAX_PROFILE_BYTES`].
async fn get(client: &Client, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, GetFailure> {
    let object = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| GetFailure::Sdk(Box::new(e)))?;
    if object
        .content_length()
        .and_then(|l| u64::try_from(l).ok())
        .is_some_and(|l| l > MAX_PROFILE_BYTES)
    {
        return Ok(None);
    }
    let mut body = object.body;
    let mut bytes = Vec::new();
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(|e| GetFailure::Body(chain(&e)))?
    {
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 > MAX_PROFILE_BYTES {
            return Ok(None);
        }
    }
    Ok(Some(bytes))
}

/// `prefix` as the library uses it: empty, or ending in `/`.
fn normalise_prefix(prefix: &str) -> String {
    format!("{prefix}{}", xrayprofile_rules::prefix_separator(prefix))
}

fn no_credentials(why: &str) -> CliError {
    CliError::new(format!(
        "no AWS credentials found ({why}); set AWS_PROFILE (after `aws sso login` or `aws configure`) or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or read a local directory with --dir"
    ))
}

/// `xrayprofile-{account}-{region}`, the library's default, for the
/// caller's account (from STS) and region.
async fn default_bucket(shared: &aws_config::SdkConfig) -> CliResult<String> {
    let Some(region) = shared.region() else {
        return Err(CliError::new(
            "no bucket named and no AWS region set, so the default bucket `xrayprofile-{account}-{region}` cannot be built; give --bucket (or XRAYPROFILE_S3_BUCKET) or set AWS_REGION",
        ));
    };
    let identity = aws_sdk_sts::Client::new(shared)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| {
            CliError::new(format!(
                "no bucket named, and STS GetCallerIdentity (for the account in the default bucket name) failed: {}; give --bucket or set XRAYPROFILE_S3_BUCKET",
                chain(&e)
            ))
        })?;
    let Some(account) = identity.account() else {
        return Err(CliError::new(
            "STS did not name the caller's account; give --bucket or set XRAYPROFILE_S3_BUCKET",
        ));
    };
    Ok(xrayprofile_rules::default_bucket(account, region.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_gets_its_slash() {
        assert_eq!(normalise_prefix(""), "");
        assert_eq!(normalise_prefix("p"), "p/");
        assert_eq!(normalise_prefix("a/b/"), "a/b/");
    }
}
