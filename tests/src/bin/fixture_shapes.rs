//! A Lambda function whose event picks one of several annotated handler
//! shapes, so the tests can check that each shape really samples and uploads.
//!
//! Event: `{"shape": "destructured" | "generic" | "method" | "context", "spin_ms": N}`.

use std::fmt::Debug;

use lambda_runtime::{Context, Error, LambdaEvent, service_fn};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use xrayprofile::xrayprofile;

#[xrayprofile(threshold = 65535, bucket = "fixture-profiles", prefix = "shapes")]
async fn destructured(
    LambdaEvent { payload, context }: LambdaEvent<Value>,
) -> Result<Value, Error> {
    let spun = destructured_hot(spin_ms(&payload));
    Ok(json!({ "shape": "destructured", "request_id": context.request_id, "spun": spun > 0 }))
}

/// Stands for a shared SDK client passed next to the event.
struct Client {
    name: &'static str,
}

#[xrayprofile(threshold = 65535, bucket = "fixture-profiles", prefix = "shapes")]
async fn generic<T>(event: LambdaEvent<T>, client: &Client) -> Result<Value, Error>
where
    T: DeserializeOwned + Debug + Into<Value>,
{
    let payload: Value = event.payload.into();
    let spun = generic_hot(spin_ms(&payload));
    Ok(json!({ "shape": "generic", "client": client.name, "spun": spun > 0 }))
}

struct Service {
    greeting: &'static str,
}

impl Service {
    #[xrayprofile(threshold = 65535, bucket = "fixture-profiles", prefix = "shapes")]
    async fn handle(&self, mut event: LambdaEvent<Value>) -> Result<Value, Error> {
        event.payload["seen"] = Value::Bool(true);
        let spun = method_hot(spin_ms(&event.payload));
        Ok(
            json!({ "shape": "method", "greeting": self.greeting, "payload": event.payload, "spun": spun > 0 }),
        )
    }
}

#[xrayprofile(threshold = 65535, bucket = "fixture-profiles", prefix = "shapes")]
async fn from_context(context: Context, payload: Value) -> Result<Value, Error> {
    let spun = context_hot(spin_ms(&payload));
    Ok(json!({ "shape": "context", "request_id": context.request_id, "spun": spun > 0 }))
}

fn spin_ms(payload: &Value) -> u64 {
    payload.get("spin_ms").and_then(Value::as_u64).unwrap_or(0)
}

#[inline(never)]
fn destructured_hot(ms: u64) -> u64 {
    burn(ms)
}

#[inline(never)]
fn generic_hot(ms: u64) -> u64 {
    burn(ms)
}

#[inline(never)]
fn method_hot(ms: u64) -> u64 {
    burn(ms)
}

#[inline(never)]
fn context_hot(ms: u64) -> u64 {
    burn(ms)
}

/// Burns `ms` of this thread's CPU time.
fn burn(ms: u64) -> u64 {
    xrayprofile_tests::burn_cpu(std::time::Duration::from_millis(ms))
}

static CLIENT: Client = Client {
    name: "shared-client",
};
static SERVICE: Service = Service { greeting: "hello" };

async fn dispatch(event: LambdaEvent<Value>) -> Result<Value, Error> {
    match event.payload.get("shape").and_then(Value::as_str) {
        Some("destructured") => destructured(event).await,
        Some("generic") => generic::<Value>(event, &CLIENT).await,
        Some("method") => SERVICE.handle(event).await,
        Some("context") => from_context(event.context, event.payload).await,
        other => Err(format!("unknown shape {other:?}").into()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    xrayprofile_tests::function::init_logging();
    lambda_runtime::run(service_fn(dispatch)).await
}
