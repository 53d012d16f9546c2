use lambda_runtime::{Error, LambdaEvent};
use xrayprofile::xrayprofile;

#[xrayprofile(sample_rate = 0.0)]
async fn handler(event: LambdaEvent<()>) -> Result<(), Error> {
    let _ = event;
    Ok(())
}

fn main() {}
