//! The expansion keeps a handler's future `Send + 'static`, which
//! `lambda_runtime::run_concurrent` and `lambda_http::run` require.

use lambda_runtime::{Context, Error, LambdaEvent};
use serde_json::Value;
use xrayprofile::xrayprofile;

#[xrayprofile(threshold = 65535)]
async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    tokio::task::yield_now().await;
    Ok(event.payload)
}

fn assert_send_static<T: Send + 'static>(value: T) -> T {
    value
}

#[tokio::test]
async fn generated_future_is_send_and_returns_the_body_output() {
    let event = LambdaEvent::new(serde_json::json!({ "x": 1 }), Context::default());
    // Context::default() has no trace header, so this runs the unsampled path.
    let output = assert_send_static(handler(event)).await.unwrap();
    assert_eq!(output, serde_json::json!({ "x": 1 }));
}
