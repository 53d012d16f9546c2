//! Issue 8's benchmark: the latency of a chatty async handler profiled in
//! `wall` mode (waker probe + CPU sampler) next to the same handler
//! unprofiled, interleaved in one run.
//!
//! `cargo bench -p xrayprofile-tests --bench wall_overhead`
//!
//! The handler makes 100 HTTP/1.1 GETs to a loopback server over one
//! keep-alive connection (as an SDK client's pool would), 2,000 round trips
//! over tokio mpsc channels to a task that answers, and 2,000 `yield_now`s:
//! about 4,100 polls of its future, most of which register a waker. Two
//! densities: the server answering at once (≈5 ms a round, a poll every
//! ≈1 µs: the worst case), and after 1 ms (≈120 ms, the density of the
//! reference handler in `../shared/docs/wall-clock.md` that set issue 8's
//! targets). Each on a current-thread runtime and on tokio's multi-thread
//! one with 2 workers, as lambda_runtime's tokio main has on a 2-vCPU
//! function. 41 rounds of the three variants,
//! back to back; the figure is the median over rounds of each variant's
//! time divided by the unprofiled time of the same round (neighbouring runs
//! share the machine's load), with the median latencies beside it. The
//! latency is the handler's own (what the caller waits for); building the
//! profile afterwards is P4's row in `docs/performance.md`.
//!
//! The probe's unwinder is the DWARF one unless xrayprofile was built with
//! frame pointers; the output's first line says which. For the frame-pointer
//! row, build in a separate target directory (the flags rebuild everything):
//!
//! `RUSTFLAGS="-C force-frame-pointers=yes" CARGO_TARGET_DIR=target-fp cargo bench -p xrayprofile-tests --bench wall_overhead`
#![allow(clippy::print_stdout, missing_docs)]

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xrayprofile::__private::bench::{self, Profiling};

const GETS: usize = 100;
const ROUND_TRIPS: usize = 2_000;
const YIELDS: usize = 2_000;
const RUNS: usize = 41;
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// A loopback HTTP server answering each request at once (on the
/// runtime), or after `delay` (on its own threads, with `std`'s sleep,
/// which is exact to a few µs where tokio's timer rounds up to the next
/// millisecond).
async fn server(delay: Duration) -> u16 {
    if !delay.is_zero() {
        return slow_server(delay);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0_u8; 1024];
                // One response per request on a keep-alive connection.
                while let Ok(n) = socket.read(&mut request).await {
                    if n == 0 || socket.write_all(RESPONSE).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

fn slow_server(delay: Duration) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut socket in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut request = [0_u8; 1024];
                while let Ok(n) = socket.read(&mut request) {
                    std::thread::sleep(delay);
                    if n == 0 || socket.write_all(RESPONSE).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[inline(never)]
async fn get(stream: &mut tokio::net::TcpStream) -> usize {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut response = [0_u8; RESPONSE.len()];
    stream.read_exact(&mut response).await.unwrap();
    response.len()
}

#[inline(never)]
async fn round_trips(n: usize) -> u64 {
    let (to_echo, mut from_us) = tokio::sync::mpsc::channel::<u64>(1);
    let (to_us, mut from_echo) = tokio::sync::mpsc::channel::<u64>(1);
    let echo = tokio::spawn(async move {
        while let Some(v) = from_us.recv().await {
            if to_us.send(v + 1).await.is_err() {
                break;
            }
        }
    });
    let mut sum = 0;
    for i in 0..n {
        to_echo.send(i as u64).await.unwrap();
        sum += from_echo.recv().await.unwrap();
    }
    drop(to_echo);
    let _ = echo.await;
    sum
}

#[inline(never)]
async fn yields(n: usize) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

/// The chatty handler.
async fn chatty(port: u16) -> u64 {
    let mut total = 0;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    for _ in 0..GETS {
        total += get(&mut stream).await as u64;
    }
    total += round_trips(ROUND_TRIPS).await;
    yields(YIELDS).await;
    total
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let unwinder = xrayprofile::__private::bench::unwinder();
    println!(
        "waker probe unwinder: {}",
        if unwinder.frame_pointers {
            "frame pointers (built with -C force-frame-pointers=yes)"
        } else {
            "DWARF (libgcc; build with -C force-frame-pointers=yes for the frame-pointer walk)"
        }
    );
    println!(
        "\nper capture (one `Waker::clone` of the probe waker in a probed poll, no sampler), 20,000 clones, 5 runs:"
    );
    println!(
        "| run | frames | DWARF: capture / whole clone | frame pointers: capture / whole clone |"
    );
    println!("|---|---|---|---|");
    for run in 1..=5 {
        for depth in [0, 16] {
            let cost = xrayprofile::__private::bench::capture_cost(20_000, depth);
            let fp = cost.frame_pointers.map_or_else(
                || "(not in this build)".to_owned(),
                |(capture, clone)| format!("{capture:.0} ns / {clone:.0} ns"),
            );
            println!(
                "| {run} | {} | {:.0} ns / {:.0} ns | {fp} |",
                cost.frames, cost.dwarf.0, cost.dwarf.1
            );
        }
    }
    println!();
    println!(
        "per poll of a future that only yields (current-thread runtime, no sampler), 200,000 polls, 5 runs:"
    );
    println!(
        "| run | plain | + panic catcher (`cpu` mode) | + wall recorder, timing only | + wall recorder, default budget |"
    );
    println!("|---|---|---|---|---|");
    for run in 1..=5 {
        let cost = xrayprofile::__private::bench::poll_cost(200_000).unwrap();
        println!(
            "| {run} | {:.0} ns | {:+.0} ns | {:+.0} ns | {:+.0} ns |",
            cost.plain,
            cost.caught - cost.plain,
            cost.timed - cost.plain,
            cost.recorded - cost.plain
        );
    }
    // Two densities. "dense": the server answers at once, a poll every
    // ≈1 µs (current-thread), the worst case. "reference": the server
    // answers after 1 ms, like a service on the same host, ≈120 ms per
    // round: the density of ../shared/docs/wall-clock.md's chatty handler
    // (118 ms for 4,100 polls), against which issue 8 set its targets.
    for (shape, delay) in [
        ("dense", Duration::ZERO),
        ("reference", Duration::from_millis(1)),
    ] {
        // Current-thread first: no cross-thread wake-ups, so the
        // run-to-run noise is small enough to see the per-poll cost.
        let mut current = tokio::runtime::Builder::new_current_thread();
        measure(
            &format!("{shape}, current-thread runtime"),
            current.enable_all().build().unwrap(),
            delay,
        );
        let mut multi = tokio::runtime::Builder::new_multi_thread();
        measure(
            &format!("{shape}, multi-thread runtime, 2 workers"),
            multi.worker_threads(2).enable_all().build().unwrap(),
            delay,
        );
    }
    let unwinder = xrayprofile::__private::bench::unwinder();
    println!(
        "\nunwinder at the end: {}; captures that fell back to DWARF: {}; checked against DWARF: {} ({} mismatches)",
        if unwinder.frame_pointers {
            "frame pointers"
        } else {
            "DWARF"
        },
        unwinder.fallbacks,
        unwinder.checked,
        unwinder.mismatches
    );
}

fn measure(name: &str, runtime: tokio::runtime::Runtime, delay: Duration) {
    runtime.block_on(async {
        let port = server(delay).await;
        // Warm-up: connections, the unwinder's tables, the symbolizer.
        let _ = chatty(port).await;
        let _ = Profiling::start().unwrap().wall(chatty(port)).await.unwrap();

        let (mut plain, mut profiled, mut cpu_only) = (Vec::new(), Vec::new(), Vec::new());
        // In a frame-pointer build, the same wall run with the walk turned
        // off (DWARF), interleaved: the two unwinders under the same load.
        let frame_pointers = bench::unwinder().frame_pointers;
        let mut profiled_dwarf = Vec::new();
        let mut dwarf_comments = String::new();
        let mut sizes = Vec::new();
        let mut comments = String::new();
        for _ in 0..RUNS {
            if frame_pointers {
                bench::use_frame_pointers(false);
                let profile = Profiling::start().unwrap();
                let (out, took, encoded) = profile.wall(chatty(port)).await.unwrap();
                bench::use_frame_pointers(true);
                std::hint::black_box(out);
                profiled_dwarf.push(took);
                if dwarf_comments.is_empty() {
                    dwarf_comments = probe_comment(&encoded.gzipped);
                }
            }

            let started = Instant::now();
            std::hint::black_box(chatty(port).await);
            plain.push(started.elapsed());

            let profile = Profiling::start().unwrap();
            let started = Instant::now();
            std::hint::black_box(chatty(port).await);
            cpu_only.push(started.elapsed());
            drop(profile.finish());

            let profile = Profiling::start().unwrap();
            let (out, took, encoded) = profile.wall(chatty(port)).await.unwrap();
            std::hint::black_box(out);
            profiled.push(took);
            sizes.push(encoded.gzipped.len());
            if comments.is_empty() {
                comments = probe_comment(&encoded.gzipped);
            }
        }
        let ratio = |variant: &[Duration]| -> f64 {
            let mut ratios: Vec<f64> = variant
                .iter()
                .zip(&plain)
                .map(|(v, p)| v.as_secs_f64() / p.as_secs_f64())
                .collect();
            ratios.sort_by(f64::total_cmp);
            (ratios[ratios.len() / 2] - 1.0) * 100.0
        };
        let (cpu_ratio, wall_ratio) = (ratio(&cpu_only), ratio(&profiled));
        let dwarf_row = frame_pointers.then(|| (ratio(&profiled_dwarf), median(profiled_dwarf)));
        let (plain, profiled, cpu_only) = (median(plain), median(profiled), median(cpu_only));
        println!("\n{name}: chatty handler, {GETS} keep-alive GETs answered after {delay:?}, {ROUND_TRIPS} mpsc round trips, {YIELDS} yields; {RUNS} rounds");
        println!("| variant | median latency | vs unprofiled (median of per-round ratios) |");
        println!("|---|---|---|");
        println!("| unprofiled | {:.1} ms | |", ms(plain));
        println!(
            "| `mode = \"cpu\"`: CPU sampler only | {:.1} ms | {:+.1} % |",
            ms(cpu_only),
            cpu_ratio
        );
        println!(
            "| `mode = \"wall\"`: waker probe ({} unwinder) + CPU sampler | {:.1} ms | {:+.1} % |",
            if xrayprofile::__private::bench::unwinder().frame_pointers {
                "frame-pointer"
            } else {
                "DWARF"
            },
            ms(profiled),
            wall_ratio
        );
        if let Some((dwarf_ratio, dwarf)) = dwarf_row {
            println!(
                "| `mode = \"wall\"`, same binary, frame-pointer walk off (DWARF unwinder) + CPU sampler | {:.1} ms | {:+.1} % |",
                ms(dwarf),
                dwarf_ratio
            );
        }
        sizes.sort_unstable();
        println!("profile size (gzipped): median {} bytes", sizes[sizes.len() / 2]);
        println!("first profile's probe comments: {comments}");
        if frame_pointers {
            println!("first DWARF profile's probe comments: {dwarf_comments}");
        }
    });
}

/// The profile's `probe:` comments: how many polls were recorded.
fn probe_comment(gzipped: &[u8]) -> String {
    let Ok(profile) = xrayprofile_tests::pprof_view::decode(gzipped) else {
        return String::new();
    };
    xrayprofile_tests::pprof_view::comments(&profile)
        .into_iter()
        .filter(|c| c.starts_with("probe:") || c.starts_with("wall:"))
        .collect::<Vec<_>>()
        .join(" | ")
}
