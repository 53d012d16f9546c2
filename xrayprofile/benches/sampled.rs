//! P3 and P4: what one sampled invocation adds, for the first sampled
//! invocation of the process and the following nine; then the profile sizes.
//!
//! `cargo bench -p xrayprofile --features bench --bench sampled`
//!
//! Each invocation: VmHWM is reset to the current RSS (`5` written to
//! `/proc/self/clear_refs`), VmRSS is read as the baseline, the profiler
//! starts, a 200 ms CPU-bound body runs, then the profile is stopped,
//! symbolized, encoded and gzipped. P3 is VmHWM − baseline; P4 is the time
//! from the body's return to the gzipped bytes. The same body unprofiled is
//! the baseline row. "body" is the body's wall time; "other CPU" is the CPU
//! time the process spent on other threads than the body's while it ran
//! (the sampler's ticker; there is no symbol warm-up thread any more).
#![allow(clippy::print_stdout, missing_docs, unsafe_code)]

mod support;
use support as workload;

use std::hint::black_box;
use std::time::{Duration, Instant};

use xrayprofile::__private::bench::Profiling;

struct Row {
    body: Duration,
    other_cpu: Duration,
    peak_kib: i64,
    after_kib: i64,
    ready: Duration,
    gzipped: Vec<u8>,
    samples: i64,
}

fn sampled(chunks: u64) -> Row {
    workload::reset_peak();
    let base = workload::status_kib("VmRSS");
    let started = Instant::now();
    let (process_cpu, thread_cpu) = (workload::process_cpu(), workload::thread_cpu());
    let profile = Profiling::start().unwrap();
    black_box(workload::work_handler(chunks));
    let returned = Instant::now();
    let body = returned - started;
    let other_cpu =
        (workload::process_cpu() - process_cpu).saturating_sub(workload::thread_cpu() - thread_cpu);
    let encoded = profile.finish();
    let ready = returned.elapsed();
    let peak = workload::status_kib("VmHWM");
    let after = workload::status_kib("VmRSS");
    Row {
        body,
        other_cpu,
        peak_kib: peak as i64 - base as i64,
        after_kib: after as i64 - base as i64,
        ready,
        gzipped: encoded.gzipped,
        samples: encoded.samples,
    }
}

fn unprofiled(chunks: u64) -> (i64, Duration) {
    workload::reset_peak();
    let base = workload::status_kib("VmRSS");
    let started = Instant::now();
    black_box(workload::work_handler(chunks));
    let body = started.elapsed();
    (workload::status_kib("VmHWM") as i64 - base as i64, body)
}

fn main() {
    let chunks = workload::calibrate(Duration::from_millis(200));
    let start_rss = workload::status_kib("VmRSS");
    let (unprofiled_peak, unprofiled_body) = unprofiled(chunks);
    let rows: Vec<Row> = (0..10).map(|_| sampled(chunks)).collect();
    // To see what a slow one symbolized: `go tool pprof -traces <dir>/1.pprof`.
    if let Some(dir) = std::env::var_os("XRAYPROFILE_BENCH_SAVE") {
        for (i, row) in rows.iter().enumerate() {
            let path = std::path::Path::new(&dir).join(format!("{}.pprof", i + 1));
            std::fs::write(path, &row.gzipped).unwrap();
        }
    }
    let end_rss = workload::status_kib("VmRSS");
    println!(
        "P3/P4 one sampled invocation, 200 ms CPU-bound body (process RSS before: {:.1} MiB)",
        start_rss as f64 / 1024.0
    );
    println!(
        "  unprofiled body:          body {:6.1} ms, peak +{:.2} MiB",
        unprofiled_body.as_secs_f64() * 1e3,
        unprofiled_peak as f64 / 1024.0
    );
    for (i, row) in rows.iter().enumerate() {
        println!(
            "  sampled invocation {:2}:    body {:6.1} ms, other CPU {:5.1} ms, peak +{:.2} MiB, after +{:.2} MiB, return->gzip {:6.2} ms, {} samples, {} bytes gz",
            i + 1,
            row.body.as_secs_f64() * 1e3,
            row.other_cpu.as_secs_f64() * 1e3,
            row.peak_kib as f64 / 1024.0,
            row.after_kib as f64 / 1024.0,
            row.ready.as_secs_f64() * 1e3,
            row.samples,
            row.gzipped.len()
        );
    }
    println!(
        "  process RSS after 10 sampled invocations: +{:.2} MiB over the start",
        (end_rss as i64 - start_rss as i64) as f64 / 1024.0
    );
    let long = {
        let profile = Profiling::start().unwrap();
        black_box(workload::work_handler(chunks * 10));
        profile.finish()
    };
    let addresses = |chunks| {
        let profile = Profiling::start().unwrap();
        black_box(workload::work_handler(chunks));
        profile.finish_addresses()
    };
    let (short_addresses, long_addresses) = (addresses(chunks), addresses(chunks * 10));
    println!(
        "Profile size: 200 ms body: {} bytes gz ({} samples); 2 s body: {} bytes gz ({} samples)",
        rows[rows.len() - 1].gzipped.len(),
        rows[rows.len() - 1].samples,
        long.gzipped.len(),
        long.samples
    );
    println!(
        "Address-level profile size: 200 ms body: {} bytes gz ({} samples); 2 s body: {} bytes gz ({} samples)",
        short_addresses.gzipped.len(),
        short_addresses.samples,
        long_addresses.gzipped.len(),
        long_addresses.samples
    );
}
