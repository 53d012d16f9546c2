//! P6: `init_plain` with `#[xrayprofile]` on its handler.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use xrayprofile::xrayprofile;

#[xrayprofile(threshold = 655, bucket = "init-profiles")]
async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    Ok(event.payload)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
