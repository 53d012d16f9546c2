//! Parses the symbolizer's tables on a background thread while the handler
//! runs, so that a cold cache is not paid for after the handler returns.
//!
//! The first `backtrace::resolve` in a process reads the binary's symbol
//! table and DWARF unit index, and each compilation unit's line table on its
//! first lookup: 10.6 ms after a 200 ms handler on a 5.5 MB binary with line
//! tables, against 0.7 ms once parsed (docs/performance.md, P4). When the
//! process's first sampled invocation starts, [`start`] resolves the
//! starting thread's own stack (the runtime, the handler's wrapper and the
//! handler's crate, which the samples mostly share) on a plain
//! `std::thread`, whose samples the sampler skips: its CPU time is the
//! profiler's, not the handler's. [`WarmUp::wait`] joins it before the
//! profile is symbolized. When a profile leaves the cache too large to keep,
//! [`drop_cache`] frees it on such a thread too.

use std::ffi::c_void;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::sampler;

/// Set by the process's first warm-up. Later cold caches (dropped for being
/// over the limit) are parsed after the handler, as without a warm-up: a
/// warm-up on every sampled invocation cost 10-19 ms of CPU each, +7.8 % of
/// a 200 ms handler's CPU with line tables (P2 in docs/performance.md).
static WARMED: AtomicBool = AtomicBool::new(false);
/// Set while a warm-up or cache-dropping thread runs, so at most one does
/// (and holds the sampler's one excluded-thread slot).
static BUSY: AtomicBool = AtomicBool::new(false);

/// The thread [`drop_cache`] started, until the next warm-up waits for it.
static DROPPING: Mutex<Option<JoinHandle<()>>> = Mutex::new(None);

/// Frames of the starting stack to resolve: the whole stack of a
/// lambda_runtime handler (about 30 frames) fits.
const WARM_FRAMES: usize = 64;

/// A running warm-up.
#[derive(Debug)]
pub(crate) struct WarmUp {
    thread: JoinHandle<Option<u64>>,
}

/// Starts resolving the calling thread's stack in the background, for the
/// process's first profile only.
pub(crate) fn start() -> Option<WarmUp> {
    if WARMED.load(Ordering::Acquire) {
        return None;
    }
    // A drop still running (it takes ~2 ms) would leave this invocation
    // cold; on Lambda the previous upload has long outlasted it.
    let dropping = DROPPING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(thread) = dropping {
        let _ = thread.join();
    }
    if BUSY.load(Ordering::Acquire) || WARMED.swap(true, Ordering::AcqRel) {
        return None;
    }
    let mut addresses: Vec<usize> = Vec::with_capacity(WARM_FRAMES);
    backtrace::trace(|frame| {
        addresses.push(frame.ip() as usize);
        addresses.len() < WARM_FRAMES
    });
    let thread = spawn_unsampled(move || {
        let before = super::resident_kib();
        for address in addresses {
            backtrace::resolve(address as *mut c_void, |_| {});
        }
        before
            .zip(super::resident_kib())
            .map(|(before, after)| after.saturating_sub(before))
    })?;
    Some(WarmUp { thread })
}

impl WarmUp {
    /// Waits for the warm-up to finish; returns how much it grew the process's
    /// RSS, in KiB (0 if unknown), which counts towards the symbol cache.
    pub(crate) fn wait(self) -> u64 {
        self.thread.join().ok().flatten().unwrap_or(0)
    }
}

/// Drops backtrace-rs' cache, on a background thread: freeing what a binary
/// with line tables parsed takes 1.6-2.5 ms (docs/performance.md, P4),
/// which would otherwise sit between the handler's return and its profile.
pub(crate) fn drop_cache() {
    match spawn_unsampled(backtrace::clear_symbol_cache) {
        Some(thread) => {
            *DROPPING
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(thread);
        }
        None => backtrace::clear_symbol_cache(),
    }
}

/// Runs `work` on a new thread whose samples the sampler skips; `None` if
/// another such thread is running or none could be spawned.
fn spawn_unsampled<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<JoinHandle<T>> {
    if BUSY.swap(true, Ordering::AcqRel) {
        return None;
    }
    let spawned = std::thread::Builder::new()
        .name("xrayprofile-symbols".to_owned())
        .spawn(move || {
            let excluded = sampler::exclude_current_thread();
            let out = work();
            drop(excluded);
            BUSY.store(false, Ordering::Release);
            out
        });
    if spawned.is_err() {
        BUSY.store(false, Ordering::Release);
    }
    spawned.ok()
}

/// Whether a warm-up or cache-dropping thread is running.
#[cfg(test)]
pub(crate) fn running() -> bool {
    BUSY.load(Ordering::Acquire)
}

/// Forgets the cache and the first warm-up, so the next profile warms up.
#[cfg(test)]
pub(crate) fn forget_cache() {
    backtrace::clear_symbol_cache();
    WARMED.store(false, Ordering::Release);
}
