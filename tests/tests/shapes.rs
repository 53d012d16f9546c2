//! Each accepted handler shape really samples and uploads, on the real
//! lambda_runtime / lambda_http against the loopback Runtime API and S3 server.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use xrayprofile_tests::function::{Function, Launch};
use xrayprofile_tests::runtime_api::{Invoke, Outcome, RuntimeApi};
use xrayprofile_tests::s3_server::S3Server;
use xrayprofile_tests::{pprof_view, trace_header, trace_root};

const BUCKET: &str = "fixture-profiles";

async fn start(binary: &Path) -> (RuntimeApi, S3Server, Function) {
    let api = RuntimeApi::start().await.unwrap();
    let s3 = S3Server::start(&[BUCKET]).await.unwrap();
    let function = Launch::new(binary, &api.endpoint())
        .s3(&s3)
        .spawn()
        .unwrap();
    (api, s3, function)
}

async fn invoke(api: &RuntimeApi, id: &str, seq: u32, payload: Value) -> Outcome {
    let call = api.invoke(Invoke::new(id, Some(trace_header(seq, 0x0042)), payload));
    tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .expect("answered within 60 s")
        .unwrap()
}

/// The profile stored for this invocation names `hot` with most samples under it.
fn assert_profiled(s3: &S3Server, key: &str, hot: &str) {
    let body = s3
        .object(BUCKET, key)
        .unwrap_or_else(|| panic!("no object at {key}; have {:?}", s3.keys(BUCKET)));
    let profile = pprof_view::decode(&body).unwrap();
    let samples = pprof_view::total(&profile, "cpu");
    let top = pprof_view::top_by(&profile, "cpu", usize::MAX);
    let row = top
        .iter()
        .find(|r| r.name.contains(hot))
        .unwrap_or_else(|| panic!("{hot} not in {top:?}"));
    assert!(
        row.cum * 2 >= samples,
        "{hot} has {} of {samples} ns of CPU",
        row.cum
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lambda_runtime_shape_samples_and_uploads() {
    let (api, s3, function) = start(Path::new(env!("CARGO_BIN_EXE_fixture_shapes"))).await;
    let shapes = [
        ("destructured", "destructured_hot"),
        ("generic", "generic_hot"),
        ("method", "method_hot"),
        ("context", "context_hot"),
    ];
    for (seq, (shape, hot)) in (1u32..).zip(shapes) {
        let id = format!("00000000-0000-0000-0000-{seq:012}");
        let outcome = invoke(&api, &id, seq, json!({ "shape": shape, "spin_ms": 150 })).await;
        let Outcome::Response(response) = &outcome else {
            panic!("{shape}: {outcome:?} {:?}", function.logs())
        };
        assert_eq!(response["shape"], shape);
        assert_eq!(response["spun"], true);
        assert_profiled(
            &s3,
            &format!("shapes/{}/{id}.pprof", trace_root(seq, 0x0042)),
            hot,
        );
    }
    let outcome = invoke(
        &api,
        "00000000-0000-0000-0000-000000000099",
        99,
        json!({ "shape": "method" }),
    )
    .await;
    let Outcome::Response(response) = outcome else {
        panic!()
    };
    assert_eq!(response["greeting"], "hello");
    assert_eq!(
        response["payload"],
        json!({ "shape": "method", "seen": true }),
        "the mut argument was mutated"
    );
    assert_eq!(s3.keys(BUCKET).len(), 5);
}

fn http_event(query: &str) -> Value {
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/hello",
        "rawQueryString": query,
        "headers": { "host": "example.com" },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api",
            "domainName": "example.com",
            "domainPrefix": "example",
            "http": { "method": "GET", "path": "/hello", "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1", "userAgent": "test" },
            "requestId": "apigw-request",
            "routeKey": "$default",
            "stage": "$default",
            "time": "25/Nov/2026:16:00:00 +0000",
            "timeEpoch": 1795622400000u64
        },
        "isBase64Encoded": false
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_http_handler_samples_and_uploads() {
    let (api, s3, function) = start(Path::new(env!("CARGO_BIN_EXE_fixture_http"))).await;
    let id = "00000000-0000-0000-0000-0000000000a1";
    let outcome = invoke(&api, id, 7, http_event("name=ada&spin_ms=150")).await;
    let Outcome::Response(response) = &outcome else {
        panic!("{outcome:?} {:?}", function.logs())
    };
    assert_eq!(response["statusCode"], 200, "{response}");
    assert_eq!(response["body"], "hello ada (true)", "{response}");
    assert_profiled(
        &s3,
        &format!("http/{}/{id}.pprof", trace_root(7, 0x0042)),
        "http_hot",
    );
}
