use lambda_runtime::{Error, LambdaEvent};
use xrayprofile::xrayprofile;

#[xrayprofile(region = "eu-west-1")]
async fn handler(event: LambdaEvent<()>) -> Result<(), Error> {
    let _ = event;
    Ok(())
}

fn main() {}
