//! Any error type: boxed std errors and the user's own.
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;
use xrayprofile::xrayprofile;

#[xrayprofile(threshold = 655)]
async fn boxed(event: LambdaEvent<Value>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
    let _n: i32 = "42".parse()?;
    Ok(event.payload)
}

#[derive(Debug)]
struct MyError(String);

impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MyError {}

impl From<MyError> for lambda_runtime::Diagnostic {
    fn from(e: MyError) -> Self {
        lambda_runtime::Diagnostic { error_type: "MyError".into(), error_message: e.0 }
    }
}

impl From<std::num::ParseIntError> for MyError {
    fn from(e: std::num::ParseIntError) -> Self {
        MyError(e.to_string())
    }
}

#[xrayprofile(threshold = 655)]
async fn own_error(event: LambdaEvent<Value>) -> Result<Value, MyError> {
    let _n: i32 = "42".parse()?;
    if event.payload.is_null() {
        return Err(MyError("empty".into()));
    }
    Ok(event.payload)
}

fn main() {
    let _ = lambda_runtime::run(service_fn(boxed));
    let _ = lambda_runtime::run(service_fn(own_error));
}
