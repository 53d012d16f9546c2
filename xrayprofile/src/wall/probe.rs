//! The probe waker: the second and last module of the crate with `unsafe`
//! code (a `RawWakerVTable` and `sigprocmask`).
//!
//! A future that returns `Pending` must first store its task's waker
//! somewhere that will wake it: it clones `cx.waker()`. On a wall-clock
//! profiled invocation the wrapper polls the handler's future with a probe
//! waker, so that clone runs [`clone_probe`], which records the stack of
//! whoever cloned it (the leaf future and every async fn above it) up to the
//! wrapper's frame.
//!
//! - **Each clone is its own allocation** ([`Handle`]). A poll keeps a weak
//!   reference to every clone made during it; when the poll returns, a clone
//!   that is already gone was a stale registration (a leaf that registered
//!   and then completed in the same poll) and its stack is discarded. A fresh
//!   identity also defeats `Waker::will_wake`, so a leaf re-registers, and is
//!   recorded, on every poll.
//! - **The stack is cut by stack address, not by name.** A frame's stack
//!   pointer (`Frame::sp`) lies at or below the locals of its function and
//!   above every callee's. So frames whose SP is at or below a local of
//!   [`clone_probe`] are `clone_probe` and the capture machinery, skipped;
//!   recording stops before the first frame whose SP is above a local of the
//!   wrapper's [`poll`]: the last frame kept is `poll`'s own, the root, which
//!   also carries every async fn the compiler inlined into it.
//! - **Two unwinders.** By default the DWARF one: on x86_64 the CPU
//!   sampler's cached walker (`sampler::walk_current_stack`), else, and for
//!   a stack it cannot finish, libgcc's (`backtrace::trace_unsynchronized`,
//!   about 1 µs per capture). When this
//!   crate is built with `-C force-frame-pointers=yes` (`build.rs` sets
//!   `cfg(xrayprofile_frame_pointers)`), a frame-pointer walk
//!   ([`walk_frame_pointers`], a few hundred ns) that keeps exactly the
//!   frames the DWARF path keeps, falls back to it for a capture whose chain
//!   does not lead to the wrapper's frame, and is checked against it on a
//!   thread's first captures and one in [`CHECK_EVERY`] after that.
//! - **SIGPROF is blocked on this thread while libgcc unwinds** (the cached
//!   walker is reentrant and needs no blocking), so the CPU
//!   sampler's handler, which unwinds with the same libgcc unwinder, never
//!   interrupts a probe's unwind on the same thread (libgcc's FDE cache on
//!   older glibc is not reentrant). The signal stays pending and is taken
//!   right after, so no CPU sample is lost. The frame-pointer walk only reads
//!   this thread's stack, so it leaves the mask alone and saves the two
//!   syscalls.
//! - Clones made on other threads, or outside a probed poll (a runtime waking
//!   the task), record nothing: they only forward to the real waker.
#![allow(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::cell::{Cell, RefCell};
use std::mem::ManuallyDrop;
#[cfg(feature = "bench")]
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{RawWaker, RawWakerVTable, Waker};
use std::time::Instant;

use crate::sampler::{PollMark, set_poll_mark};

/// The deepest stack a registration keeps; deeper ones keep their leaf side.
pub(crate) const MAX_FRAMES: usize = 64;

/// One clone of the probe waker: it only forwards to the task's real waker.
/// Its allocation is its identity (see the module docs).
struct Handle {
    inner: Waker,
}

static VTABLE: RawWakerVTable =
    RawWakerVTable::new(clone_probe, wake_probe, wake_probe_by_ref, drop_probe);

/// A stack recorded by a clone during a probed poll: raw return addresses,
/// leaf first, ending with the wrapper's frame when `reached_root`.
#[derive(Debug)]
pub(crate) struct Registration {
    pub(crate) stack: Vec<u64>,
    pub(crate) reached_root: bool,
    handle: Weak<Handle>,
}

impl Registration {
    /// Whether the leaf still holds the clone, i.e. still waits on it.
    pub(crate) fn is_live(&self) -> bool {
        self.handle.strong_count() > 0
    }
}

/// Buffers a recorder hands from one poll to the next, so that a recorded
/// poll allocates nothing once they have grown.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    /// What the clones of the poll recorded; handed in empty.
    pub(crate) registrations: Vec<Registration>,
    /// Empty stack vectors for the clones to record into.
    pub(crate) stacks: Vec<Vec<u64>>,
}

/// What one probed poll collected.
#[derive(Debug, Default)]
pub(crate) struct PollLog {
    /// The address of a local in [`poll`]'s frame.
    root: usize,
    /// [`poll`]'s own frame pointer (0 without the frame-pointer unwinder):
    /// a frame-pointer walk has reached the root when it finds this value.
    root_fp: usize,
    pub(crate) buffers: Buffers,
    /// Time spent in the probe's clones (handles and stacks), for the probe
    /// budget.
    pub(crate) capture_ns: u64,
    /// Captures the frame-pointer walk handed to the DWARF unwinder.
    pub(crate) fp_fallbacks: u64,
}

thread_local! {
    /// The poll in progress on this thread, if it is a probed one.
    static CURRENT: RefCell<Option<PollLog>> = const { RefCell::new(None) };
}

/// The frame pointer of the function this expands in: x86_64's `rbp`,
/// aarch64's `x29`. Meaningful only when every function keeps one
/// (`-C force-frame-pointers=yes`, which is what sets the cfg); 0 otherwise.
/// A macro, not a function, so the register is read in the caller's own frame.
macro_rules! frame_address {
    () => {{
        #[cfg(all(xrayprofile_frame_pointers, target_arch = "x86_64"))]
        let fp = {
            let fp: usize;
            // SAFETY: copies a register; no memory access, no side effect.
            unsafe {
                std::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack, preserves_flags));
            }
            fp
        };
        #[cfg(all(xrayprofile_frame_pointers, target_arch = "aarch64"))]
        let fp = {
            let fp: usize;
            // SAFETY: copies a register; no memory access, no side effect.
            unsafe {
                std::arch::asm!("mov {}, x29", out(reg) fp, options(nomem, nostack, preserves_flags));
            }
            fp
        };
        #[cfg(not(xrayprofile_frame_pointers))]
        let fp = 0_usize;
        fp
    }};
}

/// The probe waker a wrapper hands to the future it polls, wrapping the
/// task's real waker. Kept across polls while the task's waker stays the
/// same, so a recorded poll does not pay for a new one.
pub(crate) struct Root {
    waker: Waker,
}

impl Root {
    pub(crate) fn new(real: &Waker) -> Root {
        let data = Arc::into_raw(Arc::new(Handle {
            inner: real.clone(),
        }));
        // SAFETY: `data` is an owned `Arc<Handle>` turned raw, which is what
        // every function of VTABLE expects and releases exactly once.
        let waker = unsafe { Waker::from_raw(RawWaker::new(data.cast(), &VTABLE)) };
        Root { waker }
    }

    /// Whether this probe forwards to `real` (so it can be reused).
    pub(crate) fn wraps(&self, real: &Waker) -> bool {
        // SAFETY: the data of a waker made by `new` is a live raw
        // `Arc<Handle>`, borrowed here while `self` holds it.
        let handle = unsafe { &*self.waker.data().cast::<Handle>() };
        handle.inner.will_wake(real)
    }

    pub(crate) fn waker(&self) -> &Waker {
        &self.waker
    }
}

/// Runs `poll` with this frame marked as the root of `invocation`'s future
/// (a [`crate::sampler::Sampler::invocation`]; 0 for none), so CPU samples
/// taken on this thread meanwhile carry it and are cut here. When `capture`, it is
/// also a recorded poll: clones of the probe waker made on this thread record
/// their stacks into the returned log. Nested polls save and restore the
/// outer one's state.
#[inline(never)]
pub(crate) fn poll<T>(
    capture: bool,
    invocation: u64,
    buffers: Buffers,
    poll: impl FnOnce() -> T,
) -> (T, PollLog) {
    let mark = 0_u8;
    // The mark must live in this frame's memory, not in a register.
    let root = std::hint::black_box(&mark) as *const u8 as usize;
    let poll_mark = PollMark { root, invocation };
    if !capture {
        // Not recorded: the future has the task's own waker, so no probe
        // clone can happen; only the CPU samples need the mark.
        let restore = Restore {
            outer: None,
            outer_root: set_poll_mark(poll_mark),
        };
        let output = poll();
        drop(restore);
        return (
            output,
            PollLog {
                buffers,
                ..PollLog::default()
            },
        );
    }
    let log = PollLog {
        root,
        root_fp: frame_address!(),
        buffers,
        capture_ns: 0,
        fp_fallbacks: 0,
    };
    let outer = CURRENT.with(|current| current.replace(Some(log)));
    let outer_root = set_poll_mark(poll_mark);
    // Restores the thread's state even if `poll` unwinds.
    let restore = Restore {
        outer: Some(outer),
        outer_root,
    };
    let output = poll();
    let log = restore.finish();
    (output, log.unwrap_or_default())
}

struct Restore {
    outer: Option<Option<PollLog>>,
    outer_root: PollMark,
}

impl Restore {
    /// Puts the outer state back and returns this poll's log.
    fn finish(mut self) -> Option<PollLog> {
        self.swap_back()
    }

    fn swap_back(&mut self) -> Option<PollLog> {
        set_poll_mark(self.outer_root);
        let outer = self.outer.take()?;
        CURRENT
            .try_with(|current| current.replace(outer))
            .ok()
            .flatten()
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        drop(self.swap_back());
    }
}

/// `Waker::clone` of a probe: a fresh handle, and the caller's stack when a
/// probed poll on this thread is capturing.
#[inline(never)]
unsafe fn clone_probe(data: *const ()) -> RawWaker {
    let mark = 0_u8;
    let start = Start {
        mark: std::hint::black_box(&mark) as *const u8 as usize,
        fp: frame_address!(),
    };
    // SAFETY: `data` is a raw `Arc<Handle>` (see `Root::new` and below);
    // ManuallyDrop borrows it without releasing the caller's reference.
    let this = ManuallyDrop::new(unsafe { Arc::from_raw(data.cast::<Handle>()) });
    let fresh = fresh_handle(&this.inner, start);
    RawWaker::new(Arc::into_raw(fresh).cast(), &VTABLE)
}

unsafe fn wake_probe(data: *const ()) {
    // SAFETY: the waker's own reference, released here (wake by value).
    let this = unsafe { Arc::from_raw(data.cast::<Handle>()) };
    match Arc::try_unwrap(this) {
        Ok(handle) => handle.inner.wake(),
        Err(shared) => shared.inner.wake_by_ref(),
    }
}

unsafe fn wake_probe_by_ref(data: *const ()) {
    // SAFETY: a live raw `Arc<Handle>`, borrowed for the call.
    let this = unsafe { &*data.cast::<Handle>() };
    this.inner.wake_by_ref();
}

unsafe fn drop_probe(data: *const ()) {
    // SAFETY: the waker's own reference, released exactly once.
    drop(unsafe { Arc::from_raw(data.cast::<Handle>()) });
}

/// A new handle forwarding to `inner`. In a capturing poll on this thread it
/// also records the caller's stack, and adds the time the whole clone took
/// (the handle too, not only the unwind) to the log for the probe budget.
fn fresh_handle(inner: &Waker, start: Start) -> Arc<Handle> {
    let new = || {
        Arc::new(Handle {
            inner: inner.clone(),
        })
    };
    // `try_with`/`try_borrow_mut`: a clone during thread teardown or from
    // inside a capture must not panic; it records nothing.
    let recorded = CURRENT.try_with(|current| {
        let mut current = current.try_borrow_mut().ok()?;
        let log = current.as_mut()?;
        let started = Instant::now();
        let fresh = new();
        let mut stack = log
            .buffers
            .stacks
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(24));
        let reached_root = capture(start, log, &mut stack);
        log.buffers.registrations.push(Registration {
            stack,
            reached_root,
            handle: Arc::downgrade(&fresh),
        });
        log.capture_ns = log
            .capture_ns
            .saturating_add(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
        Some(fresh)
    });
    recorded.ok().flatten().unwrap_or_else(new)
}

/// Where a capture starts: in [`clone_probe`]'s frame.
#[derive(Debug, Clone, Copy)]
struct Start {
    /// The address of a local of `clone_probe`: frames at or below it are
    /// the probe's own.
    mark: usize,
    /// `clone_probe`'s frame pointer (0 without the frame-pointer unwinder).
    fp: usize,
}

/// Whether this build unwinds the probe's captures with frame pointers (see
/// the module docs), and has not turned that off after a mismatch.
pub(crate) fn frame_pointers() -> bool {
    cfg!(xrayprofile_frame_pointers) && FP_ENABLED.load(Ordering::Relaxed)
}

/// Off for the rest of the process once a checked capture's frame-pointer
/// stack differs from the DWARF one (a function without a frame pointer that
/// left the register untouched hides its caller without breaking the chain).
static FP_ENABLED: AtomicBool = AtomicBool::new(true);

/// After a thread's first [`CHECKED_FIRST`] captures, one in this many is also
/// unwound with DWARF and compared.
pub(crate) const CHECK_EVERY: u32 = 1024;
/// A thread's first captures, all compared with DWARF: they cover the paths a
/// handler takes first, for a few µs each.
const CHECKED_FIRST: u32 = 16;

/// Process-wide counts of the frame-pointer unwinder, for the benchmark.
#[cfg(feature = "bench")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FpCounts {
    /// Captures whose walk did not reach the wrapper's frame, unwound with
    /// DWARF instead.
    pub(crate) fallbacks: u64,
    /// Captures unwound both ways and compared.
    pub(crate) checked: u64,
    /// Compared captures whose stacks differed (each turns the walk off).
    pub(crate) mismatches: u64,
}

/// The counts behind [`FpCounts`]; only a benchmark build keeps them.
#[cfg(feature = "bench")]
static FP_FALLBACKS: AtomicU64 = AtomicU64::new(0);
#[cfg(feature = "bench")]
static FP_CHECKED: AtomicU64 = AtomicU64::new(0);
#[cfg(feature = "bench")]
static FP_MISMATCHES: AtomicU64 = AtomicU64::new(0);

/// Adds one to a benchmark count; nothing outside a benchmark build.
macro_rules! count {
    ($counter:ident) => {
        #[cfg(feature = "bench")]
        $counter.fetch_add(1, Ordering::Relaxed);
    };
}

#[cfg(feature = "bench")]
pub(crate) fn fp_counts() -> FpCounts {
    FpCounts {
        fallbacks: FP_FALLBACKS.load(Ordering::Relaxed),
        checked: FP_CHECKED.load(Ordering::Relaxed),
        mismatches: FP_MISMATCHES.load(Ordering::Relaxed),
    }
}

/// For the benchmark that prices both unwinders in one process: with
/// `false`, captures use DWARF until it is set again.
#[cfg(feature = "bench")]
pub(crate) fn set_frame_pointers(enabled: bool) {
    FP_ENABLED.store(enabled, Ordering::Relaxed);
}

thread_local! {
    /// Captures made on this thread, to pick the ones compared with DWARF.
    static CAPTURES: Cell<u32> = const { Cell::new(0) };
}

/// Unwinds from [`clone_probe`]'s caller to the wrapper's frame (see the
/// module docs). Returns whether the wrapper's frame was reached.
#[inline(never)]
fn capture(start: Start, log: &mut PollLog, stack: &mut Vec<u64>) -> bool {
    let on_this_stack = |stack: (usize, usize)| {
        (stack.0..stack.1).contains(&start.mark) && (stack.0..stack.1).contains(&log.root)
    };
    if frame_pointers()
        && start.fp != 0
        && log.root_fp != 0
        && thread_stack().is_some_and(on_this_stack)
    {
        let bounds = FpBounds {
            low: start.mark,
            high: log.root,
            root_fp: log.root_fp,
        };
        let reached = walk_frame_pointers(start.fp, bounds, stack, |fp| {
            let record = fp as *const usize;
            // SAFETY: `walk_frame_pointers` asks only for 16-byte aligned
            // records with `low < fp` and `fp + 16 <= high`. `low` is a
            // local of `clone_probe` (below us) and `high` a local of `poll`
            // (above us: `log` is this thread's and is set only while `poll`
            // runs, so its frame has not returned), and both lie in this
            // thread's stack (checked just above, so a future that switched
            // stacks is unwound with DWARF). The stack from the current
            // stack pointer up to its top is one mapping, in use, so every
            // byte between those two live locals is mapped and readable, and
            // any bit pattern is a valid `usize`. Volatile: a record that is
            // not one (a broken chain) may be any memory of this stack, and
            // the compiler must assume nothing about it.
            unsafe { [record.read_volatile(), record.add(1).read_volatile()] }
        });
        #[cfg(test)]
        tests::compare_hook(start, log.root, stack, reached);
        if reached {
            let n = CAPTURES.with(|n| {
                let v = n.get();
                n.set(v.wrapping_add(1));
                v
            });
            if n < CHECKED_FIRST || n.is_multiple_of(CHECK_EVERY) {
                return check_against_dwarf(start.mark, log.root, stack);
            }
            return true;
        }
        // A frame without a frame pointer broke the chain (or the stack is
        // deeper than MAX_FRAMES): DWARF knows every frame.
        stack.clear();
        log.fp_fallbacks += 1;
        count!(FP_FALLBACKS);
    }
    capture_dwarf(start.mark, log.root, stack)
}

/// This thread's stack, `[lowest, highest)` address, looked up once per
/// thread; `None` when the system does not say.
#[cfg(target_os = "linux")]
fn thread_stack() -> Option<(usize, usize)> {
    thread_local! {
        static STACK: std::cell::OnceCell<Option<(usize, usize)>> =
            const { std::cell::OnceCell::new() };
    }
    fn look_up() -> Option<(usize, usize)> {
        // SAFETY: `attr` is initialised by `pthread_getattr_np` before it is
        // read and destroyed once; the outputs are plain values.
        unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
                return None;
            }
            let mut addr: *mut libc::c_void = std::ptr::null_mut();
            let mut size: libc::size_t = 0;
            let found = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
            libc::pthread_attr_destroy(&mut attr);
            let low = addr as usize;
            found.then(|| (low, low.saturating_add(size)))
        }
    }
    STACK
        .try_with(|stack| *stack.get_or_init(look_up))
        .ok()
        .flatten()
}

#[cfg(not(target_os = "linux"))]
fn thread_stack() -> Option<(usize, usize)> {
    None
}

/// Unwinds the same capture with DWARF; when the stacks differ, keeps the
/// DWARF one and turns the frame-pointer walk off for the process. Returns
/// whether the stack kept reached the wrapper's frame.
#[cold]
#[inline(never)]
fn check_against_dwarf(mark: usize, root: usize, stack: &mut Vec<u64>) -> bool {
    let mut dwarf = Vec::with_capacity(stack.len());
    let reached = capture_dwarf(mark, root, &mut dwarf);
    count!(FP_CHECKED);
    if reached && dwarf == *stack {
        return true;
    }
    count!(FP_MISMATCHES);
    FP_ENABLED.store(false, Ordering::Relaxed);
    tracing::warn!(
        frame_pointer_frames = stack.len(),
        dwarf_frames = dwarf.len(),
        "the waker probe's frame-pointer stack differs from the DWARF one, so some code on the handler's path has no frame pointers; the probe uses the DWARF unwinder (a few µs per capture) for the rest of the process; build every crate with RUSTFLAGS=\"-C force-frame-pointers=yes\""
    );
    *stack = dwarf;
    reached
}

/// The DWARF unwinder: from [`clone_probe`]'s caller to the wrapper's
/// frame. The sampler's cached walker first; libgcc, with SIGPROF blocked,
/// for a stack it cannot finish.
#[inline(never)]
fn capture_dwarf(mark: usize, root: usize, stack: &mut Vec<u64>) -> bool {
    let mut reached_root = false;
    let walked = crate::sampler::walk_current_stack(|ip, sp| {
        let sp = usize::try_from(sp).unwrap_or(usize::MAX);
        if sp <= mark {
            return true;
        }
        if sp > root {
            reached_root = true;
            return false;
        }
        if stack.len() >= MAX_FRAMES || ip == 0 {
            return false;
        }
        stack.push(ip);
        true
    });
    if walked {
        return reached_root;
    }
    stack.clear();
    capture_libgcc(mark, root, stack)
}

/// [`capture_dwarf`] with libgcc's unwinder.
#[inline(never)]
fn capture_libgcc(mark: usize, root: usize, stack: &mut Vec<u64>) -> bool {
    let _blocked = SigprofBlocked::new();
    let mut reached_root = false;
    // SAFETY: `trace_unsynchronized` skips backtrace's global lock; with the
    // libgcc backend each unwind has its own context, and SIGPROF (whose
    // handler also unwinds) is blocked on this thread meanwhile.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            let sp = frame.sp() as usize;
            if sp <= mark {
                return true;
            }
            if sp > root {
                reached_root = true;
                return false;
            }
            if stack.len() >= MAX_FRAMES || frame.ip().is_null() {
                return false;
            }
            stack.push(frame.ip() as u64);
            true
        });
    }
    reached_root
}

/// The stack range a frame-pointer walk may read, and where it ends.
#[derive(Debug, Clone, Copy)]
struct FpBounds {
    /// A local of [`clone_probe`]: every record read lies above it.
    low: usize,
    /// A local of [`poll`]: every record read ends at or below it.
    high: usize,
    /// [`poll`]'s frame pointer: the walk is complete when the chain
    /// reaches it (and never reads it).
    root_fp: usize,
}

/// A frame record (`[saved frame pointer, return address]`) is 16 bytes, and
/// both ABIs keep it 16-byte aligned: x86_64's `push rbp` on a stack that was
/// 16-aligned at the call, aarch64's 16-aligned `stp x29, x30`.
const RECORD: usize = 16;

/// Walks the frame-pointer chain from `fp`, [`clone_probe`]'s frame
/// pointer, pushing return addresses (leaf first) until the chain reaches
/// the wrapper's frame. `read(fp)` returns the record at `fp`; it is called
/// only for aligned records inside `bounds`.
///
/// The frames kept are the DWARF path's: the record of a function holds the
/// return address into its caller, so `clone_probe`'s record gives the first
/// frame kept (its caller, where the DWARF path starts), and the record of
/// `poll`'s callee gives the last (the return into `poll`, the root). Each
/// frame pointer lies above its own function's locals and below its
/// caller's, so `clone_probe`'s is above the mark and `poll`'s callees' end
/// below `poll`'s local.
///
/// Returns whether the root was reached. Any record out of bounds,
/// misaligned, not above the previous one or with a null return address, or
/// more than [`MAX_FRAMES`] frames, ends the walk unfinished: the caller
/// then unwinds with DWARF.
fn walk_frame_pointers(
    mut fp: usize,
    bounds: FpBounds,
    stack: &mut Vec<u64>,
    mut read: impl FnMut(usize) -> [usize; 2],
) -> bool {
    loop {
        let inside =
            fp > bounds.low && fp.checked_add(RECORD).is_some_and(|end| end <= bounds.high);
        if !inside || !fp.is_multiple_of(RECORD) || stack.len() >= MAX_FRAMES {
            return false;
        }
        let [next, ret] = read(fp);
        if ret == 0 {
            return false;
        }
        stack.push(ret as u64);
        if next == bounds.root_fp {
            return true;
        }
        if next <= fp {
            return false;
        }
        fp = next;
    }
}

/// SIGPROF blocked on this thread until dropped.
struct SigprofBlocked {
    #[cfg(unix)]
    previous: libc::sigset_t,
}

impl SigprofBlocked {
    #[cfg(unix)]
    fn new() -> SigprofBlocked {
        // SAFETY: sigset_t is a plain C struct; both sets are initialised by
        // sigemptyset/pthread_sigmask before they are read.
        unsafe {
            let mut block: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut block);
            libc::sigaddset(&mut block, libc::SIGPROF);
            libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut previous);
            SigprofBlocked { previous }
        }
    }

    #[cfg(not(unix))]
    fn new() -> SigprofBlocked {
        SigprofBlocked {}
    }
}

impl Drop for SigprofBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new` on this same thread.
        #[cfg(unix)]
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// One capture unwound both ways (read by the frame-pointer build's test).
    #[derive(Debug)]
    #[cfg_attr(not(xrayprofile_frame_pointers), allow(dead_code))]
    struct Compared {
        frame_pointers: (Vec<u64>, bool),
        dwarf: (Vec<u64>, bool),
    }

    thread_local! {
        /// When `Some`, every frame-pointer walk on this thread is also
        /// unwound with DWARF, and both are kept here.
        static COMPARED: RefCell<Option<Vec<Compared>>> = const { RefCell::new(None) };
    }

    /// Called by [`capture`] after each frame-pointer walk.
    pub(super) fn compare_hook(start: Start, root: usize, stack: &[u64], reached: bool) {
        let _ = COMPARED.try_with(|compared| {
            let Ok(mut compared) = compared.try_borrow_mut() else {
                return;
            };
            let Some(compared) = compared.as_mut() else {
                return;
            };
            let mut dwarf = Vec::new();
            let dwarf_reached = capture_dwarf(start.mark, root, &mut dwarf);
            compared.push(Compared {
                frame_pointers: (stack.to_vec(), reached),
                dwarf: (dwarf, dwarf_reached),
            });
        });
    }

    /// A simulated stack: `words` at `base`, read as the walk reads memory,
    /// recording every address it asked for.
    struct Memory {
        base: usize,
        words: Vec<usize>,
        reads: Vec<usize>,
    }

    impl Memory {
        fn new(base: usize, words: usize) -> Memory {
            Memory {
                base,
                words: vec![0; words],
                reads: Vec::new(),
            }
        }

        fn at(&self, word: usize) -> usize {
            self.base + word * 8
        }

        /// Writes the frame record `[next, ret]` at word `word`.
        fn record(&mut self, word: usize, next: usize, ret: usize) {
            self.words[word] = next;
            self.words[word + 1] = ret;
        }

        fn walk(&mut self, start: usize, bounds: FpBounds) -> (bool, Vec<u64>) {
            let mut stack = Vec::new();
            let (base, words, reads) = (self.base, &self.words, &mut self.reads);
            let reached = walk_frame_pointers(start, bounds, &mut stack, |fp| {
                reads.push(fp);
                let i = (fp - base) / 8;
                [words[i], words[i + 1]]
            });
            (reached, stack)
        }
    }

    /// A stack of 64 words at 0x7000_0000: the mark at word 2, a chain of
    /// records at words 4 (clone_probe), 10, 20 and 40, the root's local at
    /// word 50 and its frame pointer at word 56.
    fn chain() -> (Memory, FpBounds) {
        let mut m = Memory::new(0x7000_0000, 64);
        m.record(4, m.at(10), 0x1004);
        m.record(10, m.at(20), 0x1010);
        m.record(20, m.at(40), 0x1020);
        m.record(40, m.at(56), 0x1040);
        let bounds = FpBounds {
            low: m.at(2),
            high: m.at(50),
            root_fp: m.at(56),
        };
        (m, bounds)
    }

    #[test]
    fn a_whole_chain_keeps_every_return_address_up_to_the_roots() {
        let (mut m, bounds) = chain();
        let (reached, stack) = m.walk(m.at(4), bounds);
        assert!(reached);
        assert_eq!(stack, [0x1004, 0x1010, 0x1020, 0x1040]);
        // The root's own record (past `high`) is never read.
        assert_eq!(m.reads, [m.at(4), m.at(10), m.at(20), m.at(40)]);
    }

    #[test]
    fn a_broken_chain_is_reported_unfinished() {
        // A saved frame pointer that goes down (a function used the register
        // for something else).
        let (mut m, bounds) = chain();
        m.record(20, m.at(12), 0x1020);
        assert!(!m.walk(m.at(4), bounds).0);
        // One that is misaligned.
        let (mut m, bounds) = chain();
        m.record(20, m.at(41), 0x1020);
        assert!(!m.walk(m.at(4), bounds).0);
        // One past the root's local that is not the root's frame pointer.
        let (mut m, bounds) = chain();
        m.record(20, m.at(60), 0x1020);
        let (reached, _) = m.walk(m.at(4), bounds);
        assert!(!reached);
        assert!(m.reads.iter().all(|&fp| fp < m.at(50)));
        // A null return address.
        let (mut m, bounds) = chain();
        m.record(10, m.at(20), 0);
        assert!(!m.walk(m.at(4), bounds).0);
        // A start at or below the mark (not clone_probe's frame).
        let (mut m, bounds) = chain();
        assert!(!m.walk(m.at(2), bounds).0);
        assert!(m.reads.is_empty());
    }

    #[test]
    fn a_chain_deeper_than_the_limit_is_reported_unfinished() {
        let words = 2 * MAX_FRAMES + 16;
        let mut m = Memory::new(0x7000_0000, words);
        for frame in 0..=MAX_FRAMES {
            let word = 4 + 2 * frame;
            m.record(word, m.at(word + 2), 0x1000 + frame);
        }
        let bounds = FpBounds {
            low: m.at(2),
            high: m.at(words - 2),
            root_fp: m.at(words),
        };
        let (reached, stack) = m.walk(m.at(4), bounds);
        assert!(!reached);
        assert_eq!(stack.len(), MAX_FRAMES);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

        /// Whatever the stack holds, the walk ends, reads only aligned
        /// records inside its bounds, and reports the root only when the
        /// chain leads to the root's exact frame pointer.
        #[test]
        fn any_stack_contents_stay_inside_the_bounds(
            words in proptest::collection::vec(0x6fff_ff00_usize..0x7000_0300, 64),
            start in 0_usize..64,
        ) {
            let mut m = Memory::new(0x7000_0000, 64);
            m.words = words;
            let bounds = FpBounds { low: m.at(2), high: m.at(50), root_fp: m.at(56) };
            let (reached, stack) = m.walk(m.at(start) & !7, bounds);
            proptest::prop_assert!(stack.len() <= MAX_FRAMES);
            for &fp in &m.reads {
                proptest::prop_assert!(fp > bounds.low && fp + RECORD <= bounds.high);
                proptest::prop_assert_eq!(fp % RECORD, 0);
            }
            proptest::prop_assert!(m.reads.windows(2).all(|w| w[0] < w[1]));
            if reached {
                let last = *m.reads.last().unwrap();
                proptest::prop_assert_eq!(m.words[(last - m.base) / 8], bounds.root_fp);
            }
        }
    }

    /// Frame pointers give the DWARF stacks, address for address, for the
    /// leaves a handler waits on.
    #[cfg(xrayprofile_frame_pointers)]
    mod frame_pointers {
        use super::*;
        use crate::wall::{Observed, Recorder};
        use std::time::Duration;

        #[inline(never)]
        async fn sleeps() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }

        #[inline(never)]
        async fn waits_on_a_channel() {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<u8>(1);
            let sender = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                let _ = tx.send(1).await;
            });
            let _ = rx.recv().await;
            let _ = sender.await;
        }

        #[inline(never)]
        async fn waits_under_a_timeout() {
            let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
            let _ = tokio::time::timeout(Duration::from_millis(3), rx).await;
        }

        #[inline(never)]
        async fn nested(depth: u32) {
            if depth == 0 {
                sleeps().await;
            } else {
                Box::pin(nested(depth - 1)).await;
            }
        }

        #[inline(never)]
        async fn handler() {
            sleeps().await;
            waits_on_a_channel().await;
            waits_under_a_timeout().await;
            nested(12).await;
            tokio::join!(sleeps(), waits_on_a_channel());
        }

        fn names(stack: &[u64]) -> Vec<String> {
            let mut names = Vec::new();
            for &ip in stack {
                let mut name = String::from("?");
                backtrace::resolve(ip as usize as *mut std::ffi::c_void, |symbol| {
                    if let Some(n) = symbol.name() {
                        name = n.to_string();
                    }
                });
                names.push(name);
            }
            names
        }

        #[test]
        fn frame_pointer_stacks_are_the_dwarf_stacks() {
            let _serial = crate::test_support::serial();
            assert!(frame_pointers(), "the build has the frame-pointer unwinder");
            let fallbacks_before = fp_counts().fallbacks;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            COMPARED.with(|c| *c.borrow_mut() = Some(Vec::new()));
            let mut recorder = Recorder::default();
            let output = runtime.block_on(Observed::new(handler(), Some(&mut recorder)));
            assert!(output.is_ok());
            let recording = recorder.finish();
            let compared = COMPARED.with(|c| c.borrow_mut().take()).unwrap();
            assert!(compared.len() >= 6, "{compared:?}");
            for c in &compared {
                let (fp, dwarf) = (&c.frame_pointers, &c.dwarf);
                assert!(
                    fp.1 && dwarf.1,
                    "both reach the root: {:#?} vs {:#?}",
                    names(&fp.0),
                    names(&dwarf.0)
                );
                assert_eq!(
                    fp.0,
                    dwarf.0,
                    "same frames: {:#?} vs {:#?}",
                    names(&fp.0),
                    names(&dwarf.0)
                );
            }
            // The symbolized stacks name the handler's async fns, and the
            // deepest reaches through the 12 boxed levels.
            let all: Vec<Vec<String>> = compared
                .iter()
                .map(|c| names(&c.frame_pointers.0))
                .collect();
            assert!(
                all.iter()
                    .any(|n| n.iter().any(|f| f.contains("waits_on_a_channel"))),
                "{all:#?}"
            );
            let deepest = all
                .iter()
                .map(|n| n.iter().filter(|f| f.contains("nested")).count())
                .max();
            assert!(deepest >= Some(13), "{all:#?}");
            assert_eq!(recording.totals.fp_fallbacks, 0, "{:?}", recording.totals);
            assert_eq!(fp_counts().fallbacks, fallbacks_before);
            assert_eq!(fp_counts().mismatches, 0);
        }
    }
}
