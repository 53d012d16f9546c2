//! Stacks with `#[tracing::instrument]` in either order.
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use xrayprofile::xrayprofile;

#[tracing::instrument(skip(event))]
#[xrayprofile(threshold = 655)]
async fn instrument_outside(event: LambdaEvent<Value>) -> Result<Value, Error> {
    Ok(event.payload)
}

#[xrayprofile(threshold = 655)]
#[tracing::instrument(skip(event), err)]
async fn instrument_inside(event: LambdaEvent<Value>) -> Result<Value, Error> {
    Ok(event.payload)
}

fn main() {
    let _ = lambda_runtime::run(service_fn(instrument_outside));
    let _ = lambda_runtime::run(service_fn(instrument_inside));
}
