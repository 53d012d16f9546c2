//! Wall-clock profiles of real invocations: the fixture runs the real
//! lambda_runtime against the loopback Runtime API, awaits a slow HTTP
//! server on loopback, a `futures` oneshot and tokio timers, and uploads to
//! the loopback S3 server. The tests read the stored profiles back.

use std::path::Path;
use std::time::Duration;

use pprof::protos::Profile;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xrayprofile_tests::harness::{BUCKET, Setup, invoke, request_id, setup};
use xrayprofile_tests::pprof_view::{Row, rows};
use xrayprofile_tests::runtime_api::Outcome;
use xrayprofile_tests::{pprof_view, trace_header, trace_root};

const SAMPLED: u16 = 0x0042;

fn fixture() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_fixture_wall"))
}

/// A loopback HTTP server that answers every request after `delay`.
async fn slow_http_server(delay: Duration) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0_u8; 1024];
                let _ = socket.read(&mut request).await;
                tokio::time::sleep(delay).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
                    )
                    .await;
            });
        }
    });
    port
}

/// Invokes with a sampled trace and returns the handler's answer and the
/// stored profile.
async fn profiled(setup: &Setup, n: u32, payload: Value) -> (Outcome, Profile, Vec<u8>) {
    let id = request_id(n);
    let outcome = invoke(&setup.api, &id, Some(trace_header(n, SAMPLED)), payload).await;
    let key = format!("wall/{}/{id}.pprof", trace_root(n, SAMPLED));
    let body = setup
        .s3
        .object(BUCKET, &key)
        .unwrap_or_else(|| panic!("no profile at {key}: {:?}", setup.s3.keys(BUCKET)));
    (outcome, pprof_view::decode(&body).unwrap(), body)
}

/// Wall nanoseconds of the samples in `state` with a frame containing `name`.
fn wall_under(rows: &[Row], name: &str, state: &str) -> i64 {
    rows.iter()
        .filter(|r| r.state == state && r.names.iter().any(|n| n.contains(name)))
        .map(|r| r.wall)
        .sum()
}

/// The `elapsed=` figure of the profile's `wall:` comment, in ns.
fn elapsed_comment(profile: &Profile) -> i64 {
    let comments = pprof_view::comments(profile);
    let wall = comments
        .iter()
        .find(|c| c.starts_with("wall: "))
        .unwrap_or_else(|| panic!("no wall comment: {comments:?}"));
    let ms: f64 = wall
        .split_whitespace()
        .find_map(|f| f.strip_prefix("elapsed="))
        .and_then(|v| v.strip_suffix("ms"))
        .unwrap()
        .parse()
        .unwrap();
    (ms * 1e6) as i64
}

fn answered(outcome: &Outcome, field: &str) -> i64 {
    let Outcome::Response(answer) = outcome else {
        panic!("the handler answered: {outcome:?}")
    };
    answer[field]
        .as_i64()
        .unwrap_or_else(|| panic!("{field} in {answer}"))
}

fn within(actual: i64, expected: i64, percent: i64) -> bool {
    (actual - expected).abs() * 100 <= expected * percent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_await_on_a_slow_http_server_dominates_the_wall_view() {
    let setup = setup(fixture(), |l| l).await;
    let port = slow_http_server(Duration::from_millis(400)).await;
    let payload = json!({ "case": "http", "port": port, "cpu_ms": 100 });
    let (outcome, profile, body) = profiled(&setup, 1, payload).await;
    let fetch_ns = answered(&outcome, "fetch_ns");
    let rows = rows(&profile);

    let total: i64 = rows.iter().map(|r| r.wall).sum();
    let elapsed = elapsed_comment(&profile);
    assert!(
        within(total, elapsed, 2),
        "the wall values add up to the measured elapsed time: {total} vs {elapsed}"
    );
    // The await: off-CPU under the user's own async fn, about what the
    // handler itself measured around it.
    let waited = wall_under(&rows, "fetch_from_slow_server", "off-cpu");
    assert!(
        within(waited, fetch_ns, 5),
        "the fetch's wait {waited} ns vs {fetch_ns} ns measured in the handler"
    );
    // The nominal split: 400 ms awaiting the server, then 100 ms on CPU
    // (a wall-time spin, so load does not stretch it): at least 75 % under
    // the await path, about 20 % under the CPU function. Time on CPU after
    // the await is not the await's: it is excluded from the await path (a
    // poll the sampler missed would be charged under an
    // `[on-CPU after this await]` leaf).
    const AFTER_AWAIT: &str = "[on-CPU after this await]";
    let fetch_path: i64 = rows
        .iter()
        .filter(|r| r.state != "other" && r.names.last().map(String::as_str) != Some(AFTER_AWAIT))
        .filter(|r| r.names.iter().any(|n| n.contains("fetch_from_slow_server")))
        .map(|r| r.wall)
        .sum();
    let comments = pprof_view::comments(&profile);
    assert!(
        fetch_path * 100 >= total * 75,
        "the await path has {fetch_path} of {total} ns, under 75 %; {comments:?}"
    );
    // And it is the split the handler measured with its own clock.
    assert!(
        within(fetch_path * 1000 / total, fetch_ns * 1000 / elapsed, 3),
        "the await path's share {fetch_path}/{total} matches the handler's {fetch_ns}/{elapsed}; {comments:?}"
    );
    // The CPU part is named by the CPU samples cut at the invocation's
    // root: the polling thread's own CPU timer samples it (it used to be
    // the process's, and a loaded machine could leave the poll unsampled).
    assert!(
        !comments.iter().any(|c| c.starts_with("cpu: 0 samples")),
        "the sampler saw the 100 ms on CPU: {comments:?}"
    );
    let cpu_wall_ns = answered(&outcome, "cpu_wall_ns");
    let crunch = wall_under(&rows, "after_the_fetch", "on-cpu");
    assert!(
        (total * 15..=total * 25).contains(&(crunch * 100)),
        "the CPU function has {crunch} of {total} ns, not about 20 %; {comments:?}"
    );
    assert!(
        within(crunch, cpu_wall_ns, 15),
        "the CPU part: {crunch} ns vs {cpu_wall_ns} ns measured (samples are 10 ms apart); {comments:?}"
    );
    for row in &rows {
        match row.state.as_str() {
            "off-cpu" => assert_eq!(row.cpu, 0, "{:?}", row.names),
            "on-cpu" | "other" => {}
            other => panic!("unexpected state {other}"),
        }
        if row.state != "other" {
            assert_eq!(row.names[0], "[invocation future]", "{:?}", row.names);
        }
    }
    assert!(
        pprof_view::total(&profile, "cpu") > 0,
        "the CPU view has the burn"
    );

    if pprof_view::go_available() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wall.pprof");
        std::fs::write(&file, &body).unwrap();
        let top = pprof_view::go_tool_pprof(&["-top".as_ref(), file.as_os_str()]);
        assert!(top.contains("Type: wall"), "{top}");
        assert!(top.contains("fetch_from_slow_server"), "{top}");
        let cpu = pprof_view::go_tool_pprof(&[
            "-sample_index=cpu".as_ref(),
            "-top".as_ref(),
            file.as_os_str(),
        ]);
        assert!(cpu.contains("Type: cpu"), "{cpu}");
        assert!(
            cpu.contains("after_the_fetch") || cpu.contains("spin_for"),
            "{cpu}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_futures_oneshot_and_a_tokio_sleep_are_each_charged_to_their_leaf() {
    let setup = setup(fixture(), |l| l).await;
    let (outcome, profile, _) = profiled(&setup, 2, json!({ "case": "channels" })).await;
    let rows = rows(&profile);
    let oneshot = wall_under(&rows, "wait_on_a_futures_oneshot", "off-cpu");
    let sleep = wall_under(&rows, "sleep_on_a_tokio_timer", "off-cpu");
    let oneshot_ns = answered(&outcome, "oneshot_ns");
    let sleep_ns = answered(&outcome, "sleep_ns");
    assert!(
        within(oneshot, oneshot_ns, 5),
        "oneshot: {oneshot} ns charged, {oneshot_ns} ns measured"
    );
    assert!(
        within(sleep, sleep_ns, 5),
        "sleep: {sleep} ns charged, {sleep_ns} ns measured"
    );
    // Each wait is under its own leaf: the oneshot's stacks do not pass
    // through tokio's timer, and the sleep's not through the oneshot.
    for row in rows.iter().filter(|r| r.state == "off-cpu") {
        let oneshot = row
            .names
            .iter()
            .any(|n| n.contains("wait_on_a_futures_oneshot"));
        let timer = row.names.iter().any(|n| n.contains("Sleep::poll"));
        assert!(!(oneshot && timer), "{:?}", row.names);
        if oneshot {
            assert!(
                row.names.iter().any(|n| n.contains("futures_channel")),
                "the oneshot's leaf is named: {:?}",
                row.names
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_panics_after_waiting_still_writes_its_profile() {
    let setup = setup(fixture(), |l| l).await;
    let (outcome, profile, _) = profiled(&setup, 3, json!({ "case": "panic_while_pending" })).await;
    let Outcome::Error(error) = outcome else {
        panic!("lambda_runtime reports the panic: {outcome:?}")
    };
    assert!(
        error.to_string().contains("panicked after waiting"),
        "{error}"
    );
    let puts = setup.s3.puts();
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].header("x-amz-meta-outcome"), Some("panic"));
    let comments = pprof_view::comments(&profile);
    assert!(
        comments.contains(&"outcome=panic".to_owned()),
        "{comments:?}"
    );
    let waited = wall_under(&rows(&profile), "sleep_on_a_tokio_timer", "off-cpu");
    assert!(
        waited >= 145_000_000,
        "the 150 ms wait before the panic is in the profile: {waited} ns"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profiled_future_dropped_by_a_timeout_still_writes_its_profile() {
    let setup = setup(fixture(), |l| l).await;
    let id = request_id(4);
    let outcome = invoke(
        &setup.api,
        &id,
        Some(trace_header(4, SAMPLED)),
        json!({ "case": "cancelled" }),
    )
    .await;
    assert_eq!(outcome, Outcome::Response(json!({ "timed_out": true })));
    // The upload of a dropped invocation is spawned, so it may land just
    // after the response.
    let key = format!("wall/{}/{id}.pprof", trace_root(4, SAMPLED));
    let mut body = None;
    for _ in 0..100 {
        body = setup.s3.object(BUCKET, &key);
        if body.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let profile = pprof_view::decode(&body.expect("the profile was uploaded")).unwrap();
    let comments = pprof_view::comments(&profile);
    assert!(
        comments.contains(&"outcome=cancelled".to_owned()),
        "{comments:?}"
    );
    let waited = wall_under(&rows(&profile), "sleep_on_a_tokio_timer", "off-cpu");
    assert!(
        waited >= 145_000_000,
        "the open wait is charged up to the drop (150 ms): {waited} ns"
    );
}
