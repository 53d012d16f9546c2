//! Where a profile goes: a local directory, or an S3 bucket and the account
//! that must own it, resolved once per sampled invocation from the settings
//! and the invocation's function ARN.

use std::fmt;
use std::path::Path;

use lambda_runtime::Context;

use crate::config::{self, Settings};
use crate::untrusted;

/// The account ID in a Lambda function ARN,
/// `arn:aws:lambda:{region}:{account}:function:{name}[:{qualifier}]`.
pub(crate) fn account_id(function_arn: &str) -> Option<&str> {
    let account = function_arn.split(':').nth(4)?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())).then_some(account)
}

/// Where one profile is written.
#[derive(Debug, Clone)]
pub(crate) enum Destination<'a> {
    /// A local directory (`XRAYPROFILE_OUTPUT_DIR`).
    Dir(&'a Path),
    /// An S3 bucket owned by `expected_owner`.
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    S3 {
        bucket: String,
        expected_owner: String,
        force_path_style: bool,
    },
}

impl fmt::Display for Destination<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Dir(dir) => write!(f, "{}", dir.display()),
            Destination::S3 { bucket, .. } => write!(f, "s3://{bucket}"),
        }
    }
}

/// Where this invocation's profile goes under `settings`: the output
/// directory if one is set, else the configured bucket or the default one,
/// owned by the function's own account. `None` (logged) when no destination
/// can be built.
pub(crate) fn resolve(ctx: &Context, settings: &Settings<'static>) -> Option<Destination<'static>> {
    if let Some(dir) = settings.output_dir {
        return Some(Destination::Dir(dir));
    }
    let Some(account) = account_id(&ctx.invoked_function_arn) else {
        // Lambda always sends an ARN with the account; an emulator sends one
        // with every invocation, so say it once.
        static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let function_arn = untrusted::truncate_for_log(&ctx.invoked_function_arn);
        if WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::debug!(request_id = %ctx.request_id, ?function_arn, "not profiled: the function ARN has no account ID");
        } else {
            tracing::warn!(
                ?function_arn,
                "not profiled: the function ARN {function_arn:?} has no account ID, which S3 uploads need for the ExpectedBucketOwner check (and, without XRAYPROFILE_S3_BUCKET, for the default bucket name); Runtime API emulators send such ARNs: set XRAYPROFILE_OUTPUT_DIR to write profiles to local files (logged once)"
            );
        }
        return None;
    };
    let bucket = match (settings.bucket, settings.region) {
        (Some(bucket), _) => bucket.to_owned(),
        (None, Some(region)) => {
            let bucket = xrayprofile_rules::default_bucket(account, region);
            // The region is checked by config; this guards the whole name.
            if let Some(problem) = config::bucket_problem(&bucket) {
                tracing::warn!(bucket = ?untrusted::truncate_for_log(&bucket), "not profiled: the default bucket name {problem}; set XRAYPROFILE_S3_BUCKET");
                return None;
            }
            bucket
        }
        (None, None) => {
            tracing::warn!(
                "not profiled: no bucket is configured and AWS_REGION is unset, so the default bucket name cannot be built; set XRAYPROFILE_S3_BUCKET"
            );
            return None;
        }
    };
    Some(Destination::S3 {
        bucket,
        expected_owner: account.to_owned(),
        force_path_style: settings.force_path_style,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_from_arn() {
        assert_eq!(
            account_id("arn:aws:lambda:us-east-1:123456789012:function:fn"),
            Some("123456789012")
        );
        assert_eq!(
            account_id("arn:aws:lambda:us-east-1:123456789012:function:fn:live"),
            Some("123456789012")
        );
        assert_eq!(
            account_id("No header lambda-runtime-invoked-function-arn found."),
            None
        );
        assert_eq!(
            account_id("arn:aws:lambda:us-east-1:12345:function:fn"),
            None
        );
        assert_eq!(account_id(""), None);
    }
}
