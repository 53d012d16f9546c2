//! The SIGPROF sampler: one of the two modules of the crate with `unsafe`
//! code (the other is `wall::probe`, the probe waker).
//!
//! `setitimer(ITIMER_PROF)` makes the kernel send SIGPROF every 1/99 s of CPU
//! time the process uses, to whichever thread is running. The handler
//! ([`on_sigprof`]) records one stack of raw instruction addresses into a
//! buffer mapped by [`start`], and does nothing else:
//!
//! - **No allocation, no lock.** The buffer is an anonymous `mmap` of fixed
//!   size made before the timer starts; a handler claims a slot with one
//!   `fetch_add` on [`NEXT`]. When the buffer is full the sample is dropped
//!   and counted in [`DROPPED`]. Pages are touched only as slots fill, so a
//!   200 ms profile costs a few KiB of RSS, and the mapping is returned to
//!   the kernel when the samples are dropped.
//! - **The unwinder** is `backtrace::trace_unsynchronized` (libgcc's
//!   `_Unwind_Backtrace`), as pprof-rs uses. On glibc ≥ 2.35 with GCC ≥ 12's
//!   libgcc the FDE lookup goes through `_dl_find_object`, which takes no lock
//!   and allocates nothing; on older glibc it falls back to
//!   `dl_iterate_phdr`, whose loader lock is recursive, so a handler that
//!   interrupts its own thread inside the loader does not deadlock. libgcc
//!   initialises its register table once through `pthread_once`; [`start`]
//!   unwinds once outside the handler so that never happens in a signal.
//! - **The leaf is the interrupted PC**, read from the `ucontext` the kernel
//!   passes. The unwinder starts inside the handler, so its first frames are
//!   the unwinder's, the handler's and the signal trampoline's. They are cut
//!   by address: every frame up to the one whose IP equals the interrupted PC
//!   is skipped. No name matching, and nothing to maintain when the unwinder's
//!   internals change.
//! - **Cut at the invocation's root.** While a wall-clock profile polls the
//!   handler's future, that thread's [`set_poll_root`] marks the address of a
//!   local in the wrapper's poll. A sample taken on that thread stops
//!   unwinding before the first frame whose stack pointer lies above the mark
//!   (the wrapper's caller), so the wrapper's own frame is the root, and is
//!   flagged [`IN_POLL`]. Stack addresses, not names, so it holds at every
//!   debug level.
//! - **One thread can be left out**: [`exclude_current_thread`] names the
//!   profiler's own symbol warm-up thread, and a signal that lands on it is
//!   not recorded (one atomic load per signal, plus `gettid` while a thread
//!   is excluded). Its CPU time is the profiler's, not the handler's.
//! - **Stopping** disarms the timer, clears [`ENABLED`], then waits until no
//!   handler is running ([`IN_HANDLER`]) before anyone reads the buffer.
//!   SIGPROF is then ignored rather than reset to its default action, which
//!   would kill the process if one were still pending.
#![allow(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::ffi::c_void;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Set in a slot's depth word when the sample was taken inside the
/// invocation future's poll and cut at its root (see [`set_poll_root`]).
const IN_POLL: u64 = 1 << 63;

thread_local! {
    /// The address of a local in the wrapper's poll while this thread polls a
    /// wall-clock-profiled invocation; 0 otherwise. Const-initialised and
    /// without a destructor, so reading it is a plain TLS load, which is
    /// async-signal-safe.
    static POLL_ROOT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks this thread as polling the profiled invocation, with `root` the
/// address of a local in the polling frame (0 clears the mark). Returns the
/// previous mark, which the caller restores, so nested wrappers work.
pub(crate) fn set_poll_root(root: usize) -> usize {
    POLL_ROOT.with(|cell| cell.replace(root))
}

/// Words per sample slot: the depth, then up to [`MAX_FRAMES`] addresses.
const SLOT_WORDS: usize = 64;
/// Bytes per sample slot.
pub(crate) const SLOT_BYTES: usize = SLOT_WORDS * 8;
/// Deepest stack recorded; deeper stacks keep their leaf-most frames.
pub(super) const MAX_FRAMES: usize = SLOT_WORDS - 1;
/// How many frames the unwinder may walk inside the handler before finding
/// the interrupted PC; past it the sample keeps the PC alone.
const MAX_HANDLER_FRAMES: usize = 32;
/// How long [`Sampler::stop`] waits for a running handler before it gives up
/// on the buffer (and leaks it rather than unmap memory a handler may write).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Set while a [`Sampler`] exists: one sampler per process.
static OWNED: AtomicBool = AtomicBool::new(false);
/// Set while handlers should record.
static ENABLED: AtomicBool = AtomicBool::new(false);
/// Handlers currently running, on any thread.
static IN_HANDLER: AtomicUsize = AtomicUsize::new(0);
/// The slot buffer: `CAPACITY` slots of `SLOT_WORDS` words.
static BUFFER: AtomicPtr<u64> = AtomicPtr::new(ptr::null_mut());
static CAPACITY: AtomicUsize = AtomicUsize::new(0);
/// Next slot to claim; may run past `CAPACITY` (those samples are dropped).
static NEXT: AtomicUsize = AtomicUsize::new(0);
/// Samples that found the buffer full.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// A thread whose samples are not recorded (0: none): the symbol warm-up
/// thread, whose CPU time is the profiler's, not the handler's.
static EXCLUDED_TID: AtomicI32 = AtomicI32::new(0);

/// Why the sampler could not start.
#[derive(Debug)]
pub(crate) enum SamplerError {
    /// Another sampler is running in this process.
    Busy,
    /// A system call failed; the name says which.
    Os(&'static str, std::io::Error),
}

/// Sampling is running. Dropping it stops sampling and discards the samples.
#[derive(Debug)]
pub(crate) struct Sampler {
    buffer: Option<Mapping>,
}

/// The recorded stacks, after sampling stopped.
#[derive(Debug)]
pub(crate) struct Samples {
    mapping: Option<Mapping>,
    recorded: usize,
    dropped: u64,
}

/// An anonymous private mapping, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u64>,
    slots: usize,
}

// SAFETY: the mapping is plain memory owned by this value; the raw pointer is
// what keeps it from being Send automatically.
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(slots: usize) -> Result<Mapping, SamplerError> {
        let len = slots.saturating_mul(SLOT_BYTES);
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        // MAP_NORESERVE: pages are only backed once a handler writes them.
        let ptr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(SamplerError::Os("mmap", std::io::Error::last_os_error()));
        }
        match NonNull::new(ptr.cast::<u64>()) {
            Some(ptr) => Ok(Mapping { ptr, slots }),
            None => Err(SamplerError::Os("mmap", std::io::Error::other("null"))),
        }
    }

    /// The stack recorded in `slot`, leaf first, and whether it was cut at
    /// the invocation's root.
    fn stack(&self, slot: usize) -> (bool, &[u64]) {
        if slot >= self.slots {
            return (false, &[]);
        }
        // SAFETY: `slot < slots`, so the slot lies inside the mapping, and no
        // handler writes it any more (only `Samples` calls this, after the
        // drain in `stop`). The depth word is clamped to the slot size.
        unsafe {
            let base = self.ptr.as_ptr().add(slot * SLOT_WORDS);
            let in_poll = *base & IN_POLL != 0;
            let depth = usize::try_from(*base & !IN_POLL)
                .unwrap_or(0)
                .min(MAX_FRAMES);
            (in_poll, std::slice::from_raw_parts(base.add(1), depth))
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the pointer and length are the ones `mmap` returned, and the
        // slices handed out by `stack` borrow `self`, so none outlives this.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.slots * SLOT_BYTES);
        }
    }
}

/// Starts sampling the whole process at `hz` samples per CPU second, into a
/// buffer of `slots` stacks.
///
/// # Errors
/// [`SamplerError::Busy`] if a sampler exists; [`SamplerError::Os`] if the
/// buffer, the signal handler or the timer cannot be set up.
pub(crate) fn start(hz: u32, slots: usize) -> Result<Sampler, SamplerError> {
    if OWNED.swap(true, Ordering::AcqRel) {
        return Err(SamplerError::Busy);
    }
    let mapping = match Mapping::new(slots) {
        Ok(mapping) => mapping,
        Err(err) => {
            OWNED.store(false, Ordering::Release);
            return Err(err);
        }
    };
    warm_up_unwinder();
    NEXT.store(0, Ordering::SeqCst);
    DROPPED.store(0, Ordering::SeqCst);
    CAPACITY.store(mapping.slots, Ordering::SeqCst);
    BUFFER.store(mapping.ptr.as_ptr(), Ordering::SeqCst);
    ENABLED.store(true, Ordering::SeqCst);
    // From here on `Sampler`'s Drop undoes whatever was set up.
    let sampler = Sampler {
        buffer: Some(mapping),
    };
    install_handler()?;
    set_timer(hz)?;
    Ok(sampler)
}

impl Sampler {
    /// Stops sampling and hands over the recorded stacks.
    pub(crate) fn stop(mut self) -> Samples {
        let drained = halt();
        let mapping = self.buffer.take();
        let slots = mapping.as_ref().map_or(0, |m| m.slots);
        let recorded = NEXT.load(Ordering::SeqCst).min(slots);
        let dropped = DROPPED.load(Ordering::SeqCst);
        let mapping = if drained {
            mapping
        } else {
            // A handler is stuck mid-sample: leak the buffer instead of
            // unmapping memory it may still write.
            std::mem::forget(mapping);
            None
        };
        Samples {
            recorded: if mapping.is_some() { recorded } else { 0 },
            mapping,
            dropped,
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        if let Some(mapping) = self.buffer.take()
            && !halt()
        {
            std::mem::forget(mapping);
        }
        OWNED.store(false, Ordering::Release);
    }
}

impl Samples {
    /// Every recorded stack, leaf first: the interrupted PC, then return
    /// addresses.
    pub(crate) fn stacks(&self) -> impl Iterator<Item = &[u64]> + '_ {
        self.marked_stacks().map(|(_, stack)| stack)
    }

    /// Every recorded stack with whether it was taken inside the profiled
    /// invocation's poll (and cut at its root; see [`set_poll_root`]).
    pub(crate) fn marked_stacks(&self) -> impl Iterator<Item = (bool, &[u64])> + '_ {
        let mapping = self.mapping.as_ref();
        (0..self.recorded).filter_map(move |slot| mapping.map(|m| m.stack(slot)))
    }

    /// Samples lost because the buffer was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Disarms the timer, stops recording and waits for running handlers.
/// Returns whether every handler finished.
fn halt() -> bool {
    // Errors are ignored on purpose: with the timer already disarmed there is
    // nothing better to do, and ENABLED stops recording either way.
    let _ = set_timer(0);
    ENABLED.store(false, Ordering::SeqCst);
    let waited = Instant::now();
    let mut drained = IN_HANDLER.load(Ordering::SeqCst) == 0;
    while !drained && waited.elapsed() < DRAIN_TIMEOUT {
        std::thread::yield_now();
        drained = IN_HANDLER.load(Ordering::SeqCst) == 0;
    }
    if drained {
        BUFFER.store(ptr::null_mut(), Ordering::SeqCst);
        CAPACITY.store(0, Ordering::SeqCst);
    }
    ignore_signal();
    drained
}

/// Unwinds once from ordinary code so libgcc's one-time initialisation
/// (`pthread_once`) and the loader's object lookup never first run inside a
/// signal handler.
fn warm_up_unwinder() {
    let mut frames = 0_usize;
    // SAFETY: `trace_unsynchronized` is unsafe only because it skips
    // backtrace's global lock; with the libgcc backend concurrent unwinds
    // share no mutable state in backtrace (each has its own context), which
    // is also what the signal handler relies on. The callback only counts.
    unsafe {
        backtrace::trace_unsynchronized(|_| {
            frames += 1;
            frames < 4
        });
    }
}

fn install_handler() -> Result<(), SamplerError> {
    // SAFETY: `sigaction` is a plain C struct for which all-zero is valid.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_sigprof as *const () as usize;
    action.sa_flags = libc::SA_RESTART | libc::SA_SIGINFO;
    // SAFETY: `sa_mask` is a valid sigset_t owned by `action`.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: installs `on_sigprof`, which is async-signal-safe (see the
    // module docs), with a fully initialised `sigaction`.
    let rc = unsafe { libc::sigaction(libc::SIGPROF, &action, ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(SamplerError::Os(
            "sigaction",
            std::io::Error::last_os_error(),
        ))
    }
}

fn ignore_signal() {
    // SAFETY: as in `install_handler`, with SIG_IGN as the action.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_IGN;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGPROF, &action, ptr::null_mut());
    }
}

fn set_timer(hz: u32) -> Result<(), SamplerError> {
    let interval_us = if hz == 0 {
        0
    } else {
        1_000_000 / i64::from(hz)
    };
    let interval = libc::timeval {
        tv_sec: 0,
        tv_usec: interval_us,
    };
    let timer = libc::itimerval {
        it_interval: interval,
        it_value: interval,
    };
    // SAFETY: `timer` is a valid itimerval; the old value is not requested.
    let rc = unsafe { libc::setitimer(libc::ITIMER_PROF, &timer, ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(SamplerError::Os(
            "setitimer",
            std::io::Error::last_os_error(),
        ))
    }
}

/// Whether the profiling timer is armed (for tests of [`Drop`]).
#[cfg(test)]
pub(crate) fn timer_armed() -> bool {
    // SAFETY: `getitimer` writes a valid itimerval into `current`.
    unsafe {
        let mut current: libc::itimerval = std::mem::zeroed();
        libc::getitimer(libc::ITIMER_PROF, &mut current);
        current.it_value.tv_sec != 0 || current.it_value.tv_usec != 0
    }
}

/// The SIGPROF handler. Async-signal-safe: atomics, writes into the
/// preallocated buffer, and libgcc's unwinder (see the module docs).
extern "C" fn on_sigprof(_signal: libc::c_int, _info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: `__errno_location` returns this thread's errno; the unwinder
    // may change errno, which the interrupted code must not observe.
    let errno = unsafe { *libc::__errno_location() };
    IN_HANDLER.fetch_add(1, Ordering::SeqCst);
    if ENABLED.load(Ordering::SeqCst) && !on_excluded_thread() {
        record(context);
    }
    IN_HANDLER.fetch_sub(1, Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Whether the signal landed on the thread [`exclude_current_thread`] named.
/// Async-signal-safe: an atomic load, and `gettid` only while a thread is
/// excluded.
fn on_excluded_thread() -> bool {
    let excluded = EXCLUDED_TID.load(Ordering::SeqCst);
    excluded != 0 && excluded == current_tid()
}

/// The calling thread's kernel ID. Through `syscall`, not glibc's `gettid`
/// wrapper, which glibc < 2.30 (Amazon Linux 2) lacks.
fn current_tid() -> i32 {
    // SAFETY: SYS_gettid takes no arguments, cannot fail and touches no
    // memory; a raw system call is async-signal-safe.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    i32::try_from(tid).unwrap_or(0)
}

/// Stops recording samples taken on the calling thread, until
/// [`Excluded`] is dropped; one thread at a time. `None` if another thread
/// is excluded already.
pub(crate) fn exclude_current_thread() -> Option<Excluded> {
    let tid = current_tid();
    EXCLUDED_TID
        .compare_exchange(0, tid, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
        .then_some(Excluded { tid })
}

/// The calling thread's samples are skipped while this lives.
#[derive(Debug)]
pub(crate) struct Excluded {
    tid: i32,
}

impl Drop for Excluded {
    fn drop(&mut self) {
        let _ = EXCLUDED_TID.compare_exchange(self.tid, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

fn record(context: *mut c_void) {
    let base = BUFFER.load(Ordering::SeqCst);
    let capacity = CAPACITY.load(Ordering::SeqCst);
    let slot = NEXT.fetch_add(1, Ordering::Relaxed);
    if base.is_null() || slot >= capacity {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let Some(pc) = interrupted_pc(context) else {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    };
    // SAFETY: `slot < capacity`, so the slot is inside the mapping, which
    // stays mapped until `halt` has seen IN_HANDLER reach zero; this handler
    // is counted there. `fetch_add` gave this slot to this handler alone.
    let words = unsafe { base.add(slot * SLOT_WORDS) };
    let mut depth = 1_usize;
    // SAFETY: word 1 of the slot (see above).
    unsafe { words.add(1).write(pc) };
    let root = POLL_ROOT.with(std::cell::Cell::get);
    let mut found_leaf = false;
    let mut handler_frames = 0_usize;
    // SAFETY: unwinding the current thread's stack from a signal handler is
    // what libgcc's unwinder supports for signal frames; the callback only
    // writes inside the slot.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            let ip = frame.ip() as u64;
            // Past the wrapper's frame: the first whose SP is above its local.
            let past_root = root != 0 && frame.sp() as usize > root;
            if !found_leaf {
                found_leaf = ip == pc;
                handler_frames += 1;
                return !(found_leaf && past_root) && handler_frames < MAX_HANDLER_FRAMES;
            }
            if depth >= MAX_FRAMES || ip == 0 || past_root {
                return false;
            }
            depth += 1;
            // SAFETY: 2 <= depth <= MAX_FRAMES, inside the slot.
            words.add(depth).write(ip);
            true
        });
    }
    // Also when the root was not reached (a stack deeper than the slot): the
    // thread was inside the poll all the same.
    let flag = if root != 0 { IN_POLL } else { 0 };
    // SAFETY: word 0 of the slot; written last so a slot is complete once the
    // drain in `halt` is over (the depth word is read only after it).
    unsafe { words.write(depth as u64 | flag) };
}

#[cfg(target_arch = "x86_64")]
fn interrupted_pc(context: *mut c_void) -> Option<u64> {
    let context = context.cast::<libc::ucontext_t>();
    if context.is_null() {
        return None;
    }
    // SAFETY: with SA_SIGINFO the kernel passes a valid ucontext_t for the
    // interrupted thread as the third argument.
    let rip = unsafe {
        (*context)
            .uc_mcontext
            .gregs
            .get(libc::REG_RIP as usize)
            .copied()
    };
    rip.map(|rip| rip as u64)
}

#[cfg(target_arch = "aarch64")]
fn interrupted_pc(context: *mut c_void) -> Option<u64> {
    let context = context.cast::<libc::ucontext_t>();
    if context.is_null() {
        return None;
    }
    // SAFETY: with SA_SIGINFO the kernel passes a valid ucontext_t for the
    // interrupted thread as the third argument.
    Some(unsafe { (*context).uc_mcontext.pc })
}
