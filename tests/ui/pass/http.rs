//! lambda_http handlers (the `http` feature); `lambda_http::run` requires the
//! future to be `Send`.
use lambda_http::{service_fn, Error, IntoResponse, Request, RequestExt};
use xrayprofile::xrayprofile;

#[xrayprofile(threshold = 655)]
async fn handler(req: Request) -> Result<impl IntoResponse, Error> {
    let who = req.query_string_parameters_ref().and_then(|q| q.first("name")).unwrap_or("world").to_owned();
    Ok(format!("hello {who}"))
}

fn main() {
    let _ = lambda_http::run(service_fn(handler));
}
