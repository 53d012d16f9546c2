use lambda_runtime::{Error, LambdaEvent};
use xrayprofile::xrayprofile;

const RATE: u16 = 655;

#[xrayprofile(threshold = RATE)]
async fn handler(event: LambdaEvent<()>) -> Result<(), Error> {
    let _ = event;
    Ok(())
}

fn main() {
    let _ = RATE;
}
