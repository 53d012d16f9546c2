use lambda_runtime::{Error, LambdaEvent};
use xrayprofile::xrayprofile;

#[xrayprofile(bucket = "192.168.0.1")]
async fn handler(event: LambdaEvent<()>) -> Result<(), Error> {
    let _ = event;
    Ok(())
}

fn main() {}
