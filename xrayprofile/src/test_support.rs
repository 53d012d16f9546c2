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

/// Tests that start the process-wide sampler take this, one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Takes [`SERIAL`]; a test that panicked while holding it does not stop
/// the others.
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits for a symbol warm-up that a profile another test dropped
/// unfinished may have left running (and excluded from sampling).
pub(crate) fn wait_for_warm_ups() {
    while crate::symbolize::warming_up() {
        std::thread::sleep(Duration::from_millis(10));
    }
}
