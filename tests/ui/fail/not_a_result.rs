use lambda_runtime::LambdaEvent;
use xrayprofile::xrayprofile;

#[xrayprofile(threshold = 655)]
async fn handler(event: LambdaEvent<()>) -> u32 {
    let _ = event;
    7
}

fn main() {}
