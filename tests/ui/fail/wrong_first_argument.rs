use lambda_runtime::Error;
use xrayprofile::xrayprofile;

#[xrayprofile(threshold = 655)]
async fn handler(payload: String) -> Result<String, Error> {
    Ok(payload)
}

fn main() {}
