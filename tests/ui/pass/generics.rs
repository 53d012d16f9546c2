//! Generic parameters with a where-clause, lifetimes, `impl Trait` in argument
//! and return position, and a shared client passed after the event.
use std::fmt::Debug;

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde::de::DeserializeOwned;
use serde_json::Value;
use xrayprofile::xrayprofile;

struct Client {
    name: String,
}

#[xrayprofile(threshold = 655)]
async fn generic<T>(event: LambdaEvent<T>, client: &Client) -> Result<String, Error>
where
    T: DeserializeOwned + Debug + Send,
{
    Ok(format!("{:?} via {}", event.payload, client.name))
}

#[xrayprofile(threshold = 655)]
async fn with_lifetime<'a>(event: LambdaEvent<Value>, prefix: &'a str) -> Result<String, Error> {
    Ok(format!("{prefix}{}", event.payload))
}

#[xrayprofile(threshold = 655)]
async fn impl_trait_arg(event: impl xrayprofile::Invocation, label: impl AsRef<str>) -> Result<String, Error> {
    let _ = &event;
    Ok(label.as_ref().to_owned())
}

#[xrayprofile(threshold = 655)]
async fn impl_trait_return(event: LambdaEvent<Value>) -> Result<impl serde::Serialize, Error> {
    Ok(event.payload)
}

fn main() {
    let client = Client { name: "s3".into() };
    let client = &client;
    let _ = lambda_runtime::run(service_fn(move |e: LambdaEvent<Value>| generic(e, client)));
    let _ = lambda_runtime::run(service_fn(|e| with_lifetime(e, "x")));
    let _ = lambda_runtime::run(service_fn(|e: LambdaEvent<Value>| impl_trait_arg(e, "label")));
    let _ = lambda_runtime::run(service_fn(impl_trait_return));
}
