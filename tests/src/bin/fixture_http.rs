//! A lambda_http function (API Gateway HTTP API events) with an annotated
//! handler, run by `lambda_http::run`, which requires a `Send` future.

use lambda_http::{Error, IntoResponse, Request, RequestExt, service_fn};
use xrayprofile::xrayprofile;

#[xrayprofile(threshold = 65535, bucket = "fixture-profiles", prefix = "http")]
async fn handler(req: Request) -> Result<impl IntoResponse, Error> {
    let name = req
        .query_string_parameters_ref()
        .and_then(|q| q.first("name"))
        .unwrap_or("world")
        .to_owned();
    let spin_ms = req
        .query_string_parameters_ref()
        .and_then(|q| q.first("spin_ms"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let spun = http_hot(spin_ms);
    Ok(format!("hello {name} ({})", spun > 0))
}

/// Burns `ms` of this thread's CPU time.
#[inline(never)]
fn http_hot(ms: u64) -> u64 {
    xrayprofile_tests::burn_cpu(std::time::Duration::from_millis(ms))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    xrayprofile_tests::function::init_logging();
    lambda_http::run(service_fn(handler)).await
}
