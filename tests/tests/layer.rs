//! `xrayprofile::ProfileLayer` on lambda_runtime's `Runtime`: a sampled
//! invocation's profile is uploaded after its response is posted and before
//! the runtime asks for the next event; an unsampled one uploads nothing.
//! Timestamps come from the loopback Runtime API and the S3 server.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use xrayprofile_tests::harness::{self, BUCKET, Setup, expected_response};
use xrayprofile_tests::runtime_api::Happened;
use xrayprofile_tests::s3_server::Fault;
use xrayprofile_tests::{pprof_view, trace_header, trace_root};

/// How slow the S3 server is made, so the upload is still running when the
/// response is posted if it ran first.
const SLOW_S3: Duration = Duration::from_millis(500);

async fn setup() -> Setup {
    // No XRAYPROFILE_* overrides: the layer's own settings (threshold 655,
    // bucket `fixture-profiles`, prefix `fixture`) decide.
    harness::setup(
        Path::new(env!("CARGO_BIN_EXE_fixture_function")),
        |launch| launch.env("FIXTURE_ENTRY", "layer"),
    )
    .await
}

fn when(timeline: &[Happened], what: &str) -> Vec<Instant> {
    timeline
        .iter()
        .filter(|h| h.what == what)
        .map(|h| h.at)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_uploads_a_sampled_profile_after_the_response() {
    let mut setup = setup().await;
    setup.s3.set_fault(Some(Fault::Delay(SLOW_S3)));
    let id = harness::request_id(1);
    let payload = json!({ "spin_ms": 150 });
    let outcome = harness::invoke(&setup.api, &id, Some(trace_header(1, 0)), payload.clone()).await;
    assert_eq!(outcome, expected_response(&id, &payload));

    // The runtime asks for the next event only after the layered future,
    // upload included, has ended.
    setup.function.wait_for_logs("profile written", 1).await;
    let timeline = setup.api.timeline();
    let responses = when(&timeline, "response");
    let nexts = when(&timeline, "runtime_next");
    let puts = setup.s3.puts();
    assert_eq!(responses.len(), 1, "{timeline:?}");
    assert_eq!(puts.len(), 1, "{puts:?}");
    let put_at = puts[0].received_at;
    assert!(
        responses[0] < put_at,
        "the response was posted before the upload started"
    );
    let next_after_response: Vec<&Instant> = nexts.iter().filter(|n| **n > responses[0]).collect();
    assert!(
        next_after_response.iter().all(|n| **n >= put_at + SLOW_S3),
        "the runtime asked for the next event only after the slow upload ended: {timeline:?}"
    );
    assert!(
        timeline.iter().all(|h| !h.what.starts_with("extension")),
        "no extension is involved"
    );

    let key = format!("fixture/{}/{id}.pprof", trace_root(1, 0));
    let object = setup.s3.object(BUCKET, &key);
    assert!(
        object.is_some(),
        "stored at {key}: {:?}",
        setup.s3.keys(BUCKET)
    );
    let profile = pprof_view::decode(&object.unwrap_or_default()).unwrap();
    assert!(pprof_view::total_samples(&profile) > 0);
    assert!(
        pprof_view::function_names(&profile)
            .iter()
            .any(|name| name.contains("fixture_hot_loop")),
        "the handler's work is in the profile"
    );
    let comments = pprof_view::comments(&profile);
    for expected in [
        format!("trace_id={}", trace_root(1, 0)),
        format!("request_id={id}"),
        "function=fixture-function:$LATEST".to_owned(),
    ] {
        assert!(comments.contains(&expected), "{expected}: {comments:?}");
    }
    for labels in pprof_view::sample_labels(&profile) {
        assert!(
            labels.contains(&("trace_id".to_owned(), trace_root(1, 0))),
            "{labels:?}"
        );
        assert!(
            labels.contains(&("request_id".to_owned(), id.clone())),
            "{labels:?}"
        );
    }
    assert_eq!(puts[0].header("x-amz-meta-request-id"), Some(id.as_str()));
    assert_eq!(
        puts[0].header("x-amz-expected-bucket-owner"),
        Some(xrayprofile_tests::ACCOUNT_ID)
    );
    harness::assert_alive_without_panics(&mut setup.function);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_uploads_nothing_for_an_unsampled_invocation() {
    let mut setup = setup().await;
    let payload = json!({ "spin_ms": 20 });
    for (n, trace) in [(2, Some(trace_header(2, 0xffff))), (3, None)] {
        let id = harness::request_id(n);
        let outcome = harness::invoke(&setup.api, &id, trace, payload.clone()).await;
        assert_eq!(outcome, expected_response(&id, &payload));
    }
    // The sampled invocation after them is the proof that the process had
    // time to upload, and that nothing else was.
    let id = harness::request_id(4);
    let outcome =
        harness::invoke(&setup.api, &id, Some(trace_header(4, 655)), payload.clone()).await;
    assert_eq!(outcome, expected_response(&id, &payload));
    setup.function.wait_for_logs("profile written", 1).await;
    assert_eq!(
        setup.s3.keys(BUCKET),
        vec![format!("fixture/{}/{id}.pprof", trace_root(4, 655))]
    );
    assert_eq!(setup.s3.puts().len(), 1);
    harness::assert_alive_without_panics(&mut setup.function);
}
