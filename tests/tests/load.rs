//! Load on real parts: overlapping invocations in lambda_runtime's concurrent
//! mode, a handler that is hard on the signal-driven sampler, and a soak that
//! watches the process's memory.
//!
//! The long soak is `#[ignore]`d so the default suite stays within CI's
//! budget; `docs/security.md` has the command and the figures.

#![allow(clippy::print_stderr)] // the tests print the figures the docs report

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde_json::json;
use xrayprofile_tests::harness::{
    BUCKET, PREFIX, Rng, Setup, assert_alive_without_panics, expected_response, invoke, join_all,
    request_id, setup,
};
use xrayprofile_tests::runtime_api::Invoke;
use xrayprofile_tests::{pprof_view, trace_header, trace_root};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_fixture_function"))
}

/// The request ID a profile's comments name.
fn profile_request_id(profile: &pprof::protos::Profile) -> Option<String> {
    pprof_view::comments(profile)
        .into_iter()
        .find_map(|c| c.strip_prefix("request_id=").map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_invocations_are_profiled_at_once_up_to_the_cap_and_all_answered() {
    const INVOCATIONS: u32 = 1_000;
    let mut setup = setup(binary(), |l| {
        l.env("AWS_LAMBDA_MAX_CONCURRENCY", "8")
            .env("XRAYPROFILE_THRESHOLD", "65535")
            // The cap holds for the whole process, concurrent or not; it
            // also keeps the test's symbolizing within CI's budget.
            .env("XRAYPROFILE_MAX_PER_MINUTE", "40")
    })
    .await;
    let started = Instant::now();
    let setup_ref: &Setup = &setup;
    let calls = (0..INVOCATIONS).map(|n| async move {
        let id = request_id(n);
        // CPU, then a wait: invocations overlap on the function's workers.
        let payload = json!({ "spin_ms": 2, "sleep_ms": 10, "n": n });
        // All 1,000 calls start now and queue in the Runtime API, so the
        // last one waits for every profile before it (the dev build
        // symbolizes each in ~0.2 s). Allow for that rather than
        // `invoke`'s 60 s for one invocation.
        let call =
            setup_ref
                .api
                .invoke(Invoke::new(&id, Some(trace_header(n, 0)), payload.clone()));
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(600), call)
            .await
            .expect("answered within 600 s")
            .expect("the function is running");
        (id, payload, outcome)
    });
    let answers = join_all(calls).await;
    let secs = started.elapsed().as_secs_f64();
    for (id, payload, outcome) in &answers {
        assert_eq!(outcome, &expected_response(id, payload));
    }
    assert_eq!(
        answers.len(),
        INVOCATIONS as usize,
        "every invocation answered"
    );

    // Over the cap: a debug line each, and one warning when the cap first
    // bites (at most one a minute).
    let capped_line =
        |l: &String| l.contains("the profile cap is reached") || l.contains("reached its cap of");
    let accounted = |l: &String| l.contains("profile written") || capped_line(l);
    setup
        .function
        .wait_until(|logs| logs.iter().filter(|l| accounted(l)).count() >= INVOCATIONS as usize)
        .await;
    let written = setup.function.logs_containing("profile written").len();
    let capped = setup
        .function
        .logs()
        .iter()
        .filter(|l| capped_line(l))
        .count();
    let keys = setup.s3.keys(BUCKET);
    eprintln!(
        "overlap: {INVOCATIONS} invocations at concurrency 8 in {secs:.1} s: {written} profiled, {capped} over the cap"
    );
    assert_eq!(keys.len(), written);
    assert_eq!(
        written + capped,
        INVOCATIONS as usize,
        "every sampled invocation is accounted for"
    );
    assert!(written >= 40, "the cap's first minute: {written}");
    let unprofiled = setup.function.logs_containing("profile not started");
    assert!(
        unprofiled.is_empty(),
        "none skipped for overlap: {unprofiled:?}"
    );

    // Each profile names its own invocation and no other; profiles ran at
    // once (concurrent mode is on, and overlap no longer skips any).
    let mut spans = Vec::new();
    for key in &keys {
        let profile = pprof_view::decode(&setup.s3.object(BUCKET, key).unwrap()).unwrap();
        let own = profile_request_id(&profile).unwrap();
        assert!(key.ends_with(&format!("/{own}.pprof")), "{key} holds {own}");
        let foreign: Vec<&String> = profile
            .string_table
            .iter()
            .filter(|s| s.contains("8476a536-e9f4-11e8-9739-") && !s.contains(&own))
            .collect();
        assert!(
            foreign.is_empty(),
            "{key} names other invocations: {foreign:?}"
        );
        for labels in pprof_view::sample_labels(&profile) {
            assert!(
                labels.contains(&("request_id".to_owned(), own.clone())),
                "{labels:?}"
            );
        }
        assert!(profile.time_nanos > 0, "a profile records when it started");
        spans.push((
            profile.time_nanos,
            profile.time_nanos + profile.duration_nanos,
            own,
        ));
    }
    spans.sort();
    assert!(
        spans.windows(2).any(|pair| pair[0].1 > pair[1].0),
        "no two profiles ran at once: {spans:?}"
    );
    assert_alive_without_panics(&mut setup.function);
}

/// `invocations` sampled invocations whose handler spends 40 ms (four
/// sampling periods at 99 Hz) allocating, formatting, unwinding and spawning,
/// so the SIGPROF handler interrupts exactly that work.
async fn signal_safety(invocations: u32) {
    let mut setup = setup(binary(), |l| {
        l.env("XRAYPROFILE_THRESHOLD", "65535")
            .env("XRAYPROFILE_MAX_PER_MINUTE", "0")
    })
    .await;
    let started = Instant::now();
    for n in 0..invocations {
        let id = request_id(n);
        let payload = json!({ "stress_ms": 40, "n": n });
        // A deadlock in the sampler would show as no answer within 60 s.
        let outcome = invoke(&setup.api, &id, Some(trace_header(n, 0)), payload.clone()).await;
        assert_eq!(outcome, expected_response(&id, &payload), "invocation {n}");
    }
    let secs = started.elapsed().as_secs_f64();
    let keys = setup.s3.keys(BUCKET);
    let samples: Vec<i64> = setup
        .s3
        .puts()
        .iter()
        .filter_map(|p| p.header("x-amz-meta-samples")?.parse::<i64>().ok())
        .collect();
    let total: i64 = samples.iter().sum();
    let with_samples = samples.iter().filter(|s| **s > 0).count();
    eprintln!(
        "signal safety: {invocations} sampled stress invocations in {secs:.1} s, {} profiles, {total} samples, {with_samples} profiles with at least one sample",
        keys.len()
    );
    assert_eq!(
        keys.len(),
        invocations as usize,
        "every invocation profiled"
    );
    assert!(
        with_samples * 2 >= invocations as usize,
        "the sampler interrupted the stress work in most invocations"
    );
    assert!(setup.function.logs_containing("profile dropped").is_empty());
    assert_alive_without_panics(&mut setup.function);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_a_handler_that_allocates_formats_unwinds_and_spawns_is_safe() {
    signal_safety(200).await;
}

/// The full run: `cargo test -p xrayprofile-tests --test load -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "1,000 sampled invocations, about 2 minutes; run with --ignored (see docs/security.md)"]
async fn sampling_1000_stress_invocations_is_safe() {
    signal_safety(1_000).await;
}

/// Runs `invocations`, a tenth of them sampled, against the real S3 server,
/// and checks memory and every object. Returns (RSS after warm-up, RSS at the
/// end) in KiB.
async fn soak(invocations: u32) -> (u64, u64) {
    let mut setup = setup(binary(), |l| {
        l.env("XRAYPROFILE_THRESHOLD", "6553")
            .env("XRAYPROFILE_MAX_PER_MINUTE", "0")
    })
    .await;
    let warm_up = invocations / 10;
    let mut rng = Rng::new(0x50a4);
    let mut sampled = BTreeMap::new();
    let mut rss = Vec::new();
    let started = Instant::now();
    for n in 0..invocations {
        let id = request_id(n);
        let key = rng.below(1 << 16) as u16;
        let payload = json!({ "spin_ms": 1, "n": n });
        let outcome = invoke(&setup.api, &id, Some(trace_header(n, key)), payload.clone()).await;
        assert_eq!(outcome, expected_response(&id, &payload), "invocation {n}");
        if key <= 6553 {
            sampled.insert(format!("{PREFIX}/{}/{id}.pprof", trace_root(n, key)), id);
        }
        let every = (invocations / 10).max(1);
        let after_warm_up = n + 1 >= warm_up && (n + 1 - warm_up).is_multiple_of(every);
        if after_warm_up || n + 1 == invocations {
            rss.push((n + 1, setup.function.rss_kib().unwrap_or(0)));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let keys = setup.s3.keys(BUCKET);
    let mut corrupt = 0;
    for (key, id) in &sampled {
        match setup
            .s3
            .object(BUCKET, key)
            .map(|bytes| pprof_view::decode(&bytes))
        {
            Some(Ok(profile)) if profile_request_id(&profile).as_deref() == Some(id) => {}
            _ => corrupt += 1,
        }
    }
    let (first, last) = (
        rss.first().map_or(0, |r| r.1),
        rss.last().map_or(0, |r| r.1),
    );
    eprintln!(
        "soak: {invocations} invocations in {secs:.1} s, {} sampled, {} objects, {corrupt} missing or corrupt; RSS KiB after warm-up {first}, at the end {last}; series {rss:?}",
        sampled.len(),
        keys.len()
    );
    assert_eq!(
        corrupt, 0,
        "every sampled invocation's object is present and decodes"
    );
    assert_eq!(keys.len(), sampled.len(), "and there is nothing else");
    assert!(first > 0 && last > 0, "RSS was read");
    assert_alive_without_panics(&mut setup.function);
    (first, last)
}

/// Memory may settle by a few pages, not grow with the number of profiles.
const RSS_GROWTH_LIMIT_KIB: u64 = 8 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_short_memory_stays_flat_and_every_profile_is_stored() {
    let (first, last) = soak(2_000).await;
    assert!(
        last <= first + RSS_GROWTH_LIMIT_KIB,
        "RSS grew from {first} to {last} KiB"
    );
}

/// The full soak: `cargo test -p xrayprofile-tests --test load -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "10,000 invocations; run with --ignored (see docs/security.md)"]
async fn soak_10000_invocations_memory_stays_flat_and_every_profile_is_stored() {
    let (first, last) = soak(10_000).await;
    assert!(
        last <= first + RSS_GROWTH_LIMIT_KIB,
        "RSS grew from {first} to {last} KiB"
    );
}
