use lambda_runtime::{Error, LambdaEvent};
use xrayprofile::xrayprofile;

#[xrayprofile(threshold = 655)]
async extern "C" fn handler(event: LambdaEvent<()>) -> Result<(), Error> {
    let _ = event;
    Ok(())
}

fn main() {}
