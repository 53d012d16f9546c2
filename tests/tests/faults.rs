//! S3 faults, each on the real `lambda_runtime` and the real `aws-sdk-s3`: the
//! handler's answer is unchanged, exactly one log event says what happened to
//! the profile and what to change, and nothing panics.
//!
//! Faults that a healthy local server cannot produce (403, 500/503, a server
//! that never answers, a slow one) come from the fault hook in front of the
//! real s3s server (`xrayprofile_tests::s3_server::Fault`): a test double for
//! S3's and the network's misbehaviour, not for S3's protocol.

#![allow(clippy::print_stderr)] // the tests print the figures the docs report

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use xrayprofile_tests::function::Launch;
use xrayprofile_tests::harness::{
    BUCKET, Setup, assert_alive_without_panics, expected_response, invoke, request_id, setup,
};
use xrayprofile_tests::runtime_api::Invoke;
use xrayprofile_tests::s3_server::Fault;
use xrayprofile_tests::{ACCOUNT_ID, trace_header};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_fixture_function"))
}

/// One sampled invocation; asserts its answer is the handler's own and
/// returns how long it took and the one upload-failure line it logged.
async fn sampled_invocation_fails_upload_once(setup: &mut Setup, n: u32) -> (Duration, String) {
    let id = request_id(n);
    let payload = json!({ "spin_ms": 20, "n": n });
    let before = setup
        .function
        .logs_containing("profile upload failed")
        .len();
    let started = Instant::now();
    let outcome = invoke(&setup.api, &id, Some(trace_header(n, 0)), payload.clone()).await;
    let took = started.elapsed();
    assert_eq!(
        outcome,
        expected_response(&id, &payload),
        "the handler's answer, unchanged"
    );
    let failures = setup
        .function
        .wait_for_logs("profile upload failed", before + 1)
        .await;
    assert_eq!(
        failures.len(),
        before + 1,
        "one event per failed upload: {:?}",
        setup.function.logs()
    );
    assert!(
        failures[before].contains("handler result unaffected"),
        "{}",
        failures[before]
    );
    assert!(setup.function.logs_containing("profile written").is_empty());
    assert_alive_without_panics(&mut setup.function);
    (took, failures[before].clone())
}

/// The function keeps serving, and profiling, once S3 is healthy again.
async fn recovers(setup: &mut Setup, n: u32) {
    setup.s3.set_fault(None);
    let id = request_id(n);
    let payload = json!({ "spin_ms": 20 });
    let outcome = invoke(&setup.api, &id, Some(trace_header(n, 0)), payload.clone()).await;
    assert_eq!(outcome, expected_response(&id, &payload));
    let written = setup.function.wait_for_logs("profile written", 1).await;
    assert_eq!(written.len(), 1, "{:?}", setup.function.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_connection_refused() {
    // A port that was bound and released: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut setup = setup(binary(), |l: Launch<'_>| l.s3_endpoint(&endpoint)).await;
    let (took, line) = sampled_invocation_fails_upload_once(&mut setup, 1).await;
    eprintln!(
        "connection refused: answered in {} ms: {line}",
        took.as_millis()
    );
    assert!(line.contains("could not be reached"), "{line}");
    assert!(
        line.contains("AWS_ENDPOINT_URL_S3"),
        "names what to check: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_dns_failure() {
    // `.invalid` never resolves (RFC 6761).
    let mut setup = setup(binary(), |l: Launch<'_>| {
        l.s3_endpoint("http://s3.xrayprofile-test.invalid:9000")
    })
    .await;
    let (took, line) = sampled_invocation_fails_upload_once(&mut setup, 1).await;
    eprintln!("DNS failure: answered in {} ms: {line}", took.as_millis());
    // A resolver that answers says so; one that is unreachable is cut by
    // the connect timeout or the upload's budget. All three name the fix.
    assert!(
        line.contains("could not be reached")
            || line.contains("timed out")
            || line.contains("did not finish within"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_access_denied_names_both_causes_and_their_fixes() {
    let mut setup = setup(binary(), |l| l).await;
    setup.s3.set_fault(Some(Fault::Status {
        status: 403,
        code: "AccessDenied",
    }));
    let (took, line) = sampled_invocation_fails_upload_once(&mut setup, 1).await;
    eprintln!(
        "403 AccessDenied: answered in {} ms: {line}",
        took.as_millis()
    );
    for needle in [
        "AccessDenied",
        "s3:PutObject",
        "ExpectedBucketOwner",
        ACCOUNT_ID,
        BUCKET,
    ] {
        assert!(line.contains(needle), "{needle:?} missing: {line}");
    }
    assert_eq!(setup.s3.puts().len(), 1, "a 403 is not retried");
    recovers(&mut setup, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_owned_by_another_account_is_refused_and_logged_as_such() {
    let mut setup = setup(binary(), |l| l).await;
    // As if someone else had created our (predictable) bucket name first.
    setup
        .s3
        .set_fault(Some(Fault::BucketOwnedBy("999999999999".to_owned())));
    let (took, line) = sampled_invocation_fails_upload_once(&mut setup, 1).await;
    eprintln!(
        "bucket owned by another account: answered in {} ms: {line}",
        took.as_millis()
    );
    let puts = setup.s3.puts();
    assert_eq!(puts.len(), 1);
    assert_eq!(
        puts[0].header("x-amz-expected-bucket-owner"),
        Some(ACCOUNT_ID)
    );
    assert!(
        setup.s3.keys(BUCKET).is_empty(),
        "the other account's bucket got nothing"
    );
    assert!(
        line.contains(&format!(
            "not owned by this function's account {ACCOUNT_ID}"
        )),
        "{line}"
    );
    assert!(
        line.contains("XRAYPROFILE_S3_BUCKET"),
        "names the fix: {line}"
    );
    // The same check passes when the bucket is ours.
    setup
        .s3
        .set_fault(Some(Fault::BucketOwnedBy(ACCOUNT_ID.to_owned())));
    let id = request_id(2);
    let payload = json!({ "spin_ms": 20 });
    let outcome = invoke(&setup.api, &id, Some(trace_header(2, 0)), payload.clone()).await;
    assert_eq!(outcome, expected_response(&id, &payload));
    assert_eq!(setup.s3.keys(BUCKET).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_server_errors_are_retried_a_bounded_number_of_times() {
    let mut setup = setup(binary(), |l| l).await;
    let cases = [
        (500, "InternalError"),
        (503, "ServiceUnavailable"),
        (503, "SlowDown"),
    ];
    for (n, (status, code)) in cases.into_iter().enumerate() {
        setup.s3.set_fault(Some(Fault::Status { status, code }));
        let before = setup.s3.puts().len();
        let (took, line) = sampled_invocation_fails_upload_once(&mut setup, n as u32).await;
        let attempts = setup.s3.puts().len() - before;
        eprintln!(
            "{status} {code}: {attempts} attempts, answered in {} ms: {line}",
            took.as_millis()
        );
        assert_eq!(attempts, 3, "the SDK retries, and stops at 3 attempts");
        assert!(line.contains(code), "{line}");
        assert!(line.contains("3 attempts"), "{line}");
    }
    recovers(&mut setup, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_accepts_and_never_answers_costs_at_most_the_budget() {
    let mut setup = setup(binary(), |l| l).await;
    setup.s3.set_fault(Some(Fault::Hang));
    let (took, line) = sampled_invocation_fails_upload_once(&mut setup, 1).await;
    let attempts = setup.s3.puts().len();
    eprintln!(
        "server never answers: {attempts} attempts, answered in {} ms: {line}",
        took.as_millis()
    );
    assert!(
        line.contains("did not finish within its 5000 ms budget")
            || line.contains("did not answer within"),
        "{line}"
    );
    recovers(&mut setup, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_would_outlive_the_deadline_is_abandoned_before_it() {
    let mut setup = setup(binary(), |l| l).await;
    // S3 would answer long after the invocation's deadline.
    setup
        .s3
        .set_fault(Some(Fault::Delay(Duration::from_secs(30))));
    let cases = [(1, 2_000u64), (2, 250)];
    for (n, timeout_ms) in cases {
        let id = request_id(n);
        let payload = json!({ "spin_ms": 20, "n": n });
        let mut call = Invoke::new(&id, Some(trace_header(n, 0)), payload.clone());
        call.timeout = Duration::from_millis(timeout_ms);
        let answer = tokio::time::timeout(Duration::from_secs(60), setup.api.invoke_timed(call))
            .await
            .expect("answered")
            .expect("the function runs");
        assert_eq!(answer.outcome, expected_response(&id, &payload));
        let slack = match answer.slack() {
            Ok(before) => format!("{} ms before the deadline", before.as_millis()),
            Err(after) => format!("{} ms AFTER the deadline", after.as_millis()),
        };
        setup.function.wait_for_logs(&id, 2).await;
        let line = setup
            .function
            .logs()
            .into_iter()
            .filter(|l| l.contains(&id) || l.contains("profile upload failed"))
            .rfind(|l| l.contains("budget") || l.contains("deadline is too close"))
            .unwrap_or_default();
        eprintln!("deadline {timeout_ms} ms: answered {slack}: {line}");
        if timeout_ms > 300 {
            // The budget is the time to the deadline less the 300 ms margin.
            let budget_ms: u64 = line
                .split("within its ")
                .nth(1)
                .and_then(|rest| rest.split(" ms").next())
                .and_then(|ms| ms.parse().ok())
                .unwrap_or(u64::MAX);
            assert!(budget_ms <= timeout_ms - 300, "{line}");
        } else {
            assert!(line.contains("deadline is too close"), "{line}");
            assert!(line.contains("raise the function timeout"), "{line}");
        }
    }
    assert_alive_without_panics(&mut setup.function);
}
