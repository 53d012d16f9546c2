//! The expansion names nothing the user's crate can shadow: `Result`,
//! `Option`, `Box`, `Some`, `None`, `Ok`, `Err`, `core` and `std`.
#![allow(dead_code, non_camel_case_types)]

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;
use xrayprofile::xrayprofile;

type Result<T> = ::std::result::Result<T, lambda_runtime::Error>;
struct Option;
struct Box;
struct Some;
struct None;
struct Future;
mod core {}
mod std {}

#[xrayprofile(threshold = 655, bucket = "my-profiles")]
async fn handler(event: LambdaEvent<Value>) -> Result<Value> {
    ::std::result::Result::Ok(event.payload)
}

fn main() {
    let _ = lambda_runtime::run(service_fn(handler));
}
