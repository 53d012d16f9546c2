use lambda_runtime::{Error, LambdaEvent};
use xrayprofile::xrayprofile;

// A half-typed body gets rustc's own syntax error, at the body, as without
// the attribute: the macro never parses the body.
#[xrayprofile(threshold = 655)]
async fn handler(event: LambdaEvent<()>) -> Result<(), Error> {
    let payload = event.payload.;
    Ok(payload)
}

fn main() {}
