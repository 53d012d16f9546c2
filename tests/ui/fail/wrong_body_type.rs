use lambda_runtime::{Error, LambdaEvent};
use xrayprofile::xrayprofile;

#[xrayprofile(threshold = 655)]
async fn handler(event: LambdaEvent<()>) -> Result<u32, Error> {
    let _ = event;
    Ok("not a number")
}

fn main() {}
