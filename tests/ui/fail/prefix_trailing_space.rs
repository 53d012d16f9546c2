use lambda_runtime::{Error, LambdaEvent};
use xrayprofile::xrayprofile;

// The same verdict as XRAYPROFILE_S3_PREFIX="team " and
// ProfileLayer::prefix("team "), which the runtime refuses.
#[xrayprofile(prefix = "team ")]
async fn handler(event: LambdaEvent<()>) -> Result<(), Error> {
    let _ = event;
    Ok(())
}

fn main() {}
