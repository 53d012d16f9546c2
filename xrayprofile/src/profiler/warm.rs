//! Parses the symbolizer's tables on a background thread while the handler
//! runs, so that a cold cache is not paid for after the handler returns.
//!
//! The first `backtrace::resolve` in a process reads the binary's symbol
//! table and DWARF unit index, and each compilation unit's line table on its
//! first lookup: 10.6 ms after a 200 ms handler on a 5.5 MB binary with line
//! tables, against 0.7 ms once parsed (docs/performance.md, P4). When a
//! sampled invocation starts with a cold cache, [`start`] resolves the
//! starting thread's own stack (the runtime, the handler's wrapper and the
//! handler's crate, which the samples mostly share) on a plain
//! `std::thread`, whose samples the sampler skips: its CPU time is the
//! profiler's, not the handler's. [`WarmUp::wait`] joins it before the
//! profile is symbolized.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use super::signal;

/// Whether backtrace-rs' cache holds what earlier profiles parsed: set when a
/// profile kept the cache, cleared when it was dropped.
static CACHE_WARM: AtomicBool = AtomicBool::new(false);
/// Set while a warm-up thread runs, so at most one does.
static WARMING: AtomicBool = AtomicBool::new(false);

/// Frames of the starting stack to resolve: the whole stack of a
/// lambda_runtime handler (about 30 frames) fits.
const WARM_FRAMES: usize = 64;

/// A running warm-up.
#[derive(Debug)]
pub(super) struct WarmUp {
    thread: JoinHandle<Option<u64>>,
}

/// Starts resolving the calling thread's stack in the background, unless the
/// cache is warm or a warm-up is already running.
pub(super) fn start() -> Option<WarmUp> {
    if CACHE_WARM.load(Ordering::Acquire) || WARMING.swap(true, Ordering::AcqRel) {
        return None;
    }
    let mut addresses: Vec<usize> = Vec::with_capacity(WARM_FRAMES);
    backtrace::trace(|frame| {
        addresses.push(frame.ip() as usize);
        addresses.len() < WARM_FRAMES
    });
    let spawned = std::thread::Builder::new()
        .name("xrayprofile-symbols".to_owned())
        .spawn(move || {
            let excluded = signal::exclude_current_thread();
            let before = super::resident_kib();
            for address in addresses {
                backtrace::resolve(address as *mut c_void, |_| {});
            }
            let growth = before
                .zip(super::resident_kib())
                .map(|(before, after)| after.saturating_sub(before));
            drop(excluded);
            WARMING.store(false, Ordering::Release);
            growth
        });
    match spawned {
        Ok(thread) => Some(WarmUp { thread }),
        Err(_) => {
            WARMING.store(false, Ordering::Release);
            None
        }
    }
}

impl WarmUp {
    /// Waits for the warm-up to finish; returns how much it grew the process's
    /// RSS, in KiB (0 if unknown), which counts towards the symbol cache.
    pub(super) fn wait(self) -> u64 {
        self.thread.join().ok().flatten().unwrap_or(0)
    }
}

/// Records whether the symbol cache was kept after a profile, so the next
/// sampled invocation warms it up only when it is cold.
pub(super) fn cache_kept(kept: bool) {
    CACHE_WARM.store(kept, Ordering::Release);
}

/// Whether a warm-up thread is running.
#[cfg(test)]
pub(super) fn running() -> bool {
    WARMING.load(Ordering::Acquire)
}
