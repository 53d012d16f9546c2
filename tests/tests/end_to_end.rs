//! The whole path on real parts: the fixture function (real `lambda_runtime`,
//! real `aws-sdk-s3`) polls a Runtime API on loopback and uploads to an
//! S3-compatible server on loopback; the tests read what the server received.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use xrayprofile_tests::function::{Function, Launch};
use xrayprofile_tests::runtime_api::{Invoke, Outcome, RuntimeApi};
use xrayprofile_tests::s3_server::S3Server;
use xrayprofile_tests::{ACCOUNT_ID, pprof_view, trace_header, trace_root};

const BUCKET: &str = "fixture-profiles";
const SAMPLED_KEY: u16 = 0x0000;
const UNSAMPLED_KEY: u16 = 0xffff;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_fixture_function"))
}

struct Setup {
    api: RuntimeApi,
    s3: S3Server,
    function: Function,
}

async fn setup(configure: impl FnOnce(Launch<'_>) -> Launch<'_>) -> Setup {
    let api = RuntimeApi::start().await.unwrap();
    let s3 = S3Server::start(&[BUCKET]).await.unwrap();
    let launch = configure(Launch::new(binary(), &api.endpoint()).s3(&s3));
    let function = launch.spawn().unwrap();
    Setup { api, s3, function }
}

/// What the fixture handler answers to `payload`; any change made by
/// xrayprofile would break equality with it.
fn expected_response(request_id: &str, payload: &Value) -> Outcome {
    Outcome::Response(json!({ "echo": payload, "request_id": request_id, "checksum": true }))
}

async fn invoke(setup: &Setup, request_id: &str, trace: Option<String>, payload: Value) -> Outcome {
    let call = setup.api.invoke(Invoke::new(request_id, trace, payload));
    tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .expect("the function answered within 60 s")
        .unwrap()
}

fn request_id(n: u32) -> String {
    format!("8476a536-e9f4-11e8-9739-{n:012x}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_invocation_uploads_one_profile_with_acl_owner_and_metadata() {
    let setup = setup(|l| l).await;
    let id = request_id(1);
    let payload = json!({ "spin_ms": 300 });
    let outcome = invoke(
        &setup,
        &id,
        Some(trace_header(1, SAMPLED_KEY)),
        payload.clone(),
    )
    .await;
    assert_eq!(outcome, expected_response(&id, &payload));

    let key = format!("fixture/{}/{id}.pprof", trace_root(1, SAMPLED_KEY));
    assert_eq!(
        setup.s3.keys(BUCKET),
        std::slice::from_ref(&key),
        "exactly one object, at the documented key"
    );

    let puts = setup.s3.puts();
    assert_eq!(puts.len(), 1, "{puts:?}");
    let put = &puts[0];
    assert_eq!(put.path, format!("/{BUCKET}/{key}"));
    assert_eq!(put.header("x-amz-acl"), Some("bucket-owner-full-control"));
    assert_eq!(put.header("x-amz-expected-bucket-owner"), Some(ACCOUNT_ID));
    assert_eq!(
        put.header("x-amz-meta-trace-id"),
        Some(trace_root(1, SAMPLED_KEY).as_str())
    );
    assert_eq!(put.header("x-amz-meta-request-id"), Some(id.as_str()));
    assert_eq!(
        put.header("x-amz-meta-function-name"),
        Some("fixture-function")
    );
    assert_eq!(put.header("x-amz-meta-function-version"), Some("$LATEST"));
    assert_eq!(put.header("x-amz-meta-outcome"), Some("ok"));
    let duration_ms: u64 = put
        .header("x-amz-meta-duration-ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        duration_ms >= 300,
        "the profile spans the 300 ms body, got {duration_ms} ms"
    );
    let samples: i64 = put.header("x-amz-meta-samples").unwrap().parse().unwrap();
    assert!(
        put.header("authorization")
            .is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256")),
        "signed with SigV4"
    );

    let profile = pprof_view::decode(&setup.s3.object(BUCKET, &key).unwrap()).unwrap();
    assert_eq!(pprof_view::total_samples(&profile), samples);
    assert!(
        samples >= 10,
        "300 ms at 99 Hz gives about 30 samples, got {samples}"
    );
    let names = pprof_view::function_names(&profile);
    assert!(
        names.iter().any(|n| n.contains("fixture_hot_loop")),
        "the handler's hot function is named: {names:?}"
    );
    // By CPU time and by wall time (the default view of a wall-clock
    // profile, which is what this handler's default `mode` writes).
    for ty in ["cpu", "wall"] {
        let top = pprof_view::top_by(&profile, ty, 40);
        let hot = top
            .iter()
            .find(|r| r.name.contains("fixture_hot_loop"))
            .unwrap();
        assert!(
            hot.cum * 2 >= pprof_view::total(&profile, ty),
            "most {ty} time is in the hot loop: {top:?}"
        );
    }

    let comments = pprof_view::comments(&profile);
    assert!(
        comments.contains(&format!("trace_id={}", trace_root(1, SAMPLED_KEY))),
        "{comments:?}"
    );
    assert!(
        comments.contains(&format!("request_id={id}")),
        "{comments:?}"
    );
    assert!(
        comments.contains(&"function=fixture-function:$LATEST".to_owned()),
        "{comments:?}"
    );
    for labels in pprof_view::sample_labels(&profile) {
        assert!(
            labels.contains(&("trace_id".to_owned(), trace_root(1, SAMPLED_KEY))),
            "{labels:?}"
        );
        assert!(
            labels.contains(&("request_id".to_owned(), id.clone())),
            "{labels:?}"
        );
    }
    assert_eq!(
        setup
            .function
            .wait_for_logs("profile written", 1)
            .await
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_invocation_uploads_nothing() {
    let setup = setup(|l| l).await;
    let payload = json!({ "spin_ms": 20 });
    for n in 0..5 {
        let id = request_id(n);
        // 656 is the first key above the attribute's threshold of 655.
        let key = if n % 2 == 0 { UNSAMPLED_KEY } else { 656 };
        let outcome = invoke(&setup, &id, Some(trace_header(n, key)), payload.clone()).await;
        assert_eq!(outcome, expected_response(&id, &payload));
    }
    assert!(
        setup.s3.requests().is_empty(),
        "no request reached S3: {:?}",
        setup.s3.requests()
    );
    assert_eq!(
        setup
            .function
            .wait_for_logs("not profiled: trace key above threshold", 5)
            .await
            .len(),
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_malformed_trace_header_returns_response_unchanged() {
    let setup = setup(|l| l).await;
    let headers: [Option<&str>; 8] = [
        None,
        Some(""),
        Some("Root="),
        Some("Parent=53995c3f42cd8ad8;Sampled=1"),
        Some("Root=1-5759e988-bd862e3fe1be46a9942701"),
        Some("Root=1-5759e988-bd862e3fe1be46a99427000G"),
        Some("Root=1-5759e988-bd862e3fe1be46a99427/../0"),
        Some(";;==;Root"),
    ];
    for (n, header) in headers.iter().enumerate() {
        let id = request_id(n as u32);
        let payload = json!({ "spin_ms": 1, "n": n });
        let outcome = invoke(&setup, &id, header.map(str::to_owned), payload.clone()).await;
        assert_eq!(
            outcome,
            expected_response(&id, &payload),
            "header {header:?}"
        );
    }
    assert!(setup.s3.requests().is_empty());
    assert!(
        setup.function.logs_containing("panicked").is_empty(),
        "{:?}",
        setup.function.logs()
    );
    assert_eq!(
        setup
            .function
            .wait_for_logs("not profiled", headers.len())
            .await
            .len(),
        headers.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_s3_server_returns_response_unchanged() {
    let setup = setup(|l| l).await;
    setup.s3.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let id = request_id(7);
    let payload = json!({ "spin_ms": 50 });
    let outcome = invoke(
        &setup,
        &id,
        Some(trace_header(7, SAMPLED_KEY)),
        payload.clone(),
    )
    .await;
    assert_eq!(outcome, expected_response(&id, &payload));
    let failures = setup
        .function
        .wait_for_logs("profile upload failed", 1)
        .await;
    assert_eq!(
        failures.len(),
        1,
        "one actionable log event: {:?}",
        setup.function.logs()
    );
    assert!(
        failures[0].contains("handler result unaffected"),
        "{failures:?}"
    );
    assert!(setup.function.logs_containing("panicked").is_empty());

    // The function keeps serving.
    let id = request_id(8);
    let outcome = invoke(
        &setup,
        &id,
        Some(trace_header(8, UNSAMPLED_KEY)),
        payload.clone(),
    )
    .await;
    assert_eq!(outcome, expected_response(&id, &payload));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_error_is_profiled_and_returned_unchanged() {
    let setup = setup(|l| l).await;
    let id = request_id(9);
    let outcome = invoke(
        &setup,
        &id,
        Some(trace_header(9, SAMPLED_KEY)),
        json!({ "spin_ms": 50, "fail": true }),
    )
    .await;
    let Outcome::Error(error) = outcome else {
        panic!("expected an error outcome, got {outcome:?}")
    };
    assert_eq!(
        error["errorMessage"], "fixture handler failed on purpose",
        "{error}"
    );
    let puts = setup.s3.puts();
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].header("x-amz-meta-outcome"), Some("error"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_handler_is_profiled_and_releases_the_profiler() {
    let mut setup = setup(|l| l).await;
    // Panics and normal invocations alternate, all sampled: after each
    // panic the profiler must be free again.
    for round in 0..3u32 {
        let outcome = invoke(
            &setup,
            &request_id(2 * round),
            Some(trace_header(2 * round, SAMPLED_KEY)),
            json!({ "spin_ms": 20, "panic": true }),
        )
        .await;
        let Outcome::Error(error) = outcome else {
            panic!("lambda_runtime reports the panic as an error, got {outcome:?}")
        };
        assert!(
            error
                .to_string()
                .contains("fixture handler panicked on purpose"),
            "{error}"
        );

        let id = request_id(2 * round + 1);
        let payload = json!({ "spin_ms": 150 });
        let outcome = invoke(
            &setup,
            &id,
            Some(trace_header(2 * round + 1, SAMPLED_KEY)),
            payload.clone(),
        )
        .await;
        assert_eq!(outcome, expected_response(&id, &payload));
        let key = format!(
            "fixture/{}/{id}.pprof",
            trace_root(2 * round + 1, SAMPLED_KEY)
        );
        let profile = pprof_view::decode(&setup.s3.object(BUCKET, &key).unwrap()).unwrap();
        assert!(
            pprof_view::total_samples(&profile) > 0,
            "the invocation after a panic is profiled normally"
        );
    }
    // The panicked invocations are profiled too, up to the panic, and say so.
    let puts = setup.s3.puts();
    assert_eq!(puts.len(), 6, "every sampled invocation, panicked or not");
    let panicked = puts
        .iter()
        .filter(|p| p.header("x-amz-meta-outcome") == Some("panic"))
        .count();
    assert_eq!(panicked, 3);
    assert!(
        setup
            .function
            .logs_containing("profile not started")
            .is_empty(),
        "the profiler was never left running: {:?}",
        setup.function.logs()
    );
    assert!(setup.function.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_overrides_the_attribute() {
    // Threshold 0 from the env beats the attribute's 655; bucket and prefix too.
    let setup = setup(|l| {
        l.env("XRAYPROFILE_THRESHOLD", "0")
            .env("XRAYPROFILE_S3_BUCKET", "env-bucket")
            .env("XRAYPROFILE_S3_PREFIX", "env")
    })
    .await;
    std::fs::create_dir_all(setup.s3.bucket_dir("env-bucket")).unwrap();
    let payload = json!({ "spin_ms": 20 });
    for (n, key) in [(1, 1u16), (2, 0)] {
        let id = request_id(n);
        let outcome = invoke(&setup, &id, Some(trace_header(n, key)), payload.clone()).await;
        assert_eq!(outcome, expected_response(&id, &payload));
    }
    assert_eq!(
        setup.s3.keys("env-bucket"),
        [format!("env/{}/{}.pprof", trace_root(2, 0), request_id(2))]
    );
    assert!(setup.s3.keys(BUCKET).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_switch_and_bad_values() {
    let setup = setup(|l| {
        l.env("XRAYPROFILE_ENABLED", "false")
            .env("XRAYPROFILE_THRESHOLD", "abc")
    })
    .await;
    let payload = json!({ "spin_ms": 5 });
    for n in 0..3 {
        let id = request_id(n);
        let outcome = invoke(
            &setup,
            &id,
            Some(trace_header(n, SAMPLED_KEY)),
            payload.clone(),
        )
        .await;
        assert_eq!(outcome, expected_response(&id, &payload));
    }
    assert!(setup.s3.requests().is_empty());
    let invalid = setup
        .function
        .wait_for_logs("ignoring invalid XRAYPROFILE_THRESHOLD", 1)
        .await;
    assert_eq!(
        invalid.len(),
        1,
        "logged once, not per invocation: {:?}",
        setup.function.logs()
    );
    assert!(
        invalid[0].contains("0 to 65535"),
        "the log says the fix: {invalid:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_dir_writes_the_same_file_locally() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().to_str().unwrap().to_owned();
    let setup = setup(|l| l.env("XRAYPROFILE_OUTPUT_DIR", &dir_path)).await;
    let id = request_id(3);
    let payload = json!({ "spin_ms": 100 });
    let outcome = invoke(
        &setup,
        &id,
        Some(trace_header(3, SAMPLED_KEY)),
        payload.clone(),
    )
    .await;
    assert_eq!(outcome, expected_response(&id, &payload));
    let path = dir
        .path()
        .join(format!("fixture/{}/{id}.pprof", trace_root(3, SAMPLED_KEY)));
    let profile = pprof_view::decode(&std::fs::read(&path).unwrap()).unwrap();
    let names = pprof_view::function_names(&profile);
    assert!(
        names.iter().any(|n| n.contains("fixture_hot_loop")),
        "the 100 ms spin is named: {names:?}; {:?} DEBUG {:?} {:?}",
        pprof_view::comments(&profile),
        profile.sample,
        profile.location
    );
    assert!(setup.s3.requests().is_empty(), "nothing went to S3");
}

/// `go tool pprof` itself reads the uploaded object. CI installs Go
/// (`.ci/run`) and sets `XRAYPROFILE_REQUIRE_GO=1`, so there this cannot pass
/// by skipping; on a machine without Go it says so and passes.
#[allow(clippy::print_stderr)] // tells the person running the tests why it skipped
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_tool_pprof_opens_the_uploaded_profile() {
    if !pprof_view::go_available() {
        eprintln!("skipped: `go` is not installed; .ci/run installs it");
        return;
    }
    let setup = setup(|l| l).await;
    let id = request_id(11);
    let payload = json!({ "spin_ms": 300 });
    let outcome = invoke(
        &setup,
        &id,
        Some(trace_header(11, SAMPLED_KEY)),
        payload.clone(),
    )
    .await;
    assert_eq!(outcome, expected_response(&id, &payload));
    let key = format!("fixture/{}/{id}.pprof", trace_root(11, SAMPLED_KEY));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("profile.pprof");
    std::fs::write(&file, setup.s3.object(BUCKET, &key).unwrap()).unwrap();

    let run = |flags: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = flags.iter().map(|f| f.as_ref()).collect();
        args.push(file.as_os_str());
        pprof_view::go_tool_pprof(&args)
    };
    // The default view is wall time; `-sample_index=cpu` is the CPU view.
    let top = run(&["-top"]);
    assert!(top.contains("Type: wall"), "{top}");
    assert!(top.contains("fixture_hot_loop"), "{top}");
    assert!(top.contains("[invocation future]"), "{top}");
    let cpu = run(&["-sample_index=cpu", "-top"]);
    assert!(cpu.contains("Type: cpu"), "{cpu}");
    assert!(cpu.contains("fixture_hot_loop"), "{cpu}");
    let comments = run(&["-comments"]);
    assert!(comments.contains(&format!("request_id={id}")), "{comments}");
    assert!(
        comments.contains(&format!("trace_id={}", trace_root(11, SAMPLED_KEY))),
        "{comments}"
    );
}
