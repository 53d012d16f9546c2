//! The expansion is clean under `deny(warnings)` and strict lints, and the
//! user's own lints still apply to their code.
#![deny(warnings, unused_qualifications, unused_results, missing_docs, unreachable_pub)]
//! A crate doc, for `missing_docs`.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use xrayprofile::xrayprofile;

/// A documented handler.
#[xrayprofile(threshold = 655)]
pub async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    Ok(event.payload)
}

fn main() {
    drop(lambda_runtime::run(service_fn(handler)));
}
