//! The generated future is `Send + 'static` whenever the original is, as
//! `lambda_runtime::run_concurrent` and `lambda_http::run` require.
use lambda_runtime::{Context, Error, LambdaEvent};
use serde_json::Value;
use xrayprofile::xrayprofile;

#[xrayprofile(threshold = 655)]
async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    tokio::task::yield_now().await;
    Ok(event.payload)
}

#[xrayprofile(threshold = 655)]
async fn from_context(ctx: Context) -> Result<String, Error> {
    Ok(ctx.request_id)
}

fn assert_send_static<T: Send + 'static>(_: &T) {}

fn main() {
    let future = handler(LambdaEvent::new(Value::Null, Context::default()));
    assert_send_static(&future);
    assert_send_static(&from_context(Context::default()));
}
