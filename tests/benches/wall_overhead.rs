//! Issue 8's benchmark: the latency of a chatty async handler profiled in
//! `wall` mode (waker probe + CPU sampler) next to the same handler
//! unprofiled, interleaved in one run.
//!
//! `cargo bench -p xrayprofile-tests --bench wall_overhead`; arguments after
//! `--` pick parts by name, as test filters do: `costs` (the per-capture and
//! per-poll tables), `dense`, `reference`, `current-thread`, `multi-thread`.
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
//! function. 41 rounds of the variants (unprofiled, `cpu` mode, `wall`
//! mode, `wall` with polls only timed and with every poll recorded, and in a
//! frame-pointer build `wall` with the walk off), back to back in an order
//! rotated each round; the figure is the median over rounds of each
//! variant's time divided by the unprofiled time of the same round
//! (neighbouring runs share the machine's load), with the median latencies
//! beside it, and the extra CPU time of the thread that polls the handler.
//! The latency is the handler's own (what the caller waits for); building
//! the profile afterwards is P4's row in `docs/performance.md`.
//!
//! The probe's unwinder is the DWARF one unless xrayprofile was built with
//! frame pointers; the output's first line says which. For the frame-pointer
//! row, build in a separate target directory (the flags rebuild everything):
//!
//! `RUSTFLAGS="-C force-frame-pointers=yes" CARGO_TARGET_DIR=target-fp cargo bench -p xrayprofile-tests --bench wall_overhead`
#![allow(clippy::print_stdout, missing_docs)]

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xrayprofile::__private::bench::{self, Profiling, Recording};

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

/// One round of one variant: the handler's latency, and the CPU time of the
/// thread that polled it.
type Round = (Duration, Duration);

/// The handler, and the CPU time used meanwhile by the thread that polls it
/// (`block_on`'s, on either runtime; the mpsc echo task is not in it on the
/// multi-thread runtime).
async fn chatty_cpu(port: u16) -> (u64, Duration) {
    let cpu = cpu_time::ThreadTime::now();
    let out = chatty(port).await;
    (out, cpu.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Whether the bench's arguments ask for the part named `name` (all parts
/// when none is given).
fn wanted(name: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    filters.is_empty() || filters.iter().any(|filter| name.contains(filter.as_str()))
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
    if wanted("costs") {
        costs();
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

/// What one capture and one poll cost, apart from any handler.
fn costs() {
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
    for (workload, what, units) in [
        (
            bench::Workload::Yields,
            "poll of a future that only yields",
            200_000,
        ),
        (
            bench::Workload::RoundTrips,
            "mpsc round trip to a task that answers",
            50_000,
        ),
    ] {
        println!();
        println!("per {what} (current-thread runtime, no sampler), {units} of them, 5 runs:");
        println!(
            "| run | plain | + panic catcher (`cpu` mode) | + wall recorder, timing only | + wall recorder, default budget | + wall recorder, every poll recorded (of which the budget counts, per recorded poll) |"
        );
        println!("|---|---|---|---|---|---|");
        for run in 1..=5 {
            let cost = bench::poll_cost(workload, units).unwrap();
            println!(
                "| {run} | {:.0} ns | {:+.0} ns | {:+.0} ns | {:+.0} ns | {:+.0} ns ({:.0} ns) |",
                cost.plain,
                cost.caught - cost.plain,
                cost.timed - cost.plain,
                cost.recorded - cost.plain,
                cost.every_poll - cost.plain,
                cost.every_poll_counted
            );
        }
    }
}

fn measure(name: &str, runtime: tokio::runtime::Runtime, delay: Duration) {
    if !wanted(name) {
        return;
    }
    runtime.block_on(async {
        let port = server(delay).await;
        // Warm-up: connections, the unwinder's tables, the symbolizer.
        let _ = chatty(port).await;
        let _ = Profiling::start().unwrap().wall(chatty(port)).await.unwrap();

        // Per round: latency, and the CPU time of the thread that polled
        // the handler.
        let (mut plain, mut profiled, mut cpu_only) = (Vec::new(), Vec::new(), Vec::new());
        // The probe's two extremes, to price a recorded poll in this
        // handler: polls only timed, and every poll recorded.
        let (mut timing_only, mut every_poll) = (Vec::new(), Vec::new());
        let mut every_poll_counted = Vec::new();
        // In a frame-pointer build, the same wall run with the walk turned
        // off (DWARF), interleaved: the two unwinders under the same load.
        let frame_pointers = bench::unwinder().frame_pointers;
        let mut profiled_dwarf = Vec::new();
        let mut dwarf_comments = String::new();
        let mut sizes = Vec::new();
        let mut comments = String::new();
        // Six variants a round, their order rotated from round to round so
        // that none always follows the slowest (the multi-thread rows moved
        // by several % with a fixed order).
        for round in 0..RUNS {
            for slot in 0..6 {
                match (round + slot) % 6 {
                    0 if frame_pointers => {
                        bench::use_frame_pointers(false);
                        let profile = Profiling::start().unwrap();
                        let ((out, cpu), took, encoded) =
                            profile.wall(chatty_cpu(port)).await.unwrap();
                        bench::use_frame_pointers(true);
                        std::hint::black_box(out);
                        profiled_dwarf.push((took, cpu));
                        if dwarf_comments.is_empty() {
                            dwarf_comments = probe_comment(&encoded.gzipped);
                        }
                    }
                    0 => {}
                    1 => {
                        let started = Instant::now();
                        let (out, cpu) = chatty_cpu(port).await;
                        plain.push((started.elapsed(), cpu));
                        std::hint::black_box(out);
                    }
                    2 => {
                        let profile = Profiling::start().unwrap();
                        let started = Instant::now();
                        let (out, cpu) = chatty_cpu(port).await;
                        cpu_only.push((started.elapsed(), cpu));
                        std::hint::black_box(out);
                        drop(profile.finish());
                    }
                    variant @ (3 | 4) => {
                        let (recording, rounds) = if variant == 3 {
                            (Recording::TimingOnly, &mut timing_only)
                        } else {
                            (Recording::EveryPoll, &mut every_poll)
                        };
                        let profile = Profiling::start().unwrap();
                        let ((out, cpu), took, encoded) = profile
                            .wall_recording(recording, chatty_cpu(port))
                            .await
                            .unwrap();
                        std::hint::black_box(out);
                        rounds.push((took, cpu));
                        if recording == Recording::EveryPoll {
                            every_poll_counted.extend(counted_per_recorded_poll(&encoded.gzipped));
                        }
                    }
                    _ => {
                        let profile = Profiling::start().unwrap();
                        let ((out, cpu), took, encoded) =
                            profile.wall(chatty_cpu(port)).await.unwrap();
                        std::hint::black_box(out);
                        profiled.push((took, cpu));
                        sizes.push(encoded.gzipped.len());
                        if comments.is_empty() {
                            comments = probe_comment(&encoded.gzipped);
                        }
                    }
                }
            }
        }
        let plain_latency = median(plain.iter().map(|&(took, _)| took).collect());
        // Median latency; its median per-round ratio to the unprofiled
        // round; the handler thread's median extra CPU per round, as a
        // share of the unprofiled latency.
        let row = |variant: &[Round]| -> String {
            let per_round = |f: &dyn Fn(&Round, &Round) -> f64| {
                let mut v: Vec<f64> = variant.iter().zip(&plain).map(|(v, p)| f(v, p)).collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let ratio = per_round(&|v, p| v.0.as_secs_f64() / p.0.as_secs_f64());
            let extra_cpu = per_round(&|v, p| v.1.as_secs_f64() - p.1.as_secs_f64());
            format!(
                "{:.1} ms | {:+.1} % | {:+.2} ms ({:+.1} %)",
                ms(median(variant.iter().map(|&(took, _)| took).collect())),
                (ratio - 1.0) * 100.0,
                extra_cpu * 1e3,
                extra_cpu / plain_latency.as_secs_f64() * 100.0
            )
        };
        println!("\n{name}: chatty handler, {GETS} keep-alive GETs answered after {delay:?}, {ROUND_TRIPS} mpsc round trips, {YIELDS} yields; {RUNS} rounds");
        println!("| variant | median latency | vs unprofiled (median of per-round ratios) | extra CPU of the handler's thread per round (share of the unprofiled latency) |");
        println!("|---|---|---|---|");
        let plain_cpu = median(plain.iter().map(|&(_, cpu)| cpu).collect());
        println!(
            "| unprofiled | {:.1} ms | | ({:.1} ms of CPU) |",
            ms(plain_latency),
            ms(plain_cpu)
        );
        println!("| `mode = \"cpu\"`: CPU sampler only | {} |", row(&cpu_only));
        println!(
            "| `mode = \"wall\"`: waker probe ({} unwinder) + CPU sampler | {} |",
            if xrayprofile::__private::bench::unwinder().frame_pointers {
                "frame-pointer"
            } else {
                "DWARF"
            },
            row(&profiled)
        );
        println!(
            "| `mode = \"wall\"`, polls only timed | {} |",
            row(&timing_only)
        );
        println!(
            "| `mode = \"wall\"`, every poll recorded | {} |",
            row(&every_poll)
        );
        if frame_pointers {
            println!(
                "| `mode = \"wall\"`, same binary, frame-pointer walk off (DWARF unwinder) + CPU sampler | {} |",
                row(&profiled_dwarf)
            );
        }
        if let Some(&(polls, _)) = every_poll_counted.first() {
            let mut counted: Vec<f64> = every_poll_counted.iter().map(|&(_, ns)| ns).collect();
            counted.sort_by(f64::total_cmp);
            // The median over rounds of `a`'s extra CPU over `b`'s, per poll.
            let extra_per_poll = |a: &[Round], b: &[Round]| -> f64 {
                let mut v: Vec<f64> = a
                    .iter()
                    .zip(b)
                    .map(|(a, b)| (a.1.as_secs_f64() - b.1.as_secs_f64()) * 1e9 / polls)
                    .collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let extra = extra_per_poll(&every_poll, &timing_only);
            let timed = extra_per_poll(&timing_only, &plain);
            let (per_poll, per_registration) = bench::budget_allowances();
            println!(
                "the probe's costs in this handler (CPU of the handler's thread, medians over rounds, {polls} polls a round): timing a poll {:.0} ns (the budget counts {per_poll} ns); recording a poll {:.0} ns (the budget counted {:.0} ns, of which {per_registration} ns per registration not timed)",
                timed,
                extra,
                counted[counted.len() / 2]
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

/// How many polls the probe recorded, and what its budget counted per
/// recorded poll for recording it, in ns, from the profile's comment
/// "recorded N of M polls (the probe cost X ms as its budget counts it,
/// recording Y ms)".
fn counted_per_recorded_poll(gzipped: &[u8]) -> Option<(f64, f64)> {
    let comments = probe_comment(gzipped);
    let recorded: f64 = comments
        .split("recorded ")
        .nth(1)?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    let ms: f64 = comments
        .split("recording ")
        .nth(1)?
        .split("ms")
        .next()?
        .parse()
        .ok()?;
    Some((recorded, ms * 1e6 / recorded))
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
