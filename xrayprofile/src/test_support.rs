//! What the unit tests of several modules share: a CPU burner they find by
//! name, and the lock that keeps tests that start the process-wide sampler
//! (or mark a poll's root for it) from running at once.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Burns the calling thread's CPU in a function tests find by name.
#[inline(never)]
pub(crate) fn spin_in_named_leaf(duration: Duration) -> u64 {
    let start = Instant::now();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while start.elapsed() < duration {
        for _ in 0..1_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        x = std::hint::black_box(x);
    }
    x
}

/// Burns `cpu` of this thread's CPU time in [`spin_in_named_leaf`]: unlike
/// a wall-clock spin, it takes longer under contention, so the sampler's
/// per-thread CPU timers fire as often on a loaded machine as on a quiet one.
#[inline(never)]
pub(crate) fn burn_thread_cpu(cpu: Duration) -> u64 {
    let start = crate::sampler::thread_cpu_time();
    let mut x = 0;
    while crate::sampler::thread_cpu_time().saturating_sub(start) < cpu {
        x ^= spin_in_named_leaf(Duration::from_micros(200));
    }
    x
}

/// Tests that start the process-wide sampler take this, one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Takes [`SERIAL`]; a test that panicked while holding it does not stop
/// the others.
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
