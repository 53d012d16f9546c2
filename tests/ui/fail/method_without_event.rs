use lambda_runtime::Error;
use xrayprofile::xrayprofile;

struct Service;

impl Service {
    #[xrayprofile(threshold = 655)]
    async fn handle(&self) -> Result<(), Error> {
        Ok(())
    }
}

fn main() {}
