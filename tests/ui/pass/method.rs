//! Methods in `impl` blocks, `pub(crate)`, docs and other attributes kept.
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use xrayprofile::xrayprofile;

struct Service {
    greeting: String,
}

impl Service {
    /// Greets the caller.
    #[xrayprofile(threshold = 655)]
    #[allow(clippy::unused_async)]
    pub(crate) async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, Error> {
        Ok(serde_json::json!({ "greeting": self.greeting, "payload": event.payload }))
    }

    #[xrayprofile(threshold = 655)]
    async fn consume(self, event: LambdaEvent<Value>) -> Result<Value, Error> {
        Ok(serde_json::json!({ "greeting": self.greeting, "payload": event.payload }))
    }
}

fn main() {
    let service = Box::leak(Box::new(Service { greeting: "hi".into() }));
    let _ = lambda_runtime::run(service_fn(|e| service.handle(e)));
    let _ = lambda_runtime::run(service_fn(|e| Service { greeting: "bye".into() }.consume(e)));
}
