use lambda_runtime::Error;
use xrayprofile::xrayprofile;

#[xrayprofile(threshold = 655)]
async fn handler() -> Result<(), Error> {
    Ok(())
}

fn main() {}
