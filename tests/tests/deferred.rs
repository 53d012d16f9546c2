//! `xrayprofile::run`: the profile upload starts after the response is
//! posted, and the internal extension's `next` (which lets Lambda freeze the
//! environment) waits for the upload. Timestamps come from the loopback
//! Runtime API (runtime and extension endpoints) and the S3 server.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xrayprofile_tests::function::{Function, Launch};
use xrayprofile_tests::runtime_api::{Happened, Invoke, Outcome, RuntimeApi};
use xrayprofile_tests::s3_server::{Fault, S3Server};
use xrayprofile_tests::{trace_header, trace_root};

const BUCKET: &str = "fixture-profiles";
/// How slow the S3 server is made to be.
const SLOW_S3: Duration = Duration::from_millis(800);

async fn setup(entry: &str) -> (RuntimeApi, S3Server, Function) {
    setup_with(entry, |_| {}).await
}

/// Like [`setup`], with `prepare` applied to the Runtime API before the
/// function starts.
async fn setup_with(
    entry: &str,
    prepare: impl FnOnce(&RuntimeApi),
) -> (RuntimeApi, S3Server, Function) {
    let api = RuntimeApi::start().await.unwrap();
    prepare(&api);
    let s3 = S3Server::start(&[BUCKET]).await.unwrap();
    let function = Launch::new(
        Path::new(env!("CARGO_BIN_EXE_fixture_function")),
        &api.endpoint(),
    )
    .s3(&s3)
    .env("FIXTURE_ENTRY", entry)
    .env("XRAYPROFILE_THRESHOLD", "0")
    .spawn()
    .unwrap();
    (api, s3, function)
}

async fn invoke(api: &RuntimeApi, id: &str, trace: String, payload: Value) -> Outcome {
    let call = api.invoke(Invoke::new(id, Some(trace), payload));
    tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .expect("answered within 60 s")
        .unwrap()
}

fn when(timeline: &[Happened], what: &str, id: Option<&str>) -> Vec<Instant> {
    timeline
        .iter()
        .filter(|h| h.what == what && (id.is_none() || h.request_id.as_deref() == id))
        .map(|h| h.at)
        .collect()
}

/// Waits until the extension has called `event/next` `count` times.
async fn extension_nexts(api: &RuntimeApi, count: usize) -> Vec<Instant> {
    let start = Instant::now();
    loop {
        let nexts = when(&api.timeline(), "extension_next", None);
        if nexts.len() >= count || start.elapsed() > Duration::from_secs(20) {
            return nexts;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_upload_starts_after_the_response_and_holds_the_extension() {
    let (api, s3, function) = setup("xrayprofile").await;
    s3.set_fault(Some(Fault::Delay(SLOW_S3)));
    let id = "5e1ec7ed-0000-4000-8000-000000000001";
    let payload = json!({ "spin_ms": 100 });
    let outcome = invoke(&api, id, trace_header(1, 0), payload.clone()).await;
    assert_eq!(
        outcome,
        Outcome::Response(json!({ "echo": payload, "request_id": id, "checksum": true }))
    );

    let nexts = extension_nexts(&api, 2).await;
    assert_eq!(
        nexts.len(),
        2,
        "the extension registered, took the INVOKE event and asked for the next: {:?}",
        function.logs()
    );
    let timeline = api.timeline();
    let response_at = when(&timeline, "response", Some(id))[0];
    let puts = s3.puts();
    assert_eq!(puts.len(), 1, "{puts:?}");
    let put_at = puts[0].received_at;
    assert!(
        response_at < put_at,
        "the response was posted before the upload started"
    );
    assert!(
        nexts[1] >= put_at + SLOW_S3,
        "the extension waited for the slow upload to finish before its next"
    );
    let key = format!("fixture/{}/{id}.pprof", trace_root(1, 0));
    assert!(
        s3.object(BUCKET, &key).is_some(),
        "the profile was stored: {:?}",
        s3.keys(BUCKET)
    );
    assert_eq!(function.logs_containing("profile written").len(), 1);

    // An unsampled invocation adds no upload and the extension answers it.
    let id2 = "5e1ec7ed-0000-4000-8000-000000000002";
    let outcome = invoke(&api, id2, trace_header(2, 0xffff), json!({})).await;
    assert!(matches!(outcome, Outcome::Response(_)));
    assert_eq!(extension_nexts(&api, 3).await.len(), 3);
    assert_eq!(s3.puts().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_lambda_runtime_uploads_before_the_response() {
    let (api, s3, _function) = setup("lambda_runtime").await;
    s3.set_fault(Some(Fault::Delay(SLOW_S3)));
    let id = "5e1ec7ed-0000-4000-8000-000000000003";
    let outcome = invoke(&api, id, trace_header(3, 0), json!({ "spin_ms": 20 })).await;
    assert!(matches!(outcome, Outcome::Response(_)));
    let timeline = api.timeline();
    let response_at = when(&timeline, "response", Some(id))[0];
    let puts = s3.puts();
    assert_eq!(puts.len(), 1);
    assert!(
        response_at >= puts[0].received_at + SLOW_S3,
        "the fallback uploads inline, so the slow S3 delays the response"
    );
    assert!(
        when(&timeline, "extension_register", None).is_empty(),
        "no extension without xrayprofile::run"
    );
}

/// Waits until the S3 server has received `count` PUTs (its log is written
/// when a request arrives, before any fault applies).
async fn puts_received(s3: &S3Server, count: usize) {
    let start = Instant::now();
    while s3.puts().len() < count && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(s3.puts().len(), count, "the upload reached S3");
}

/// Invokes one sampled invocation and sends SIGTERM while its upload is at
/// the (slow or stuck) S3 server; returns the profile's key.
async fn terminate_during_upload(
    api: &RuntimeApi,
    s3: &S3Server,
    function: &Function,
    n: u32,
) -> String {
    let id = format!("5e1ec7ed-0000-4000-8000-{n:012}");
    let outcome = invoke(api, &id, trace_header(n, 0), json!({ "spin_ms": 50 })).await;
    assert!(matches!(outcome, Outcome::Response(_)), "{outcome:?}");
    puts_received(s3, 1).await;
    function.terminate().unwrap();
    format!("fixture/{}/{id}.pprof", trace_root(n, 0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_a_pending_upload_before_the_process_exits() {
    let (api, s3, mut function) = setup("xrayprofile").await;
    // Slow, but well inside the 300 ms flush: the upload can finish.
    s3.set_fault(Some(Fault::Delay(Duration::from_millis(100))));
    let key = terminate_during_upload(&api, &s3, &function, 4).await;
    let status = function.wait_exit().await;
    assert!(
        status.is_some_and(|s| s.success()),
        "the process exited cleanly after SIGTERM: {status:?} {:?}",
        function.logs()
    );
    let written = function.wait_for_logs("profile written", 1).await;
    assert_eq!(written.len(), 1, "{:?}", function.logs());
    assert!(written[0].contains(&key), "{written:?}");
    assert!(s3.object(BUCKET, &key).is_some(), "{:?}", s3.keys(BUCKET));
    assert!(
        function.logs_containing("dropped").is_empty(),
        "{:?}",
        function.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_s3_stuck_logs_the_dropped_key_and_exits() {
    let (api, s3, mut function) = setup("xrayprofile").await;
    s3.set_fault(Some(Fault::Hang));
    let key = terminate_during_upload(&api, &s3, &function, 5).await;
    let status = function.wait_exit().await;
    assert!(
        status.is_some_and(|s| s.success()),
        "the process exited by itself after SIGTERM although S3 never answered: {status:?} {:?}",
        function.logs()
    );
    let dropped = function.wait_for_logs("dropped", 1).await;
    assert_eq!(
        dropped.len(),
        1,
        "one line names the dropped profiles: {:?}",
        function.logs()
    );
    assert!(
        dropped[0].contains("SIGTERM") && dropped[0].contains(&key),
        "{dropped:?}"
    );
    assert!(function.logs_containing("profile written").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_extension_leaves_the_runtime_serving_with_inline_uploads() {
    let (api, s3, mut function) =
        setup_with("xrayprofile", |api| api.break_extension_next(true)).await;
    let stopped = function.wait_for_logs("extension stopped", 1).await;
    assert_eq!(stopped.len(), 1, "{:?}", function.logs());
    s3.set_fault(Some(Fault::Delay(SLOW_S3)));
    for n in [6, 7] {
        let id = format!("5e1ec7ed-0000-4000-8000-{n:012}");
        let payload = json!({ "spin_ms": 20 });
        let outcome = invoke(&api, &id, trace_header(n, 0), payload.clone()).await;
        assert_eq!(
            outcome,
            Outcome::Response(json!({ "echo": payload, "request_id": id, "checksum": true }))
        );
        let response_at = when(&api.timeline(), "response", Some(&id))[0];
        let put = s3
            .puts()
            .into_iter()
            .find(|p| p.path.contains(&id))
            .expect("the profile was uploaded");
        assert!(
            response_at >= put.received_at + SLOW_S3,
            "without the extension the upload runs inline, before the response"
        );
    }
    assert_eq!(s3.keys(BUCKET).len(), 2);
    assert_eq!(
        function.logs_containing("extension stopped").len(),
        1,
        "logged once"
    );
    assert!(function.is_running());
    assert!(function.logs_containing("panicked").is_empty());
}
