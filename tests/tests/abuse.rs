//! Abuse and bad input on real parts: callers who force sampling, trace
//! headers an attacker wrote, and environments full of bad values. The
//! handler's answer must never change, nothing may panic, and an object key
//! may only ever be built from a validated trace root.

#![allow(clippy::print_stderr)] // the tests print the figures the docs report

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::time::Instant;

use serde_json::json;
use xrayprofile_tests::harness::{
    BUCKET, PREFIX, Rng, assert_alive_without_panics, expected_response, invoke, request_id, setup,
};
use xrayprofile_tests::{trace_header, trace_root};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_fixture_function"))
}

/// The cap the fixture runs with when nothing sets one.
const DEFAULT_CAP: u64 = 10;

/// The most profiles a token bucket of `cap` a minute that starts full can
/// have admitted after `secs` seconds.
fn cap_bound(cap: u64, secs: f64) -> u64 {
    cap + (cap as f64 * secs / 60.0).ceil() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_sampling_is_capped_at_the_default_rate_and_every_answer_is_right() {
    let mut setup = setup(binary(), |l| l).await;
    let started = Instant::now();
    for n in 0..1_000 {
        let id = request_id(n);
        let payload = json!({ "n": n });
        // Every root ends in 0000: sampled at any threshold.
        let outcome = invoke(&setup.api, &id, Some(trace_header(n, 0)), payload.clone()).await;
        assert_eq!(outcome, expected_response(&id, &payload), "invocation {n}");
    }
    let secs = started.elapsed().as_secs_f64();
    let profiles = setup.s3.keys(BUCKET).len() as u64;
    let warnings = setup
        .function
        .wait_for_logs("reached its cap", 1)
        .await
        .len() as u64;
    eprintln!(
        "forced sampling: 1000 invocations in {secs:.1} s, {profiles} profiles, {warnings} cap warning(s)"
    );
    // A fresh environment admits a burst of the cap at once, then the rate.
    assert!(profiles >= DEFAULT_CAP, "the burst is profiled: {profiles}");
    assert!(
        profiles <= cap_bound(DEFAULT_CAP, secs),
        "{profiles} profiles in {secs:.1} s exceed the cap of {DEFAULT_CAP} a minute"
    );
    assert_eq!(
        setup.s3.puts().len() as u64,
        profiles,
        "no upload beyond the profiles kept"
    );
    // The warning is itself rate-limited: once, then at most once a minute.
    assert!(warnings >= 1, "the cap says when it bites");
    assert!(
        warnings <= 1 + (secs / 60.0) as u64,
        "{warnings} warnings in {secs:.1} s"
    );
    let warning = &setup.function.logs_containing("reached its cap")[0];
    assert!(
        warning.contains("XRAYPROFILE_MAX_PER_MINUTE"),
        "names the fix: {warning}"
    );
    assert_alive_without_panics(&mut setup.function);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_sets_the_cap_and_zero_removes_it() {
    for (cap, invocations) in [(2u64, 40u32), (0, 40)] {
        let mut setup = setup(binary(), |l| {
            l.env("XRAYPROFILE_MAX_PER_MINUTE", &cap.to_string())
        })
        .await;
        let started = Instant::now();
        for n in 0..invocations {
            let id = request_id(n);
            let payload = json!({ "n": n });
            let outcome = invoke(&setup.api, &id, Some(trace_header(n, 0)), payload.clone()).await;
            assert_eq!(outcome, expected_response(&id, &payload));
        }
        let secs = started.elapsed().as_secs_f64();
        let profiles = setup.s3.keys(BUCKET).len() as u64;
        eprintln!(
            "cap {cap}: {invocations} forced invocations in {secs:.1} s, {profiles} profiles"
        );
        if cap == 0 {
            assert_eq!(
                profiles,
                u64::from(invocations),
                "no cap: every sampled invocation"
            );
            assert!(setup.function.logs_containing("reached its cap").is_empty());
        } else {
            assert!(
                profiles >= cap && profiles <= cap_bound(cap, secs),
                "{profiles}"
            );
        }
        assert_alive_without_panics(&mut setup.function);
    }
}

/// What a well-formed root is, written for this test.
fn is_root(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 35
        && b.iter().enumerate().all(|(i, c)| match i {
            0 => *c == b'1',
            1 | 10 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The root the first `Root=` field names, if it is well formed: what
/// X-Ray's SDKs take from a header.
fn first_root(header: &str) -> Option<String> {
    let value = header
        .split(';')
        .filter_map(|f| f.trim().split_once('='))
        .find(|(k, _)| k.trim() == "Root")?
        .1
        .trim();
    is_root(value).then(|| value.to_owned())
}

/// Headers as an attacker could send them through API Gateway or an ALB:
/// visible ASCII only (HTTP carries nothing else to the Runtime API).
fn adversarial_headers(count: usize) -> Vec<String> {
    let mut rng = Rng::new(0x5eed);
    let valid = "1-5759e988-bd862e3fe1be46a9942701f0";
    let nasty = [b'/', b'.', b'\\', b';', b'=', b' ', b'%', b'g', b'-', b'0'];
    let mut headers = vec![
        String::new(),
        ";".repeat(4_000),
        "=".repeat(4_000),
        "Root=".repeat(1_000),
        format!("Root={valid};Root=1-00000000-000000000000000000000000"),
        format!("Root=1-5759e988-bd862e3fe1be46a99427/../0;Root={valid}"),
        "Root=1-../../..-../../../../../../../../..0".to_owned(),
        "Root=1-5759e988-bd862e3fe1be46a9942701f0%2F..".to_owned(),
    ];
    while headers.len() < count {
        let header = match rng.below(4) {
            // A valid root with one character replaced, inserted or removed.
            0 => {
                let mut root = valid.as_bytes().to_vec();
                let at = rng.below(root.len() as u64) as usize;
                let c = nasty[rng.below(nasty.len() as u64) as usize];
                match rng.below(3) {
                    0 => root[at] = c,
                    1 => root.insert(at, c),
                    _ => {
                        root.remove(at);
                    }
                }
                format!("Root={};Sampled=1", String::from_utf8_lossy(&root))
            }
            // Random visible ASCII.
            1 => (0..rng.below(200))
                .map(|_| char::from(b' ' + rng.below(95) as u8))
                .collect(),
            // Runs of separators around roots.
            2 => {
                let seps = [";", "=", ";;", "==", " ; ", "Root=", "Root"];
                (0..rng.below(12) + 1)
                    .map(|_| seps[rng.below(seps.len() as u64) as usize])
                    .collect::<String>()
                    + if rng.below(2) == 0 { valid } else { "" }
            }
            // Valid roots with random keys, so many are sampled.
            _ => trace_header(rng.below(1 << 20) as u32, rng.below(1 << 16) as u16),
        };
        headers.push(header);
    }
    headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversarial_trace_headers_never_change_the_answer_or_reach_a_key_unvalidated() {
    let mut setup = setup(binary(), |l| {
        l.env("XRAYPROFILE_THRESHOLD", "65535")
            .env("XRAYPROFILE_MAX_PER_MINUTE", "0")
    })
    .await;
    let headers = adversarial_headers(400);
    let mut expected_keys = BTreeSet::new();
    for (n, header) in headers.iter().enumerate() {
        let id = request_id(n as u32);
        let payload = json!({ "n": n });
        let outcome = invoke(&setup.api, &id, Some(header.clone()), payload.clone()).await;
        assert_eq!(
            outcome,
            expected_response(&id, &payload),
            "header {header:?}"
        );
        if let Some(root) = first_root(header) {
            expected_keys.insert(format!("{PREFIX}/{root}/{id}.pprof"));
        }
    }
    let keys: BTreeSet<String> = setup.s3.keys(BUCKET).into_iter().collect();
    eprintln!(
        "adversarial headers: {} sent, {} with a valid first root, {} objects",
        headers.len(),
        expected_keys.len(),
        keys.len()
    );
    assert_eq!(
        keys, expected_keys,
        "objects exist exactly for the validated roots"
    );
    for put in setup.s3.puts() {
        let key = put
            .path
            .trim_start_matches(&format!("/{BUCKET}/"))
            .to_owned();
        let parts: Vec<&str> = key.split('/').collect();
        assert_eq!(parts.len(), 3, "{key}");
        assert!(is_root(parts[1]), "{key}");
        assert!(!key.contains(".."), "{key}");
    }
    assert!(
        expected_keys.len() >= 100,
        "the test profiles enough to mean something"
    );
    assert_alive_without_panics(&mut setup.function);
}

/// The values that every variable gets in one process, and which variables
/// must then be reported (`OUTPUT_DIR` accepts any bytes as a path, and a
/// negative number is a fine path or prefix, so those are left out there).
fn config_cases() -> Vec<(&'static str, OsString, Vec<&'static str>)> {
    const ALL: [&str; 8] = [
        "XRAYPROFILE_ENABLED",
        "XRAYPROFILE_THRESHOLD",
        "XRAYPROFILE_S3_BUCKET",
        "XRAYPROFILE_S3_PREFIX",
        "XRAYPROFILE_S3_FORCE_PATH_STYLE",
        "XRAYPROFILE_MAX_PER_MINUTE",
        "XRAYPROFILE_OUTPUT_DIR",
        "AWS_REGION",
    ];
    let without = |skip: &[&str]| {
        ALL.iter()
            .copied()
            .filter(|v| !skip.contains(v))
            .collect::<Vec<_>>()
    };
    vec![
        ("empty", OsString::new(), ALL.to_vec()),
        ("whitespace", OsString::from(" \t "), ALL.to_vec()),
        ("huge", OsString::from("7".repeat(100_000)), ALL.to_vec()),
        (
            "negative",
            OsString::from("-1"),
            without(&["XRAYPROFILE_OUTPUT_DIR", "XRAYPROFILE_S3_PREFIX"]),
        ),
        (
            "non-UTF-8",
            OsString::from_vec(vec![b'1', 0xff, 0xfe]),
            without(&["XRAYPROFILE_OUTPUT_DIR"]),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_environment_values_are_logged_once_and_ignored() {
    for (class, value, reported) in config_cases() {
        let mut setup = setup(binary(), |mut l| {
            for var in &reported {
                l = l.env_os(var, value.clone());
            }
            l
        })
        .await;
        // Sampled by the attribute's threshold (655), unsampled, untraced.
        let traces = [
            Some(trace_header(1, 0)),
            Some(trace_header(2, 0xffff)),
            None,
        ];
        for (n, trace) in traces.into_iter().enumerate() {
            let id = request_id(n as u32);
            let payload = json!({ "n": n, "class": class });
            let outcome = invoke(&setup.api, &id, trace, payload.clone()).await;
            assert_eq!(outcome, expected_response(&id, &payload), "{class}");
        }
        for var in &reported {
            let lines = setup
                .function
                .wait_for_logs(&format!("ignoring invalid {var}"), 1)
                .await;
            assert_eq!(
                lines.len(),
                1,
                "{class} {var}: logged once: {:?}",
                setup.function.logs()
            );
        }
        // The attribute's bucket and prefix apply; whether the upload works
        // depends on what the SDK makes of the same AWS_REGION, and either
        // way exactly one event says what happened to the profile.
        let sampled = request_id(0);
        setup
            .function
            .wait_until(|logs| {
                logs.iter().any(|l| {
                    l.contains(&sampled)
                        && (l.contains("profile written") || l.contains("profile upload failed"))
                })
            })
            .await;
        let written = setup.function.logs_containing("profile written").len();
        let failed = setup
            .function
            .logs_containing("profile upload failed")
            .len();
        eprintln!(
            "config {class}: {} variables reported, profile written {written}, upload failed {failed}",
            reported.len()
        );
        assert_eq!(written + failed, 1, "{class}: {:?}", setup.function.logs());
        if written == 1 {
            assert_eq!(
                setup.s3.keys(BUCKET),
                [format!(
                    "{PREFIX}/{}/{}.pprof",
                    trace_root(1, 0),
                    request_id(0)
                )]
            );
        }
        assert_alive_without_panics(&mut setup.function);
    }
}
