//! Destructured and `mut` arguments.
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use xrayprofile::xrayprofile;

#[xrayprofile(threshold = 655)]
async fn destructured(LambdaEvent { payload, context }: LambdaEvent<Value>) -> Result<Value, Error> {
    Ok(serde_json::json!({ "payload": payload, "id": context.request_id }))
}

#[xrayprofile(threshold = 655)]
async fn mutable(mut event: LambdaEvent<Value>) -> Result<Value, Error> {
    event.payload = Value::Bool(true);
    Ok(event.payload)
}

#[xrayprofile(threshold = 655)]
async fn tuple_after_event(event: LambdaEvent<Value>, (a, _b): (u8, u8), _: u8) -> Result<Value, Error> {
    Ok(serde_json::json!({ "a": a, "payload": event.payload }))
}

fn main() {
    let _ = lambda_runtime::run(service_fn(destructured));
    let _ = lambda_runtime::run(service_fn(mutable));
    let _ = lambda_runtime::run(service_fn(|e| tuple_after_event(e, (1, 2), 3)));
}
