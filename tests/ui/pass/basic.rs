//! The README's handler: `?`, early `return`, `lambda_runtime::Error`.
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use xrayprofile::xrayprofile;

#[xrayprofile(threshold = 655, bucket = "my-profiles", prefix = "profiles", max_per_minute = 30)]
async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    if event.payload.is_null() {
        return Ok(Value::Null);
    }
    let n: u64 = event.payload.to_string().parse()?;
    Ok(Value::from(n))
}

#[xrayprofile]
async fn no_arguments_in_the_attribute(event: LambdaEvent<Value>) -> Result<Value, Error> {
    Ok(event.payload)
}

#[xrayprofile(sample_rate = 0.01)]
async fn with_sample_rate(event: LambdaEvent<Value>) -> Result<Value, Error> {
    Ok(event.payload)
}

#[xrayprofile(mode = "cpu", symbolize = false)]
async fn cpu_only_with_addresses(event: LambdaEvent<Value>) -> Result<Value, Error> {
    Ok(event.payload)
}

#[xrayprofile(mode = "wall", symbolize = true)]
async fn wall_clock_with_names(event: LambdaEvent<Value>) -> Result<Value, Error> {
    Ok(event.payload)
}

#[xrayprofile(threshold = 0x28F_u16)]
async fn with_hex_threshold(event: LambdaEvent<Value>) -> Result<Value, Error> {
    Ok(event.payload)
}

fn main() {
    let _ = lambda_runtime::run(service_fn(handler));
    let _ = lambda_runtime::run(service_fn(no_arguments_in_the_attribute));
    let _ = lambda_runtime::run(service_fn(with_sample_rate));
    let _ = lambda_runtime::run(service_fn(with_hex_threshold));
    let _ = lambda_runtime::run(service_fn(cpu_only_with_addresses));
    let _ = lambda_runtime::run(service_fn(wall_clock_with_names));
}
