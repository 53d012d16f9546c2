//! P2: CPU time of a 200 ms CPU-bound handler profiled at 99 Hz, next to the
//! same handler unprofiled, in the same process.
//!
//! `cargo bench -p xrayprofile --bench cpu_overhead`
//!
//! 21 pairs, alternating which runs first; each pair gives the ratio of
//! process CPU time (profiled: `start` + body, the signal handlers included;
//! `finish` is P4) to the unprofiled body's. Reports the median ratio.
#![allow(clippy::print_stdout, missing_docs, unsafe_code)]

mod support;
use support as workload;

use std::hint::black_box;
use std::time::Duration;

use xrayprofile::__private::bench::Profiling;

fn unprofiled(chunks: u64) -> Duration {
    let start = workload::process_cpu();
    black_box(workload::work_handler(chunks));
    workload::process_cpu() - start
}

fn profiled(chunks: u64) -> (Duration, i64) {
    let start = workload::process_cpu();
    let profile = Profiling::start().unwrap();
    black_box(workload::work_handler(chunks));
    let cpu = workload::process_cpu() - start;
    let samples = profile.finish().map(|e| e.samples).unwrap_or(0);
    (cpu, samples)
}

fn main() {
    let chunks = workload::calibrate(Duration::from_millis(200));
    // Warm up both paths (first-use costs are P4's and P3's business).
    unprofiled(chunks);
    profiled(chunks);
    let mut ratios = Vec::new();
    let (mut off, mut on, mut samples) = (Vec::new(), Vec::new(), Vec::new());
    for pair in 0..21 {
        let (a, (b, n)) = if pair % 2 == 0 {
            let a = unprofiled(chunks);
            (a, profiled(chunks))
        } else {
            let b = profiled(chunks);
            (unprofiled(chunks), b)
        };
        ratios.push(b.as_secs_f64() / a.as_secs_f64());
        off.push(a);
        on.push(b);
        samples.push(n);
    }
    ratios.sort_by(f64::total_cmp);
    off.sort();
    on.sort();
    samples.sort();
    println!("P2 CPU time of a 200 ms handler (21 pairs, median)");
    println!(
        "  unprofiled:          {:8.2} ms",
        off[10].as_secs_f64() * 1e3
    );
    println!(
        "  profiled at 99 Hz:   {:8.2} ms  ({} samples)",
        on[10].as_secs_f64() * 1e3,
        samples[10]
    );
    println!(
        "  ratio profiled/unprofiled: {:.4} ({:+.2} %); min {:.4}, max {:.4}",
        ratios[10],
        (ratios[10] - 1.0) * 100.0,
        ratios[0],
        ratios[20]
    );
}
