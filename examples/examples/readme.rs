//! The README's example, compiled so it cannot drift. It runs only inside
//! Lambda (or under `cargo lambda watch`); `cargo run --example demo` runs the
//! whole path locally.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use xrayprofile::xrayprofile;

#[xrayprofile(threshold = 655, bucket = "my-profiles")]
async fn handler(event: LambdaEvent<serde_json::Value>) -> Result<serde_json::Value, Error> {
    Ok(event.payload)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
