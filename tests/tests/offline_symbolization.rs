//! `XRAYPROFILE_SYMBOLIZE=false`: the fixture function writes an
//! address-level profile (exact-segment mappings with GNU build IDs, no
//! names), and `go tool pprof` names its functions afterwards from the
//! unstripped binary, as it would for a stripped binary deployed to Lambda.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use xrayprofile_tests::function::Launch;
use xrayprofile_tests::runtime_api::{Invoke, Outcome, RuntimeApi};
use xrayprofile_tests::{pprof_view, trace_header, trace_root};

#[allow(clippy::print_stderr)] // tells the person running the tests why it skipped
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_profiles_are_symbolized_offline_from_the_binary() {
    let binary = Path::new(env!("CARGO_BIN_EXE_fixture_function"));
    let dir = tempfile::tempdir().unwrap();
    let api = RuntimeApi::start().await.unwrap();
    let _function = Launch::new(binary, &api.endpoint())
        .env("XRAYPROFILE_OUTPUT_DIR", dir.path().to_str().unwrap())
        .env("XRAYPROFILE_SYMBOLIZE", "false")
        .spawn()
        .unwrap();
    let id = "8476a536-e9f4-11e8-9739-00000000000a";
    let call = api.invoke(Invoke::new(
        id,
        Some(trace_header(21, 0x0000)),
        json!({ "spin_ms": 300 }),
    ));
    let outcome = tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(outcome, Outcome::Response(_)), "{outcome:?}");

    let file = dir
        .path()
        .join(format!("fixture/{}/{id}.pprof", trace_root(21, 0x0000)));
    let bytes = std::fs::read(&file).unwrap();
    let profile = pprof_view::decode(&bytes).unwrap();
    assert!(profile.function.is_empty(), "no names in process");
    assert!(pprof_view::total_samples(&profile) >= 10);
    let text = |i: i64| profile.string_table[usize::try_from(i).unwrap()].clone();
    let main = &profile.mapping[0];
    assert!(
        text(main.filename).ends_with("fixture_function"),
        "the main program is the first mapping: {}",
        text(main.filename)
    );
    assert_eq!(text(main.build_id).len(), 40, "a GNU build ID in hex");
    assert!(
        profile
            .location
            .iter()
            .all(|l| l.address != 0 && l.line.is_empty()),
        "locations are addresses"
    );
    let in_main = profile
        .location
        .iter()
        .filter(|l| l.mapping_id == main.id)
        .count();
    assert!(
        in_main > 0,
        "addresses fall inside the main program's mapping"
    );

    if !pprof_view::go_available() {
        eprintln!("skipped the go tool pprof half: `go` is not installed; .ci/run installs it");
        return;
    }
    let top = pprof_view::go_tool_pprof(&["-top".as_ref(), binary.as_os_str(), file.as_os_str()]);
    assert!(top.contains("fixture_hot_loop"), "{top}");
}
