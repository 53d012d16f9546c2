//! P1: what `#[xrayprofile]` adds to an invocation that is not sampled, next to
//! the same handler without the attribute, in the same run.
//!
//! `cargo bench -p xrayprofile --bench unsampled`
//!
//! Time: median over rounds of the per-call time of each handler (calls
//! alternate by round). Allocations: counted by a global allocator around
//! 100,000 calls of each. The invocation carries an X-Ray header whose key
//! (`0x01f0` = 496) is above the threshold, the common unsampled case.
#![allow(clippy::print_stdout, missing_docs, unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Poll, Waker};
use std::time::Instant;

use lambda_runtime::{Context, Error, LambdaEvent};
use xrayprofile::xrayprofile;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[xrayprofile(threshold = 0, bucket = "bench-profiles")]
async fn annotated(event: &LambdaEvent<u64>) -> Result<u64, Error> {
    Ok(black_box(event.payload).wrapping_add(1))
}

async fn plain(event: &LambdaEvent<u64>) -> Result<u64, Error> {
    Ok(black_box(event.payload).wrapping_add(1))
}

/// Polls a future that completes without waiting.
fn run<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = std::task::Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

const CALLS: u64 = 200_000;
const ROUNDS: usize = 31;

fn ns_per_call(f: impl Fn() -> u64) -> f64 {
    let start = Instant::now();
    let mut sum = 0_u64;
    for _ in 0..CALLS {
        sum = sum.wrapping_add(f());
    }
    black_box(sum);
    start.elapsed().as_nanos() as f64 / CALLS as f64
}

fn allocations_per_call(f: impl Fn() -> u64) -> f64 {
    const N: u64 = 100_000;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..N {
        black_box(f());
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / N as f64
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn event(trace_header: Option<&str>) -> LambdaEvent<u64> {
    let mut context = Context::default();
    context.request_id = "8476a536-e9f4-11e8-9739-2dfe598c3fcd".into();
    context.invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench".into();
    context.xray_trace_id = trace_header.map(str::to_owned);
    LambdaEvent::new(7_u64, context)
}

fn compare(label: &str, event: &LambdaEvent<u64>) {
    let annotated = || run(annotated(event)).unwrap_or(0);
    let plain = || run(plain(event)).unwrap_or(0);
    // The first invocation reads the environment once; measure after it.
    for _ in 0..1000 {
        black_box(annotated());
        black_box(plain());
    }
    let (mut a, mut p, mut d) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let pn = ns_per_call(plain);
        let an = ns_per_call(annotated);
        p.push(pn);
        a.push(an);
        d.push(an - pn);
    }
    let allocs_plain = allocations_per_call(plain);
    let allocs_annotated = allocations_per_call(annotated);
    println!("P1 unsampled invocation, {label} ({CALLS} calls x {ROUNDS} rounds, median)");
    println!(
        "  plain handler:      {:7.1} ns/call  {:.2} allocations/call",
        median(&mut p),
        allocs_plain
    );
    println!(
        "  annotated handler:  {:7.1} ns/call  {:.2} allocations/call",
        median(&mut a),
        allocs_annotated
    );
    println!(
        "  added:              {:7.1} ns/call  {:.2} allocations/call",
        median(&mut d),
        allocs_annotated - allocs_plain
    );
}

fn main() {
    let probe = event(None);
    println!(
        "handler future size: annotated {} bytes, plain {} bytes",
        std::mem::size_of_val(&annotated(&probe)),
        std::mem::size_of_val(&plain(&probe))
    );
    compare(
        "X-Ray header above the threshold",
        &event(Some(
            "Root=1-5759e988-bd862e3fe1be46a9942701f0;Parent=53995c3f42cd8ad8;Sampled=1",
        )),
    );
    compare("no X-Ray header (tracing off)", &event(None));
}
