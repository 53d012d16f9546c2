//! Running the `xrayprofile` command line (the tests package's
//! `xrayprofile_cli` binary) as a user would, against the S3 server here.

use std::path::Path;
use std::process::Command;

use crate::s3_server::{ACCESS_KEY, SECRET_KEY};

/// `binary` (`CARGO_BIN_EXE_xrayprofile_cli`) with `env` and nothing else:
/// no instance metadata, no profile files, so it never reaches real AWS.
pub fn command(binary: &Path, env: &[(&str, String)]) -> Command {
    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .envs(env.iter().map(|(k, v)| (k, v)));
    command
}

/// What a user sets to read `bucket`, under `prefix`, of the S3 server at
/// `endpoint`.
pub fn s3_env(endpoint: &str, bucket: &str, prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL_S3", endpoint.to_owned()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
        ("AWS_REGION", crate::REGION.to_owned()),
        ("XRAYPROFILE_S3_BUCKET", bucket.to_owned()),
        ("XRAYPROFILE_S3_PREFIX", prefix.to_owned()),
        ("XRAYPROFILE_S3_FORCE_PATH_STYLE", "true".to_owned()),
    ]
}
