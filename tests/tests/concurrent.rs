//! Lambda Managed Instances: many invocations in flight at once in one
//! process, each profiled, each profile holding its own invocation's work.
//!
//! The fixture runs `xrayprofile::run_concurrent` against the loopback
//! Runtime API with `AWS_LAMBDA_MAX_CONCURRENCY=8`; 64 invocations of 4
//! kinds arrive in overlapping waves, every one sampled, the cap off. Each
//! kind burns CPU in its own function and awaits its own timer.

#![allow(clippy::print_stderr)] // the test prints the figures it checks

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use xrayprofile_tests::function::Function;
use xrayprofile_tests::harness::{
    BUCKET, assert_alive_without_panics, join_all, request_id, setup,
};
use xrayprofile_tests::pprof_view::{self, rows};
use xrayprofile_tests::runtime_api::{Invoke, Outcome};
use xrayprofile_tests::{trace_header, trace_root};

const INVOCATIONS: u32 = 64;
const CONCURRENCY: &str = "8";
/// CPU time each invocation burns: about 20 samples at 99 Hz, so one
/// sample of the handler's own other work (building its response) is 5 %.
const CPU_MS: u64 = 200;
/// Each kind's CPU function, by kind.
const BURNS: [&str; 4] = [
    "kind_a_burns",
    "kind_b_burns",
    "kind_c_burns",
    "kind_d_burns",
];

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_fixture_concurrent"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_invocations_each_get_a_profile_of_their_own_work() {
    let mut setup = setup(binary(), |l| {
        l.env("AWS_LAMBDA_MAX_CONCURRENCY", CONCURRENCY)
    })
    .await;
    let (api, function) = (&setup.api, &setup.function);
    // Overlapping waves of 8, 100 ms apart, while earlier waves still burn
    // and wait. A wave also waits for the profiles of the wave two before
    // it to be written: uploads run after the responses, and the debug
    // build symbolizes more slowly than the waves would otherwise arrive,
    // which the bounded queue would answer by dropping profiles.
    let calls = (0..INVOCATIONS).map(|n| async move {
        let wave = n / 8;
        tokio::time::sleep(Duration::from_millis(u64::from(wave) * 100)).await;
        written(function, wave.saturating_sub(2) as usize * 8).await;
        let id = request_id(n);
        let kind = n % 4;
        let payload = json!({ "kind": kind, "n": n, "cpu_ms": CPU_MS });
        let call = api.invoke(Invoke::new(&id, Some(trace_header(n, 0xfffe)), payload));
        let outcome = tokio::time::timeout(Duration::from_secs(120), call)
            .await
            .expect("answered within 120 s")
            .expect("the function is running");
        (n, id, outcome)
    });
    let answers = join_all(calls).await;

    let mut elapsed = Vec::new();
    for (n, _, outcome) in &answers {
        let Outcome::Response(body) = outcome else {
            panic!("invocation {n} failed: {outcome:?}");
        };
        assert_eq!(body["kind"], json!(n % 4), "{body}");
        assert_eq!(body["n"], json!(n), "{body}");
        assert_eq!(body["checksum"], json!(true), "{body}");
        elapsed.push(body["elapsed_ns"].as_i64().expect("elapsed_ns"));
    }
    assert_eq!(answers.len(), INVOCATIONS as usize, "all answered");

    // Uploads run in the background after each response.
    written(&setup.function, INVOCATIONS as usize).await;
    let unprofiled = setup.function.logs_containing("profile not started");
    assert!(unprofiled.is_empty(), "{unprofiled:?}");
    let dropped = setup.function.logs_containing("profile dropped");
    assert!(dropped.is_empty(), "{dropped:?}");

    let mut worst_own = 100.0_f64;
    let mut worst_wall = 0.0_f64;
    for ((n, id, _), handler_ns) in answers.iter().zip(&elapsed) {
        let key = format!("concurrent/{}/{id}.pprof", trace_root(*n, 0xfffe));
        let body = setup
            .s3
            .object(BUCKET, &key)
            .unwrap_or_else(|| panic!("no profile at {key}: {:?}", setup.s3.keys(BUCKET)));
        let profile = pprof_view::decode(&body).expect("a pprof file");
        let rows = rows(&profile);
        let on_cpu: Vec<_> = rows.iter().filter(|r| r.state == "on-cpu").collect();
        let cpu_under = |name: &str| pprof_view::cpu_under(on_cpu.iter().copied(), name);
        let total: i64 = on_cpu.iter().map(|r| r.cpu).sum();
        let kind = (*n % 4) as usize;
        let own = cpu_under(BURNS[kind]);
        let others: i64 = BURNS
            .iter()
            .enumerate()
            .filter(|(k, _)| *k != kind)
            .map(|(_, name)| cpu_under(name))
            .sum();
        // Another kind's function anywhere in the profile, on-CPU or not.
        let foreign: Vec<&str> = BURNS
            .iter()
            .enumerate()
            .filter(|(k, _)| *k != kind)
            .filter(|(_, name)| {
                rows.iter()
                    .any(|r| r.state != "other" && r.names.iter().any(|f| f.contains(*name)))
            })
            .map(|(_, name)| *name)
            .collect();
        assert!(total > 0, "{key}: no on-CPU samples");
        let own_share = own as f64 * 100.0 / total as f64;
        assert!(
            own_share >= 90.0,
            "{key}: {own_share:.1} % of the on-CPU time under {}",
            BURNS[kind]
        );
        assert!(
            others * 20 <= total,
            "{key}: {others} of {total} ns under the other kinds' functions"
        );
        assert!(foreign.is_empty(), "{key} holds {foreign:?}");
        let wall: i64 = rows.iter().map(|r| r.wall).sum();
        let off = (wall - handler_ns).abs() as f64 * 100.0 / *handler_ns as f64;
        assert!(
            off <= 5.0,
            "{key}: wall total {wall} ns vs the handler's {handler_ns} ns ({off:.1} % off)"
        );
        worst_own = worst_own.min(own_share);
        worst_wall = worst_wall.max(off);
    }
    eprintln!(
        "concurrent: {INVOCATIONS} invocations at concurrency {CONCURRENCY}: {INVOCATIONS} profiles; lowest own share {worst_own:.1} %, largest wall gap {worst_wall:.2} %"
    );
    assert_eq!(
        setup.s3.keys(BUCKET).len(),
        INVOCATIONS as usize,
        "one profile per invocation"
    );
    assert_alive_without_panics(&mut setup.function);
}

/// Waits until `function` has written `profiles` profiles, or 120 s
/// (a loaded machine symbolizes slowly; the assertions then say what is
/// missing).
async fn written(function: &Function, profiles: usize) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(120);
    while function.logs_containing("profile written").len() < profiles
        && tokio::time::Instant::now() < give_up
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
