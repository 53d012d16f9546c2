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
//! - **SIGPROF is blocked on this thread while it unwinds**, so the CPU
//!   sampler's handler, which unwinds with the same libgcc unwinder, never
//!   interrupts a probe's unwind on the same thread (libgcc's FDE cache on
//!   older glibc is not reentrant). The signal stays pending and is taken
//!   right after, so no CPU sample is lost.
//! - Clones made on other threads, or outside a probed poll (a runtime waking
//!   the task), record nothing: they only forward to the real waker.
#![allow(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::sync::{Arc, Weak};
use std::task::{RawWaker, RawWakerVTable, Waker};
use std::time::Instant;

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

/// What one probed poll collected.
#[derive(Debug, Default)]
pub(crate) struct PollLog {
    /// The address of a local in [`poll`]'s frame.
    root: usize,
    pub(crate) registrations: Vec<Registration>,
    /// Time spent recording stacks, for the probe budget.
    pub(crate) capture_ns: u64,
}

thread_local! {
    /// The poll in progress on this thread, if it is a probed one.
    static CURRENT: RefCell<Option<PollLog>> = const { RefCell::new(None) };
}

/// The probe waker a wrapper hands to the future it polls, wrapping the
/// task's real waker.
pub(crate) struct Root {
    handle: Arc<Handle>,
}

impl Root {
    pub(crate) fn new(real: &Waker) -> Root {
        Root {
            handle: Arc::new(Handle {
                inner: real.clone(),
            }),
        }
    }

    /// Whether this probe forwards to `real` (so it can be reused).
    pub(crate) fn wraps(&self, real: &Waker) -> bool {
        self.handle.inner.will_wake(real)
    }

    pub(crate) fn waker(&self) -> Waker {
        let data = Arc::into_raw(Arc::clone(&self.handle));
        // SAFETY: `data` is an owned `Arc<Handle>` turned raw, which is what
        // every function of VTABLE expects and releases exactly once.
        unsafe { Waker::from_raw(RawWaker::new(data.cast(), &VTABLE)) }
    }
}

/// Runs `poll` with this frame marked as the invocation's root, so CPU
/// samples taken on this thread meanwhile are cut here. When `capture`, it is
/// also a recorded poll: clones of the probe waker made on this thread record
/// their stacks into the returned log. Nested polls save and restore the
/// outer one's state.
#[inline(never)]
pub(crate) fn poll<T>(
    capture: bool,
    registrations: Vec<Registration>,
    poll: impl FnOnce() -> T,
) -> (T, PollLog) {
    let mark = 0_u8;
    // The mark must live in this frame's memory, not in a register.
    let root = std::hint::black_box(&mark) as *const u8 as usize;
    if !capture {
        // Not recorded: the future has the task's own waker, so no probe
        // clone can happen; only the CPU samples need the mark.
        let restore = Restore {
            outer: None,
            outer_root: crate::profiler::set_poll_root(root),
        };
        let output = poll();
        drop(restore);
        return (
            output,
            PollLog {
                registrations,
                ..PollLog::default()
            },
        );
    }
    let log = PollLog {
        root,
        registrations,
        capture_ns: 0,
    };
    let outer = CURRENT.with(|current| current.replace(Some(log)));
    let outer_root = crate::profiler::set_poll_root(root);
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
    outer_root: usize,
}

impl Restore {
    /// Puts the outer state back and returns this poll's log.
    fn finish(mut self) -> Option<PollLog> {
        self.swap_back()
    }

    fn swap_back(&mut self) -> Option<PollLog> {
        crate::profiler::set_poll_root(self.outer_root);
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
    let mark = std::hint::black_box(&mark) as *const u8 as usize;
    // SAFETY: `data` is a raw `Arc<Handle>` (see `Root::waker` and below);
    // ManuallyDrop borrows it without releasing the caller's reference.
    let this = ManuallyDrop::new(unsafe { Arc::from_raw(data.cast::<Handle>()) });
    let fresh = Arc::new(Handle {
        inner: this.inner.clone(),
    });
    record(&fresh, mark);
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

fn record(fresh: &Arc<Handle>, mark: usize) {
    // `try_with`/`try_borrow_mut`: a clone during thread teardown or from
    // inside a capture must not panic; it records nothing.
    let _ = CURRENT.try_with(|current| {
        let Ok(mut current) = current.try_borrow_mut() else {
            return;
        };
        let Some(log) = current.as_mut() else {
            return;
        };
        let started = Instant::now();
        let mut stack = Vec::with_capacity(24);
        let reached_root = capture(mark, log.root, &mut stack);
        log.capture_ns = log
            .capture_ns
            .saturating_add(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
        log.registrations.push(Registration {
            stack,
            reached_root,
            handle: Arc::downgrade(fresh),
        });
    });
}

/// Unwinds from [`clone_probe`]'s caller to the wrapper's frame (see the
/// module docs). Returns whether the wrapper's frame was reached.
#[inline(never)]
fn capture(mark: usize, root: usize, stack: &mut Vec<u64>) -> bool {
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
