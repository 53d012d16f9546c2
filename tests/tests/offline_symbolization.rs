//! `XRAYPROFILE_SYMBOLIZE=false` on a stripped binary: the deployment the
//! README's recipe describes. The fixture function is copied and stripped
//! after linking (`objcopy --strip-all`, which keeps the build ID and the
//! segment layout), the stripped copy runs and writes an address-level
//! profile (exact-segment mappings with GNU build IDs, no names), and
//! `pprof` names its functions afterwards from the unstripped binary, kept
//! under `PPROF_BINARY_PATH/<build id>/<name>`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use xrayprofile_tests::function::Launch;
use xrayprofile_tests::runtime_api::{Invoke, Outcome, RuntimeApi};
use xrayprofile_tests::{pprof_view, trace_header, trace_root};

/// What `readelf <option> <binary>` prints.
fn readelf(option: &str, binary: &Path) -> String {
    let mut command = Command::new("readelf");
    command.arg(option).arg(binary);
    pprof_view::stdout_of(command)
}

/// The GNU build ID `readelf -n` prints for `binary`, in hex.
fn build_id(binary: &Path) -> String {
    let notes = readelf("-n", binary);
    notes
        .lines()
        .find_map(|line| line.trim().strip_prefix("Build ID: "))
        .unwrap_or_else(|| panic!("no GNU build ID in {binary:?}: {notes}"))
        .trim()
        .to_owned()
}

/// Whether `binary` still has a symbol table or DWARF line tables.
fn has_symbols(binary: &Path) -> bool {
    let sections = readelf("-SW", binary);
    sections.contains(" .symtab ") || sections.contains(" .debug_line ")
}

/// Copies `binary` into `dir` under its own name and strips the copy after
/// linking, as the README's recipe does; `None` when binutils' `objcopy` is
/// missing.
fn stripped_copy(binary: &Path, dir: &Path) -> Option<PathBuf> {
    let copy = dir.join(binary.file_name()?);
    std::fs::copy(binary, &copy).unwrap();
    let status = Command::new("objcopy")
        .arg("--strip-all")
        .arg(&copy)
        .status()
        .ok()?;
    assert!(status.success(), "objcopy --strip-all {copy:?} failed");
    Some(copy)
}

#[allow(clippy::print_stderr)] // tells the person running the tests why it skipped
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripped_binary_profiles_are_symbolized_offline_by_build_id() {
    let unstripped = Path::new(env!("CARGO_BIN_EXE_fixture_function"));
    let go = pprof_view::go_available();
    let deploy = tempfile::tempdir().unwrap();
    let Some(stripped) = stripped_copy(unstripped, deploy.path()) else {
        assert!(
            std::env::var_os("XRAYPROFILE_REQUIRE_GO").is_none(),
            "objcopy (binutils) is missing but XRAYPROFILE_REQUIRE_GO is set; .ci/run installs it"
        );
        eprintln!("skipped: objcopy (binutils) is not installed; .ci/run installs it");
        return;
    };
    assert!(has_symbols(unstripped), "the fixture is built with symbols");
    assert!(!has_symbols(&stripped), "the deployed copy is stripped");
    let id = build_id(unstripped);
    assert_eq!(build_id(&stripped), id, "stripping keeps the build ID");

    let out = tempfile::tempdir().unwrap();
    let api = RuntimeApi::start().await.unwrap();
    let _function = Launch::new(&stripped, &api.endpoint())
        .env("XRAYPROFILE_OUTPUT_DIR", out.path().to_str().unwrap())
        .env("XRAYPROFILE_SYMBOLIZE", "false")
        .spawn()
        .unwrap();
    let request = "8476a536-e9f4-11e8-9739-00000000000a";
    let call = api.invoke(Invoke::new(
        request,
        Some(trace_header(21, 0x0000)),
        json!({ "spin_ms": 300 }),
    ));
    let outcome = tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(outcome, Outcome::Response(_)), "{outcome:?}");

    let file = out.path().join(format!(
        "fixture/{}/{request}.pprof",
        trace_root(21, 0x0000)
    ));
    let bytes = std::fs::read(&file).unwrap();
    let profile = pprof_view::decode(&bytes).unwrap();
    assert!(pprof_view::total_samples(&profile) >= 10);
    let text = |i: i64| profile.string_table[usize::try_from(i).unwrap()].clone();
    // No code is named in process. The only functions are the wall-clock
    // profile's synthetic frames (`[invocation future]` and the like),
    // which have no address and need no symbolizing.
    for function in &profile.function {
        let name = text(function.name);
        assert!(
            name.starts_with('[') && name.ends_with(']'),
            "named in process: {name}"
        );
    }
    let main = &profile.mapping[0];
    assert_eq!(
        Path::new(&text(main.filename)),
        stripped,
        "the main program, as deployed, is the first mapping"
    );
    assert_eq!(text(main.build_id), id, "the mapping carries the build ID");
    assert!(
        profile
            .location
            .iter()
            .all(|l| (l.address != 0 && l.line.is_empty()) || (l.address == 0 && l.mapping_id == 0)),
        "code locations are bare addresses; only synthetic frames have lines"
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

    // Keep the unstripped binary by build ID, as the recipe does.
    let symbols = tempfile::tempdir().unwrap();
    let kept = symbols.path().join(&id).join("fixture_function");
    std::fs::create_dir_all(symbols.path().join(&id)).unwrap();
    std::fs::copy(unstripped, &kept).unwrap();

    // google/pprof finds it through PPROF_BINARY_PATH by build ID; with a
    // search path that lacks it (and only the stripped copy at the mapped
    // path) it names nothing.
    if let Some(pprof) = pprof_view::google_pprof() {
        let top = pprof_view::google_pprof_top(&pprof, &file, symbols.path());
        assert!(top.contains("fixture_hot_loop"), "{top}");
        let empty = tempfile::tempdir().unwrap();
        let top = pprof_view::google_pprof_top(&pprof, &file, empty.path());
        assert!(!top.contains("fixture_hot_loop"), "{top}");
    } else {
        eprintln!(
            "skipped the google/pprof half: no `pprof` (set XRAYPROFILE_PPROF); .ci/run builds it"
        );
    }

    // `go tool pprof` ignores PPROF_BINARY_PATH for mappings with a build ID
    // (its object reader reports none, so every candidate "mismatches"), so
    // it is given the kept binary; it reads its DWARF.
    if !go {
        eprintln!("skipped the go tool pprof half: `go` is not installed; .ci/run installs it");
        return;
    }
    let top = pprof_view::go_tool_pprof(&["-top".as_ref(), kept.as_os_str(), file.as_os_str()]);
    assert!(top.contains("fixture_hot_loop"), "{top}");
}
