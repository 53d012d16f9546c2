//! The `xrayprofile` command line against profiles written by real fixture
//! functions: two functions (`checkout` and `payment`, the fixture binary
//! under two names) each invoked on three traces, uploading through the real
//! `aws-sdk-s3` to the in-process S3-compatible server, and a third
//! (`inventory`) writing under `XRAYPROFILE_OUTPUT_DIR`. The CLI runs as a
//! real process with only the environment a user would give it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use serde_json::{Value, json};
use xrayprofile_tests::function::Launch;
use xrayprofile_tests::harness::{BUCKET, PREFIX, invoke, request_id};
use xrayprofile_tests::runtime_api::{Outcome, RuntimeApi};
use xrayprofile_tests::s3_server::S3Server;
use xrayprofile_tests::{pprof_view, trace_header, trace_root};

/// The functions that upload to S3.
const S3_FUNCTIONS: [&str; 2] = ["checkout", "payment"];
/// The function that writes under `XRAYPROFILE_OUTPUT_DIR`.
const DIR_FUNCTION: &str = "inventory";
/// Trace sequence numbers; every trace root ends in `0000`, so all sampled.
const TRACES: [u32; 3] = [1, 2, 3];
/// A prefix holding a copy of one profile and a text object.
const JUNK_PREFIX: &str = "junk";

/// The profiles every test reads; written once per test process.
struct World {
    endpoint: String,
    /// The S3 server's store (its bucket directory), to read objects back.
    bucket_dir: PathBuf,
    /// What `inventory` wrote under its `XRAYPROFILE_OUTPUT_DIR`.
    output_dir: PathBuf,
    /// One profile of `reports`, which runs in `cpu` mode.
    cpu_dir: PathBuf,
    _keep: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // The S3 server lives on its own runtime for the whole test process.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let s3 = S3Server::start(&[BUCKET]).await.unwrap();
                let keep = tempfile::tempdir().unwrap();
                let output_dir = keep.path().join("output");
                let cpu_dir = keep.path().join("cpu");
                write_profiles(&s3, &output_dir, &cpu_dir).await;
                tx.send(World {
                    endpoint: s3.endpoint(),
                    bucket_dir: s3.bucket_dir(BUCKET),
                    output_dir,
                    cpu_dir,
                    _keep: keep,
                })
                .unwrap();
                std::future::pending::<()>().await;
            });
        });
        rx.recv().unwrap()
    })
}

fn fixture() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_fixture_function"))
}

/// Every function on every trace: a CPU-heavy part and a wait, so wall
/// profiles have on- and off-CPU samples; `payment` fails on trace 3.
async fn write_profiles(s3: &S3Server, output_dir: &Path, cpu_dir: &Path) {
    let mut n = 0;
    for name in S3_FUNCTIONS.iter().chain([&DIR_FUNCTION]) {
        let api = RuntimeApi::start().await.unwrap();
        let mut launch = Launch::new(fixture(), &api.endpoint())
            .s3(s3)
            .env("AWS_LAMBDA_FUNCTION_NAME", name);
        if *name == DIR_FUNCTION {
            launch = launch.env("XRAYPROFILE_OUTPUT_DIR", output_dir.to_str().unwrap());
        }
        let mut function = launch.spawn().unwrap();
        for trace in TRACES {
            n += 1;
            let fail = *name == "payment" && trace == 3;
            let payload = json!({ "spin_ms": 120, "sleep_ms": 40, "fail": fail });
            let outcome = invoke(&api, &request_id(n), Some(trace_header(trace, 0)), payload).await;
            assert_eq!(matches!(outcome, Outcome::Error(_)), fail, "{outcome:?}");
        }
        function.kill().await;
    }
    let api = RuntimeApi::start().await.unwrap();
    let mut function = Launch::new(fixture(), &api.endpoint())
        .env("AWS_LAMBDA_FUNCTION_NAME", "reports")
        .env("XRAYPROFILE_MODE", "cpu")
        .env("XRAYPROFILE_OUTPUT_DIR", cpu_dir.to_str().unwrap())
        .spawn()
        .unwrap();
    let payload = json!({ "spin_ms": 50 });
    invoke(&api, &request_id(99), Some(trace_header(7, 0)), payload).await;
    function.kill().await;

    // A prefix with one real profile and one object that is no profile.
    let keys = s3.keys(BUCKET);
    let junk = s3
        .bucket_dir(BUCKET)
        .join(JUNK_PREFIX)
        .join(trace_root(9, 0));
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("not-a-profile.pprof"), "hello, I am text").unwrap();
    std::fs::copy(
        s3.bucket_dir(BUCKET).join(&keys[0]),
        junk.join("copy.pprof"),
    )
    .unwrap();
}

/// Runs the CLI with the environment a user would set for this bucket.
fn cli(args: &[&str]) -> Output {
    cli_env(args, &s3_env())
}

fn s3_env() -> Vec<(&'static str, String)> {
    xrayprofile_tests::cli::s3_env(&world().endpoint, BUCKET, PREFIX)
}

fn cli_env(args: &[&str], env: &[(&str, String)]) -> Output {
    let binary = Path::new(env!("CARGO_BIN_EXE_xrayprofile_cli"));
    xrayprofile_tests::cli::command(binary, env)
        .args(args)
        .output()
        .unwrap()
}

/// Standard output of a run that must succeed.
fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}; stderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Standard error of a run that must fail with exit code 1.
fn failed(output: &Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(1),
        "stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn list_json(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["list", "--json"];
    all.extend_from_slice(args);
    serde_json::from_str::<Vec<Value>>(&ok(&cli(&all))).unwrap()
}

fn field<'a>(rows: &'a [Value], name: &str) -> Vec<&'a str> {
    rows.iter()
        .map(|r| r[name].as_str().unwrap_or(""))
        .collect()
}

#[test]
fn list_trace_returns_exactly_that_traces_profiles_of_every_function() {
    for trace in TRACES {
        let root = trace_root(trace, 0);
        let rows = list_json(&["--trace", &root]);
        let functions: BTreeSet<&str> = field(&rows, "function").into_iter().collect();
        assert_eq!(
            functions,
            BTreeSet::from(["checkout:$LATEST", "payment:$LATEST"]),
            "{rows:#?}"
        );
        assert_eq!(rows.len(), 2, "{rows:#?}");
        assert!(field(&rows, "trace_id").iter().all(|t| *t == root));
        for row in &rows {
            let key = row["key"].as_str().unwrap();
            let request = row["request_id"].as_str().unwrap();
            assert_eq!(key, format!("{PREFIX}/{root}/{request}.pprof"));
            assert!(row["duration_ms"].as_u64().unwrap() >= 150, "{row}");
            assert!(row["samples"].as_i64().unwrap() > 0, "{row}");
        }
    }
}

#[test]
fn list_filters_on_function_outcome_and_duration_newest_first() {
    let all = list_json(&[]);
    assert_eq!(all.len(), 6, "{all:#?}");
    let times = field(&all, "time");
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );

    let payment = list_json(&["--function", "payment"]);
    assert_eq!(payment.len(), 3);
    assert_eq!(list_json(&["--function", "payment:$LATEST"]).len(), 3);
    let errors = list_json(&["--outcome", "error"]);
    assert_eq!(field(&errors, "function"), ["payment:$LATEST"]);
    assert_eq!(field(&errors, "trace_id"), [trace_root(3, 0)]);
    assert_eq!(list_json(&["--outcome", "ok"]).len(), 5);
    assert!(list_json(&["--min-duration", "1h"]).is_empty());
    assert_eq!(list_json(&["--max-duration", "1h"]).len(), 6);
    assert_eq!(list_json(&["--since", "1h"]).len(), 6);
    assert!(
        list_json(&[
            "--from",
            "2000-01-01T00:00:00Z",
            "--to",
            "2000-01-02T00:00:00Z"
        ])
        .is_empty()
    );

    let table = ok(&cli(&["list", "--function", "checkout"]));
    assert_eq!(table.lines().count(), 4, "a header and three rows: {table}");
    assert!(table.lines().next().unwrap().starts_with("TIME"));
}

#[test]
fn a_local_directory_gives_the_same_fields_as_s3_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    ok(&cli(&["fetch", "--function", "checkout", "-o", out]));
    for trace in TRACES {
        let files: Vec<_> = std::fs::read_dir(dir.path().join(trace_root(trace, 0)))
            .unwrap()
            .collect();
        assert_eq!(files.len(), 1, "{{trace root}}/{{request id}}.pprof");
    }
    // Resumable: a second fetch finds everything there.
    let again = cli(&["fetch", "--function", "checkout", "-o", out]);
    ok(&again);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("fetched 0 profiles"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let from_s3 = list_json(&["--function", "checkout"]);
    let from_dir = list_json(&["--dir", out]);
    let fields = |rows: &[Value]| -> BTreeSet<String> {
        rows.iter()
            .map(|r| {
                json!([
                    r["time"],
                    r["function"],
                    r["trace_id"],
                    r["request_id"],
                    r["duration_ms"],
                    r["samples"],
                    r["outcome"]
                ])
                .to_string()
            })
            .collect()
    };
    assert_eq!(fields(&from_dir), fields(&from_s3));

    // What XRAYPROFILE_OUTPUT_DIR wrote, filtered like S3.
    let output_dir = world().output_dir.to_str().unwrap();
    let local = list_json(&["--dir", output_dir, "--trace", &trace_root(2, 0)]);
    assert_eq!(
        field(&local, "function"),
        [format!("{DIR_FUNCTION}:$LATEST")]
    );
    assert_eq!(
        list_json(&["--dir", output_dir, "--outcome", "ok"]).len(),
        3
    );
}

/// The objects of `rows`, decoded, read from the server's store.
fn objects(rows: &[Value]) -> Vec<pprof::protos::Profile> {
    rows.iter()
        .map(|r| {
            let bytes = std::fs::read(world().bucket_dir.join(r["key"].as_str().unwrap())).unwrap();
            pprof_view::decode(&bytes).unwrap()
        })
        .collect()
}

#[test]
fn merge_totals_equal_the_sum_of_the_inputs_per_sample_type_labels_kept() {
    let dir = tempfile::tempdir().unwrap();
    let merged_path = dir.path().join("merged.pb.gz");
    let run = cli(&["merge", "-o", merged_path.to_str().unwrap()]);
    ok(&run);
    let merged = pprof_view::decode(&std::fs::read(&merged_path).unwrap()).unwrap();
    let inputs = objects(&list_json(&[]));
    for ty in ["wall", "cpu"] {
        let sum: i64 = inputs.iter().map(|p| pprof_view::total(p, ty)).sum();
        assert!(sum > 0, "{ty}");
        assert_eq!(pprof_view::total(&merged, ty), sum, "{ty}");
    }
    let requests = |p: &pprof::protos::Profile| -> BTreeSet<String> {
        pprof_view::sample_labels(p)
            .into_iter()
            .flatten()
            .filter(|(k, _)| k == "request_id")
            .map(|(_, v)| v)
            .collect()
    };
    let expected: BTreeSet<String> = inputs.iter().flat_map(requests).collect();
    assert_eq!(requests(&merged), expected);
    assert_eq!(expected.len(), 6);
    // Deduplicated tables: each function (name, system name, file, start
    // line; one demangled name can have several) and each string once, and
    // fewer functions than the inputs hold together.
    let functions: BTreeSet<_> = merged
        .function
        .iter()
        .map(|f| (f.name, f.system_name, f.filename, f.start_line))
        .collect();
    assert_eq!(functions.len(), merged.function.len());
    let strings: BTreeSet<&String> = merged.string_table.iter().collect();
    assert_eq!(strings.len(), merged.string_table.len());
    let input_functions: usize = inputs.iter().map(|p| p.function.len()).sum();
    assert!(merged.function.len() < input_functions);
}

/// `flat` and `cum` per function from `go tool pprof -top` output, in
/// nanoseconds.
fn parse_go_top(text: &str) -> BTreeMap<String, (f64, f64)> {
    let unit = |v: &str| -> f64 {
        let split = v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len());
        let (number, unit) = v.split_at(split);
        let n: f64 = number.parse().unwrap();
        n * match unit {
            "ns" | "" => 1.0,
            "us" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "mins" => 60e9,
            "hrs" => 3600e9,
            other => panic!("unit {other}"),
        }
    };
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.len() >= 6).then(|| (cols[5..].join(" "), (unit(cols[0]), unit(cols[3]))))
        })
        .collect()
}

#[allow(clippy::print_stderr)] // tells the person running the tests why it skipped
#[test]
fn top_agrees_with_go_tool_pprof_on_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let merged = dir.path().join("merged.pb.gz");
    ok(&cli(&["merge", "-o", merged.to_str().unwrap()]));
    let ours_text = ok(&cli(&["top", merged.to_str().unwrap(), "-n", "1000"]));
    let ours = parse_go_top(&ours_text);
    assert!(
        ours.keys().any(|n| n.contains("fixture_hot_loop")),
        "{ours_text}"
    );
    if !pprof_view::go_available() {
        eprintln!("skipped the comparison: `go` is not installed; .ci/run installs it");
        return;
    }
    for index in ["wall", "cpu"] {
        let go = pprof_view::go_tool_pprof(&[
            "-top".as_ref(),
            format!("-sample_index={index}").as_ref(),
            "-nodecount=1000".as_ref(),
            "-nodefraction=0".as_ref(),
            merged.as_os_str(),
        ]);
        let go = parse_go_top(&go);
        let ours_text = ok(&cli(&[
            "top",
            "--sample-index",
            index,
            "-n",
            "1000",
            merged.to_str().unwrap(),
        ]));
        let ours = parse_go_top(&ours_text);
        let total: f64 = ours.values().map(|(flat, _)| flat).sum();
        let mut compared = 0;
        for (name, (flat, cum)) in &go {
            let Some((our_flat, our_cum)) = ours.get(name) else {
                continue;
            };
            compared += 1;
            // Both print three significant digits: within 1 % of the value
            // or 0.1 % of the total.
            let close = |a: f64, b: f64| (a - b).abs() <= (0.01 * a.abs()).max(0.001 * total);
            assert!(
                close(*flat, *our_flat),
                "{index} flat of {name}: go {flat}, ours {our_flat}"
            );
            assert!(
                close(*cum, *our_cum),
                "{index} cum of {name}: go {cum}, ours {our_cum}"
            );
        }
        assert!(
            compared * 2 >= go.len(),
            "{index}: only {compared} of go's {} rows found in ours:\n{ours_text}",
            go.len()
        );
    }
}

#[test]
fn an_empty_selection_is_an_error_that_says_so() {
    let err = failed(&cli(&["top", "--trace", &trace_root(42, 0)]));
    assert!(err.contains("no profiles match the filters"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let err = failed(&cli(&[
        "merge",
        "--dir",
        dir.path().to_str().unwrap(),
        "-o",
        "x",
    ]));
    assert!(err.contains("no profiles found"), "{err}");
}

#[test]
fn a_missing_bucket_and_missing_credentials_are_named() {
    let err = failed(&cli(&["list", "--bucket", "no-such-bucket"]));
    assert!(
        err.contains("bucket `no-such-bucket` does not exist"),
        "{err}"
    );
    let env: Vec<_> = s3_env()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"))
        .collect();
    let err = failed(&cli_env(&["list"], &env));
    assert!(err.contains("no AWS credentials found"), "{err}");
}

#[test]
fn a_key_that_is_no_profile_is_skipped_with_a_warning_and_the_rest_merged() {
    let dir = tempfile::tempdir().unwrap();
    let merged = dir.path().join("merged.pb.gz");
    let run = cli(&[
        "merge",
        "--prefix",
        JUNK_PREFIX,
        "-o",
        merged.to_str().unwrap(),
    ]);
    ok(&run);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("not-a-profile.pprof`: not a pprof file"),
        "{stderr}"
    );
    assert!(stderr.contains("merged 1 profiles"), "{stderr}");
    assert!(
        pprof_view::total(
            &pprof_view::decode(&std::fs::read(&merged).unwrap()).unwrap(),
            "wall"
        ) > 0
    );
}

#[test]
fn corrupt_gzip_and_a_gzip_bomb_are_refused_with_warnings() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_dir(world().output_dir.join(PREFIX).join(trace_root(1, 0)))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(dir.path().join("good.pprof"), &bytes).unwrap();
    std::fs::write(
        dir.path().join("truncated.pprof"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0_u8; 1 << 20];
    for _ in 0..80 {
        bomb.write_all(&zeros).unwrap();
    }
    let bomb = bomb.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "a small file");
    std::fs::write(dir.path().join("bomb.pprof"), bomb).unwrap();

    let run = cli(&["top", "--dir", dir.path().to_str().unwrap()]);
    let table = ok(&run);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("truncated.pprof`: corrupt gzip"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bomb.pprof`: it inflates past 64 MiB"),
        "{stderr}"
    );
    assert!(table.contains("fixture_hot_loop"), "{table}");
}

#[test]
fn profiles_of_different_modes_are_not_merged_and_the_message_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.pb.gz");
    let err = failed(&cli(&[
        "merge",
        world().output_dir.to_str().unwrap(),
        world().cpu_dir.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]));
    assert!(
        err.contains("values of different kinds cannot be summed"),
        "{err}"
    );
    assert!(
        err.contains("wall/nanoseconds") && err.contains("samples/count"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn flamegraph_writes_an_svg_naming_the_handlers_functions_off_cpu_apart() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("flame.svg");
    ok(&cli(&[
        "flamegraph",
        "--function",
        "checkout",
        "-o",
        svg.to_str().unwrap(),
    ]));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<?xml") && text.contains("<svg"), "an SVG");
    for name in [
        "fixture_function::fixture_hot_loop",
        "fixture_function::respond",
        "[invocation future]",
    ] {
        assert!(text.contains(name), "{name} is drawn");
    }
    // Off-CPU leaves are named apart and drawn in their own colour.
    assert!(text.contains("[off-CPU]"), "an off-CPU frame");
    assert!(text.contains("fill=\"rgb(91,143,217)\""), "in blue");

    let cpu = dir.path().join("cpu.svg");
    ok(&cli(&[
        "flamegraph",
        "--sample-index",
        "cpu",
        "-o",
        cpu.to_str().unwrap(),
    ]));
    let text = std::fs::read_to_string(&cpu).unwrap();
    assert!(text.contains("fixture_hot_loop") && !text.contains("[off-CPU]"));
}

/// The delta columns (flat Δ, cum Δ) of `diff`'s table, by name.
fn deltas(table: &str) -> Vec<(String, String, String)> {
    table
        .lines()
        .skip(2)
        .map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols[5..].join(" "), cols[0].to_owned(), cols[1].to_owned())
        })
        .collect()
}

#[test]
fn diff_of_a_set_against_itself_is_all_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("diff.svg");
    let table = ok(&cli(&[
        "diff",
        "--base",
        "function=payment",
        "--target",
        "function=payment",
        "-n",
        "1000",
        "-o",
        svg.to_str().unwrap(),
    ]));
    assert!(table.starts_with("per invocation: base "), "{table}");
    assert!(
        table.lines().next().unwrap().ends_with("delta 0"),
        "{table}"
    );
    let rows = deltas(&table);
    assert!(
        rows.iter()
            .any(|(name, _, _)| name.contains("fixture_hot_loop")),
        "{table}"
    );
    for (name, flat, cum) in &rows {
        assert_eq!((flat.as_str(), cum.as_str()), ("0", "0"), "{name}");
    }
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.contains("fixture_hot_loop"));

    // Files work as a side too, and different invocations differ.
    let output_dir = world().output_dir.to_str().unwrap();
    let table = ok(&cli(&[
        "diff",
        "--base",
        output_dir,
        "--target",
        "function=checkout",
        "-n",
        "1000",
    ]));
    assert!(table.contains("(3 profiles), target"), "{table}");
    assert!(
        deltas(&table).iter().any(|(_, flat, _)| flat != "0"),
        "{table}"
    );
}

#[test]
fn top_focus_keeps_the_matching_stacks_and_cum_sorts_by_cumulative() {
    let table = ok(&cli(&[
        "top",
        "--focus",
        "fixture_hot_loop$",
        "--cum",
        "-n",
        "1000",
    ]));
    let rows = parse_go_top(&table);
    let cum = |name: &str| rows.get(name).map(|r| r.1);
    let hot = cum("fixture_function::fixture_hot_loop").unwrap();
    assert!(hot > 0.0, "{table}");
    // Every kept sample passes through the hot loop, so its callers add up
    // to it, not more.
    assert_eq!(cum("[invocation future]"), Some(hot), "{table}");
    assert!(
        !table.contains("Waker::clone"),
        "off-CPU stacks dropped: {table}"
    );
    let cums: Vec<f64> = table
        .lines()
        .skip(2)
        .map(|l| {
            parse_go_top(&format!("flat\n{l}"))
                .into_values()
                .next()
                .unwrap()
                .1
        })
        .collect();
    assert!(
        cums.windows(2).all(|w| w[0] >= w[1]),
        "sorted by cum: {table}"
    );
}

/// One invocation of the fixture with `symbolize` as given, written under
/// `dir`; returns the profile's path.
async fn profile_of_one_run(dir: &Path, symbolize: bool, seq: u32) -> PathBuf {
    let api = RuntimeApi::start().await.unwrap();
    let mut function = Launch::new(fixture(), &api.endpoint())
        .env("XRAYPROFILE_OUTPUT_DIR", dir.to_str().unwrap())
        .env(
            "XRAYPROFILE_SYMBOLIZE",
            if symbolize { "true" } else { "false" },
        )
        .spawn()
        .unwrap();
    let id = request_id(1000 + seq);
    let outcome = invoke(
        &api,
        &id,
        Some(trace_header(seq, 0)),
        json!({ "spin_ms": 300 }),
    )
    .await;
    assert!(matches!(outcome, Outcome::Response(_)), "{outcome:?}");
    function.kill().await;
    dir.join(PREFIX)
        .join(trace_root(seq, 0))
        .join(format!("{id}.pprof"))
}

/// The `n` functions with the most cumulative CPU time, synthetic frames
/// (`[...]`) and addresses left out.
fn top_cum(file: &Path, n: usize) -> Vec<String> {
    let table = ok(&cli(&[
        "top",
        "--sample-index",
        "cpu",
        "--cum",
        "-n",
        "1000",
        file.to_str().unwrap(),
    ]));
    table
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().nth(5).map(str::to_owned))
        .filter(|name| !name.starts_with('[') && !name.starts_with("0x"))
        .take(n)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symbolize_gives_the_names_of_the_symbolized_profile_and_refuses_another_binary() {
    let dir = tempfile::tempdir().unwrap();
    let named = profile_of_one_run(dir.path(), true, 31).await;
    let addresses = profile_of_one_run(dir.path(), false, 32).await;
    let before = pprof_view::decode(&std::fs::read(&addresses).unwrap()).unwrap();
    assert!(
        !pprof_view::function_names(&before)
            .iter()
            .any(|n| n.contains("fixture_hot_loop")),
        "address-level: no names yet"
    );

    let fixture = fixture().to_str().unwrap();
    let run = cli(&[
        "symbolize",
        "--binary",
        fixture,
        addresses.to_str().unwrap(),
    ]);
    ok(&run);
    let symbolized = addresses.with_file_name(format!(
        "{}.symbolized.pprof",
        addresses.file_stem().unwrap().to_str().unwrap()
    ));
    let expected = top_cum(&named, 6);
    assert!(
        expected
            .iter()
            .any(|n| n == "fixture_function::fixture_hot_loop"),
        "{expected:?}"
    );
    let got = top_cum(&symbolized, 1000);
    for name in &expected {
        assert!(
            got.contains(name),
            "{name} missing from the symbolized profile: {got:?}"
        );
    }

    // Another binary's build ID matches no mapping: refused, nothing written.
    let other = env!("CARGO_BIN_EXE_fixture_wall");
    let out = tempfile::tempdir().unwrap();
    let err = failed(&cli(&[
        "symbolize",
        "--binary",
        other,
        "-o",
        out.path().to_str().unwrap(),
        addresses.to_str().unwrap(),
    ]));
    assert!(
        err.contains("has GNU build ID") && err.contains("no mapping has it"),
        "{err}"
    );
    assert!(std::fs::read_dir(out.path()).unwrap().next().is_none());
}
