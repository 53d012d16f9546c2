use lambda_runtime::{Error, LambdaEvent};
use xrayprofile::xrayprofile;

#[xrayprofile(max_per_minute = -5)]
async fn handler(event: LambdaEvent<()>) -> Result<(), Error> {
    let _ = event;
    Ok(())
}

fn main() {}
