//! The SIGPROF sampler and the poll-root mark: one of the two modules of the
//! crate with `unsafe` code (the other is `wall::probe`, the probe waker).
//! A leaf: it imports nothing from the rest of the crate, and the profiler
//! (which starts and stops it) and the waker probe (which marks the poll's
//! root) both call into it.
//!
//! **Who gets a signal, and what a sample weighs.** A helper thread, the
//! ticker ([`tick`]; started by the first profile, parked between
//! profiles), gives every thread of the process its own
//! POSIX timer on *that thread's* CPU clock (`timer_create` with
//! `SIGEV_THREAD_ID`), so SIGPROF arrives on the thread that used the CPU,
//! where the kernel's process-wide `setitimer(ITIMER_PROF)` lets it choose
//! any thread. Each watched thread has a slot, carried in the signal's
//! value; the slot keeps the CPU time its samples already stand for
//! ([`ACCOUNTED_NS`]). The handler reads its own thread's CPU clock and
//! records one sample weighing the whole periods used since: so a signal
//! the kernel delivered late, merged or never sent only makes the next one
//! heavier, and counts are CPU time / period. On this 2-vCPU Firecracker VM
//! with busy processes beside ours, the kernel's per-thread timers sent
//! anywhere from 0 to all 29 signals for 300 ms of CPU (and
//! `ITIMER_PROF` 9–14), so the ticker also wakes every [`TICK`] and, for a
//! thread owed two periods or more, queues the signal itself
//! (`rt_tgsigqueueinfo`). It also finds threads started during the profile
//! (every [`RESCAN_TICKS`] ticks). Figures in `docs/design.md`.
//!
//! The handler ([`on_sigprof`]) records one stack of raw instruction
//! addresses into a buffer mapped by [`start`], and does nothing else:
//!
//! - **No allocation, no lock.** The buffer is a ring, an anonymous `mmap`
//!   of fixed size made before the timer starts; a handler claims a slot
//!   with one `fetch_add` on [`NEXT`] and writes it through atomics, the
//!   sequence word last ([`SEQ_WORD`]). When the ring goes round, the
//!   oldest samples are overwritten; a profile that still wanted them
//!   counts them as dropped. Pages are touched only as slots fill, so a
//!   200 ms profile costs a few KiB of RSS, and the mapping is returned to
//!   the kernel when the last profile stops.
//! - **Shared by concurrent profiles.** Sampling is process-wide and runs
//!   while at least one [`Sampler`] lives ([`start`] counts them). Each
//!   sample carries the [`PollMark::invocation`] of the future its thread
//!   was polling (0: none), so each profile takes out of the ring only its
//!   own samples and the untagged ones taken during its lifetime
//!   ([`Sampler::stop`]); another invocation's samples never enter it.
//! - **The unwinder** on x86_64 is [`unwind`]: it walks from the
//!   interrupted registers with the objects' `.eh_frame` and caches each
//!   address's rule, so a stack seen before costs a few loads per frame.
//!   A frame it cannot step over (and every frame on aarch64) goes to
//!   `backtrace::trace_unsynchronized` (libgcc's
//!   `_Unwind_Backtrace`), as pprof-rs uses. On glibc ≥ 2.35 with GCC ≥ 12's
//!   libgcc the FDE lookup goes through `_dl_find_object`, which takes no lock
//!   and allocates nothing; on older glibc it falls back to
//!   `dl_iterate_phdr`, whose loader lock is recursive, so a handler that
//!   interrupts its own thread inside the loader does not deadlock. libgcc
//!   initialises its register table once through `pthread_once`; [`start`]
//!   unwinds once outside the handler so that never happens in a signal.
//! - **The leaf is the interrupted PC**, read from the `ucontext` the kernel
//!   passes, with the stack and frame pointers [`unwind`] starts from.
//!   libgcc starts inside the handler, so its first frames are the
//!   unwinder's, the handler's and the signal trampoline's. They are cut by
//!   address: every frame up to the one whose IP equals the interrupted PC
//!   is skipped. No name matching, and nothing to maintain when the
//!   unwinder's internals change.
//! - **Cut at the invocation's root.** While a wall-clock profile polls the
//!   handler's future, that thread's [`set_poll_mark`] marks the address of a
//!   local in the wrapper's poll. A sample taken on that thread stops
//!   unwinding before the first frame whose stack pointer lies above the mark
//!   (the wrapper's caller), so the wrapper's own frame is the root. Stack
//!   addresses, not names, so it holds at every debug level.
//! - **Stopping** the last profile tells the ticker to delete the timers (it
//!   does so on its own time; a late timer signal finds no slot for this
//!   session and records nothing), clears [`ENABLED`], then waits until no
//!   handler is running ([`IN_HANDLER`]) before it reads the ring and
//!   unmaps it. A profile that stops while others sample reads the ring
//!   while handlers write it: the sequence word tells it which slots hold
//!   complete samples of the claims it wants.
//!   SIGPROF is then ignored rather than reset to its default action, which
//!   would kill the process if one were still pending.
#![allow(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::ffi::c_void;
use std::ptr::{self, NonNull};
use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
use std::time::{Duration, Instant};

#[cfg(target_arch = "x86_64")]
mod unwind;

/// Where a slot's depth word keeps the CPU periods the sample stands for,
/// minus one (bits 32–62; the depth is in the low bits).
const EXTRA_SHIFT: u32 = 32;
const EXTRA_MASK: u64 = (1 << 31) - 1;

/// What a thread is polling: the invocation whose future it is inside, and
/// where to cut its stacks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PollMark {
    /// The address of a local in the wrapper's poll, above which a sample
    /// stops unwinding; 0: no cut (the whole stack is kept).
    pub(crate) root: usize,
    /// The profile ([`Sampler::invocation`]) whose future is being polled;
    /// 0: none. Every sample taken meanwhile carries it.
    pub(crate) invocation: u64,
}

/// The [`PollMark::invocation`] of the profiler's own work (building
/// profiles): no profile keeps its samples, as no profile's number is this.
pub(crate) const PROFILER_WORK: u64 = u64::MAX;

thread_local! {
    /// What this thread is polling now. Const-initialised and without a
    /// destructor, so reading it is a plain TLS load, which is
    /// async-signal-safe.
    static POLL_MARK: std::cell::Cell<PollMark> = const {
        std::cell::Cell::new(PollMark { root: 0, invocation: 0 })
    };
    /// Set by every mark change, cleared by this thread's next sample: the
    /// CPU periods it owes from before the change were spent under another
    /// mark (another invocation's poll, or none), so that sample keeps one
    /// period and drops the rest rather than hand them to the wrong
    /// profile. Const-initialised, no destructor: signal-safe.
    static MARK_MOVED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks this thread as polling `mark.invocation`'s future, its stacks cut
/// at `mark.root` (a zeroed mark clears it). Returns the previous mark,
/// which the caller restores, so nested wrappers work.
pub(crate) fn set_poll_mark(mark: PollMark) -> PollMark {
    MARK_MOVED.with(|moved| moved.set(true));
    POLL_MARK.with(|cell| cell.replace(mark))
}

/// Words per sample slot: the depth word, the invocation tag, the sequence
/// word, then up to [`MAX_FRAMES`] addresses.
const SLOT_WORDS: usize = 64;
/// Bytes per sample slot.
const SLOT_BYTES: usize = SLOT_WORDS * 8;
/// Where a slot keeps the [`PollMark::invocation`] of the thread it sampled.
const TAG_WORD: usize = 1;
/// Where a slot keeps its claim number + 1, written last: a reader takes the
/// slot only if this word holds the claim it expects, before and after
/// reading (a seqlock), so a slot still being written, or reused by a later
/// claim once the ring went round, is never read as a sample.
const SEQ_WORD: usize = 2;
/// The first frame word.
const FRAMES_AT: usize = 3;
/// Deepest stack recorded; deeper stacks keep their leaf-most frames.
pub(crate) const MAX_FRAMES: usize = SLOT_WORDS - FRAMES_AT;
/// How many frames the unwinder may walk inside the handler before finding
/// the interrupted PC; past it the sample keeps the PC alone.
const MAX_HANDLER_FRAMES: usize = 32;
/// How long [`Sampler::stop`] waits for a running handler before it gives up
/// on the buffer (and leaks it rather than unmap memory a handler may write).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// The profiles sampling now, and the ring they share; sampling runs while
/// there is at least one.
static SHARED: std::sync::Mutex<Shared> = std::sync::Mutex::new(Shared {
    users: 0,
    ring: None,
});
/// Set while handlers should record.
static ENABLED: AtomicBool = AtomicBool::new(false);
/// Handlers currently running, on any thread.
static IN_HANDLER: AtomicUsize = AtomicUsize::new(0);
/// The slot ring: `CAPACITY` slots of `SLOT_WORDS` words.
static BUFFER: AtomicPtr<u64> = AtomicPtr::new(ptr::null_mut());
static CAPACITY: AtomicUsize = AtomicUsize::new(0);
/// The next claim number; claim `n` writes slot `n % CAPACITY`, so the ring
/// keeps the last `CAPACITY` samples of the whole process.
static NEXT: AtomicUsize = AtomicUsize::new(0);
/// The last profile number handed out ([`Sampler::invocation`]).
static INVOCATIONS: AtomicU64 = AtomicU64::new(0);
/// How often the ticker checks the threads' CPU clocks for signals the
/// kernel did not send. Each wake-up costs this VM ≈ 35–40 µs of CPU, so
/// 20 ms keeps the ticker near 0.2 % of a CPU; a missed sample arrives at
/// most one tick late.
pub(crate) const TICK: Duration = Duration::from_millis(20);
/// The ticker looks for new threads every this many ticks (100 ms).
const RESCAN_TICKS: u32 = 5;
/// Threads one profile can watch; more than a Lambda function's runtime
/// has (tokio's workers and blocking pool).
const MAX_THREADS: usize = 256;
/// Each slot's owner: the profile session in the high 32 bits, the kernel
/// thread ID in the low ones. A signal counts only on its slot's thread
/// and only in the session that gave out the slot, so a timer signal that
/// outlives its profile records nothing.
static SLOT_OWNER: [AtomicU64; MAX_THREADS] = [const { AtomicU64::new(0) }; MAX_THREADS];
/// The current profile session; bumped by every [`start`].
static SESSION: AtomicU32 = AtomicU32::new(0);
/// Set while a profile wants samples; the ticker parks when it is clear.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The ticker thread, once started.
static TICKER: std::sync::Mutex<Option<std::thread::Thread>> = std::sync::Mutex::new(None);
/// Timers the ticker holds (for tests).
static TIMERS_LIVE: AtomicUsize = AtomicUsize::new(0);
/// Each slot's thread's CPU time (ns) that its samples stand for so far.
/// The ticker sets it when it starts watching the thread; after that only
/// the thread's own handler moves it.
static ACCOUNTED_NS: [AtomicU64; MAX_THREADS] = [const { AtomicU64::new(0) }; MAX_THREADS];
/// The CPU period per sample, in ns (1/99 s).
static PERIOD_NS: AtomicU64 = AtomicU64::new(u64::MAX);
/// This process's ID, for telling the ticker's signals from anyone else's.
static PID: AtomicI32 = AtomicI32::new(0);
/// Tests turn the kernel timers off to check the ticker alone.
#[cfg(test)]
pub(crate) static KERNEL_TIMERS: AtomicBool = AtomicBool::new(true);

/// Why the sampler could not start.
#[derive(Debug)]
pub(crate) enum SamplerError {
    /// A system call failed; the name says which.
    Os(&'static str, std::io::Error),
}

/// What the profiles sampling now share.
#[derive(Debug)]
struct Shared {
    users: usize,
    ring: Option<Mapping>,
}

/// One profile's use of the process-wide sampler: the samples it will take
/// are those claimed while it lives and tagged with its own number (or with
/// none). Dropping it discards them; the last one to go stops sampling.
#[derive(Debug)]
pub(crate) struct Sampler {
    invocation: u64,
    first_claim: usize,
    released: bool,
}

/// The recorded stacks of one profile, copied out of the ring.
#[derive(Debug, Default)]
pub(crate) struct Samples {
    /// Per sample: whether it was taken inside this profile's invocation
    /// future, how many CPU periods it stands for, and where its frames
    /// lie in `frames`.
    kept: Vec<Kept>,
    frames: Vec<u64>,
    dropped: u64,
}

#[derive(Debug, Clone, Copy)]
struct Kept {
    own: bool,
    weight: u32,
    start: u32,
    len: u32,
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

    /// Word `word` of `slot`, as the atomic the handler writes.
    fn word(&self, slot: usize, word: usize) -> Option<&AtomicU64> {
        if slot >= self.slots || word >= SLOT_WORDS {
            return None;
        }
        // SAFETY: `slot < slots` and `word < SLOT_WORDS`, so the word lies
        // inside the mapping, which lives as long as `self`; it is 8-aligned
        // (mmap returns page-aligned memory) and handlers only ever access
        // it atomically.
        Some(unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(slot * SLOT_WORDS + word)) })
    }

    /// The sample of claim `claim`, its frames appended to `frames` leaf
    /// first, if its slot still holds that claim, complete (see
    /// [`SEQ_WORD`]): its invocation tag and how many CPU periods it stands
    /// for.
    fn read(&self, claim: usize, frames: &mut Vec<u64>) -> Option<(u64, u32)> {
        let slot = claim % self.slots.max(1);
        let expected = claim as u64 + 1;
        let seq = self.word(slot, SEQ_WORD)?;
        if seq.load(Ordering::Acquire) != expected {
            return None;
        }
        let header = self.word(slot, 0)?.load(Ordering::Relaxed);
        let tag = self.word(slot, TAG_WORD)?.load(Ordering::Relaxed);
        let depth = usize::try_from(header & u64::from(u32::MAX))
            .unwrap_or(0)
            .min(MAX_FRAMES);
        let start = frames.len();
        for at in 0..depth {
            frames.push(self.word(slot, FRAMES_AT + at)?.load(Ordering::Relaxed));
        }
        std::sync::atomic::fence(Ordering::Acquire);
        if seq.load(Ordering::Relaxed) != expected {
            frames.truncate(start);
            return None;
        }
        let weight = u32::try_from((header >> EXTRA_SHIFT) & EXTRA_MASK)
            .unwrap_or(0)
            .saturating_add(1);
        Some((tag, weight))
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the pointer and length are the ones `mmap` returned, and the
        // atomics handed out by `word` borrow `self`, so none outlives this.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.slots * SLOT_BYTES);
        }
    }
}

fn shared() -> std::sync::MutexGuard<'static, Shared> {
    SHARED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts sampling the whole process at `hz` samples per CPU second into a
/// ring of `slots` stacks, or joins the sampling already running (then `hz`
/// and `slots` are the first profile's).
///
/// # Errors
/// [`SamplerError::Os`] if the ring, the signal handler or the ticker thread
/// cannot be set up.
pub(crate) fn start(hz: u32, slots: usize) -> Result<Sampler, SamplerError> {
    let mut shared = shared();
    if shared.users == 0 {
        let mapping = Mapping::new(slots)?;
        warm_up_unwinder();
        #[cfg(target_arch = "x86_64")]
        unwind::refresh_objects();
        NEXT.store(0, Ordering::SeqCst);
        CAPACITY.store(mapping.slots, Ordering::SeqCst);
        BUFFER.store(mapping.ptr.as_ptr(), Ordering::SeqCst);
        ENABLED.store(true, Ordering::SeqCst);
        shared.ring = Some(mapping);
        let started = install_handler().and_then(|()| start_ticking(hz));
        if let Err(err) = started {
            if !halt() {
                std::mem::forget(shared.ring.take());
            }
            shared.ring = None;
            return Err(err);
        }
    }
    shared.users += 1;
    Ok(Sampler {
        invocation: INVOCATIONS.fetch_add(1, Ordering::Relaxed) + 1,
        first_claim: NEXT.load(Ordering::SeqCst),
        released: false,
    })
}

impl Sampler {
    /// This profile's number, never 0: what [`PollMark::invocation`] carries
    /// while its invocation's future is polled.
    pub(crate) fn invocation(&self) -> u64 {
        self.invocation
    }

    /// Takes this profile's samples out of the ring: those taken inside its
    /// invocation's future, and those taken outside any invocation's future
    /// during its lifetime. Samples of other invocations are left to them.
    /// The last profile to stop stops sampling first, so none is missed.
    pub(crate) fn stop(mut self) -> Samples {
        self.released = true;
        let mut shared = shared();
        let last = shared.users <= 1;
        let drained = !last || halt();
        let end = NEXT.load(Ordering::SeqCst);
        let samples = match shared.ring.as_ref().filter(|_| drained) {
            Some(ring) => self.collect(ring, end),
            None => Samples::default(),
        };
        release(&mut shared, drained);
        samples
    }

    fn collect(&self, ring: &Mapping, end: usize) -> Samples {
        let mut samples = Samples::default();
        // Claims older than one ring are gone whatever they were.
        let oldest = end.saturating_sub(ring.slots).max(self.first_claim);
        samples.dropped = (oldest - self.first_claim) as u64;
        for claim in oldest..end {
            let start = samples.frames.len();
            let Some((tag, weight)) = ring.read(claim, &mut samples.frames) else {
                samples.dropped += 1;
                continue;
            };
            if tag != 0 && tag != self.invocation {
                samples.frames.truncate(start);
                continue;
            }
            let len = samples.frames.len() - start;
            samples.kept.push(Kept {
                own: tag == self.invocation,
                weight,
                start: u32::try_from(start).unwrap_or(u32::MAX),
                len: u32::try_from(len).unwrap_or(0),
            });
        }
        samples
    }
}

/// One profile fewer; the last one unmaps the ring (sampling has already
/// been halted by the caller, `drained` says whether every handler ended).
fn release(shared: &mut Shared, drained: bool) {
    shared.users = shared.users.saturating_sub(1);
    if shared.users == 0 {
        let ring = shared.ring.take();
        if !drained {
            // A handler is stuck mid-sample: leak the ring instead of
            // unmapping memory it may still write.
            std::mem::forget(ring);
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let mut shared = shared();
        let drained = shared.users > 1 || halt();
        release(&mut shared, drained);
    }
}

impl Samples {
    /// Every sample's stack, leaf first: the interrupted PC, then return
    /// addresses. A sample that stands for several CPU periods (its signal
    /// came late, see [`ACCOUNTED_NS`]) is one stack yielded once per
    /// period, so counts stay CPU time / period.
    pub(crate) fn stacks(&self) -> impl Iterator<Item = &[u64]> + '_ {
        self.marked_stacks().map(|(_, stack)| stack)
    }

    /// Every sample's stack (as [`Samples::stacks`]) with whether it was
    /// taken inside this profile's invocation future (and, in wall mode, cut
    /// at its root; see [`set_poll_mark`]).
    pub(crate) fn marked_stacks(&self) -> impl Iterator<Item = (bool, &[u64])> + '_ {
        self.kept.iter().flat_map(move |kept| {
            let start = kept.start as usize;
            let stack = self
                .frames
                .get(start..start + kept.len as usize)
                .unwrap_or(&[]);
            std::iter::repeat_n((kept.own, stack), kept.weight as usize)
        })
    }

    /// Samples kept.
    #[cfg(test)]
    pub(crate) fn recorded(&self) -> usize {
        self.kept.len()
    }

    /// Bytes the kept samples hold.
    pub(crate) fn memory(&self) -> usize {
        self.frames.len() * 8 + self.kept.len() * std::mem::size_of::<Kept>()
    }

    /// Samples lost: the ring went round during the profile, or a sample
    /// could not be taken.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Stops the ticker, stops recording and waits for running handlers.
/// Returns whether every handler finished.
fn halt() -> bool {
    stop_ticking();
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

/// Opens a new session and wakes the ticker (starting it the first time).
fn start_ticking(hz: u32) -> Result<(), SamplerError> {
    PID.store(
        i32::try_from(std::process::id()).unwrap_or(0),
        Ordering::SeqCst,
    );
    PERIOD_NS.store(1_000_000_000 / u64::from(hz.max(1)), Ordering::SeqCst);
    // Slots of earlier sessions stop counting from here on.
    SESSION.fetch_add(1, Ordering::SeqCst);
    ACTIVE.store(true, Ordering::SeqCst);
    let mut ticker = TICKER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(thread) = ticker.as_ref() {
        thread.unpark();
        return Ok(());
    }
    let thread = std::thread::Builder::new()
        .name("xrayprofile-tick".to_owned())
        .stack_size(128 * 1024)
        .spawn(tick)
        .map_err(|err| {
            ACTIVE.store(false, Ordering::SeqCst);
            SamplerError::Os("spawn (ticker thread)", err)
        })?;
    *ticker = Some(thread.thread().clone());
    Ok(())
}

/// Ends the session: the ticker deletes the timers when it next wakes, and
/// parks. Does not wait, so stopping a profile costs no thread hand-off.
fn stop_ticking() {
    ACTIVE.store(false, Ordering::SeqCst);
    let ticker = TICKER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(thread) = ticker.as_ref() {
        thread.unpark();
    }
}

/// A thread the ticker watches.
struct Watched {
    tid: i32,
    clock: libc::clockid_t,
    slot: usize,
    /// Its kernel timer, if one could be made.
    timer: Option<libc::c_int>,
}

/// The ticker's loop (see the module docs): for the process's life,
/// parked while no profile runs. Ordinary thread code: it may allocate and
/// read `/proc`.
fn tick() {
    let me = current_tid();
    let mut watched: Vec<Watched> = Vec::new();
    let mut session = 0_u32;
    let mut ticks = 0_u32;
    loop {
        let active = ACTIVE.load(Ordering::SeqCst);
        let current = SESSION.load(Ordering::SeqCst);
        if !active || current != session {
            for thread in watched.drain(..) {
                unwatch(&thread);
            }
            if !active {
                std::thread::park();
                continue;
            }
            session = current;
            ticks = 0;
        }
        let period_ns = PERIOD_NS.load(Ordering::SeqCst).max(1);
        if ticks.is_multiple_of(RESCAN_TICKS) {
            watch_new_threads(&mut watched, session, me, period_ns);
        }
        ticks = ticks.wrapping_add(1);
        watched.retain(|thread| {
            let Some(now) = cpu_time_of(thread.clock) else {
                unwatch(thread);
                return false; // the thread exited
            };
            let accounted = ACCOUNTED_NS
                .get(thread.slot)
                .map_or(u64::MAX, |a| a.load(Ordering::SeqCst));
            // One period is the kernel timer's; two means it missed one.
            if now.saturating_sub(accounted) < 2 * period_ns {
                return true;
            }
            send_sample_signal(thread.tid, thread.slot) || {
                unwatch(thread);
                false
            }
        });
        std::thread::park_timeout(TICK);
    }
}

/// Starts watching the threads of `/proc/self/task` not yet watched
/// (except the ticker), each with a free slot and its own timer.
fn watch_new_threads(watched: &mut Vec<Watched>, session: u32, me: i32, period_ns: u64) {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for tid in tasks.filter_map(|task| task.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        if tid == me || watched.iter().any(|thread| thread.tid == tid) {
            continue;
        }
        // Slots are reused once their thread is no longer watched.
        let Some(slot) = (0..MAX_THREADS).find(|slot| !watched.iter().any(|t| t.slot == *slot))
        else {
            return;
        };
        let (Some(owner), Some(accounted)) = (SLOT_OWNER.get(slot), ACCOUNTED_NS.get(slot)) else {
            return;
        };
        let clock = thread_cpu_clock(tid);
        let Some(now) = cpu_time_of(clock) else {
            continue;
        };
        // The slot is complete before any signal can name it.
        accounted.store(now, Ordering::SeqCst);
        owner.store(slot_owner(session, tid), Ordering::SeqCst);
        let timer = kernel_timers_enabled()
            .then(|| create_thread_timer(tid, clock, slot, period_ns))
            .flatten();
        if timer.is_some() {
            TIMERS_LIVE.fetch_add(1, Ordering::SeqCst);
        }
        watched.push(Watched {
            tid,
            clock,
            slot,
            timer,
        });
    }
}

/// What [`SLOT_OWNER`] holds for `tid` in `session`.
fn slot_owner(session: u32, tid: i32) -> u64 {
    (u64::from(session) << 32) | u64::from(tid.cast_unsigned())
}

#[cfg(test)]
fn kernel_timers_enabled() -> bool {
    KERNEL_TIMERS.load(Ordering::SeqCst)
}

#[cfg(not(test))]
fn kernel_timers_enabled() -> bool {
    true
}

/// Stops watching a thread: its timer goes, and its slot no longer matches
/// any thread, so a signal still in flight records nothing.
fn unwatch(thread: &Watched) {
    if let Some(timer) = thread.timer {
        // SAFETY: deletes a timer the ticker created and has not deleted.
        unsafe {
            libc::syscall(libc::SYS_timer_delete, timer);
        }
        TIMERS_LIVE.fetch_sub(1, Ordering::SeqCst);
    }
    if let Some(owner) = SLOT_OWNER.get(thread.slot) {
        owner.store(0, Ordering::SeqCst);
    }
}

/// The clock ID of thread `tid`'s CPU time, as glibc's
/// `pthread_getcpuclockid` builds it (the kernel's `MAKE_THREAD_CPUCLOCK`
/// with `CPUCLOCK_SCHED`); it takes a kernel thread ID, which we have from
/// `/proc`, where `pthread_getcpuclockid` needs a `pthread_t`.
fn thread_cpu_clock(tid: i32) -> libc::clockid_t {
    const CPUCLOCK_PERTHREAD: u32 = 4;
    const CPUCLOCK_SCHED: u32 = 2;
    let id = (!tid.cast_unsigned() << 3) | CPUCLOCK_PERTHREAD | CPUCLOCK_SCHED;
    id.cast_signed()
}

/// The CPU time on `clock`, in ns; `None` once its thread has exited.
/// Async-signal-safe (a system call), so the handler uses it too.
fn cpu_time_of(clock: libc::clockid_t) -> Option<u64> {
    // SAFETY: timespec is a plain C struct for which all-zero is valid.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `clock_gettime` writes a valid timespec into `now`.
    let rc = unsafe { libc::clock_gettime(clock, &mut now) };
    if rc != 0 {
        return None;
    }
    let secs = u64::try_from(now.tv_sec).ok()?;
    let nanos = u64::try_from(now.tv_nsec).ok()?;
    Some(secs * 1_000_000_000 + nanos)
}

/// A timer that sends SIGPROF, with `slot` as its value, to thread `tid`
/// every `period_ns` of that thread's CPU time. Raw system calls: glibc <
/// 2.34 keeps `timer_create` in librt, and the kernel's ID is all we need.
fn create_thread_timer(
    tid: i32,
    clock: libc::clockid_t,
    slot: usize,
    period_ns: u64,
) -> Option<libc::c_int> {
    // SAFETY: sigevent is a plain C struct for which all-zero is valid.
    let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
    event.sigev_signo = libc::SIGPROF;
    event.sigev_notify = libc::SIGEV_THREAD_ID;
    event.sigev_notify_thread_id = tid;
    event.sigev_value = libc::sigval {
        sival_ptr: std::ptr::without_provenance_mut(slot),
    };
    let mut timer: libc::c_int = 0;
    // SAFETY: timer_create reads `event` and writes the new timer's ID into
    // `timer`; both outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_timer_create,
            clock,
            &raw const event,
            &raw mut timer,
        )
    };
    if rc != 0 {
        return None;
    }
    let period = libc::timespec {
        tv_sec: 0,
        tv_nsec: i64::try_from(period_ns).unwrap_or(10_000_000),
    };
    let spec = libc::itimerspec {
        it_interval: period,
        it_value: period,
    };
    // SAFETY: `timer` is the timer just created; `spec` is a valid
    // itimerspec; the old value is not requested.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_timer_settime,
            timer,
            0,
            &raw const spec,
            ptr::null_mut::<libc::itimerspec>(),
        )
    };
    if rc != 0 {
        // SAFETY: deletes the timer just created.
        unsafe {
            libc::syscall(libc::SYS_timer_delete, timer);
        }
        return None;
    }
    Some(timer)
}

/// The leading fields of the kernel's `siginfo_t` for a POSIX timer signal
/// (`_sifields._timer`) and a queued one (`_sifields._rt`): both put the
/// signal's value at offset 24. The libc crate does not expose them for
/// glibc. The union starts at offset 16 on 64-bit targets, the only ones
/// built here.
#[repr(C)]
struct ValueSiginfo {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    _union_alignment: libc::c_int,
    /// `_timer`: the timer's ID; `_rt`: the sender's PID.
    first: libc::c_int,
    /// `_timer`: the overrun count; `_rt`: the sender's UID.
    second: libc::c_int,
    value: usize,
}

/// Queues SIGPROF for thread `tid` with `slot` as its value, as its timer
/// would. Returns false if the thread is gone.
fn send_sample_signal(tid: i32, slot: usize) -> bool {
    let pid = PID.load(Ordering::SeqCst);
    // SAFETY: siginfo_t is a plain C struct for which all-zero is valid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let queued = ValueSiginfo {
        signo: libc::SIGPROF,
        errno: 0,
        code: libc::SI_QUEUE,
        _union_alignment: 0,
        first: pid,
        // SAFETY: getuid cannot fail.
        second: unsafe { libc::getuid() }.cast_signed(),
        value: slot,
    };
    // SAFETY: ValueSiginfo (32 bytes) fits in siginfo_t (128 bytes) and has
    // the layout of its first fields; `info` is ours to write.
    unsafe { ptr::write(ptr::from_mut(&mut info).cast::<ValueSiginfo>(), queued) };
    // SAFETY: rt_tgsigqueueinfo reads `info`; the target is a thread of this
    // process, to which any `si_code` may be sent.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            pid,
            tid,
            libc::SIGPROF,
            &raw const info,
        )
    };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The whole CPU periods this thread used since its last sample, if the
/// signal is one of ours for this thread; they are then accounted for, so
/// a second signal for the same time (the ticker's and the timer's) weighs
/// nothing. Async-signal-safe: atomics, `gettid`, `clock_gettime`.
fn periods_owed(info: *const libc::siginfo_t) -> u64 {
    if info.is_null() {
        return 0;
    }
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo_t (128
    // bytes), of which ValueSiginfo reads the first 32.
    let signal = unsafe { &*info.cast::<ValueSiginfo>() };
    let ours = match signal.code {
        libc::SI_TIMER => true,
        libc::SI_QUEUE => signal.first == PID.load(Ordering::SeqCst),
        _ => false,
    };
    let slot = signal.value;
    let (Some(owner), Some(accounted)) = (SLOT_OWNER.get(slot), ACCOUNTED_NS.get(slot)) else {
        return 0;
    };
    let expected = slot_owner(SESSION.load(Ordering::SeqCst), current_tid());
    if !ours || owner.load(Ordering::SeqCst) != expected {
        return 0;
    }
    let Some(now) = cpu_time_of(libc::CLOCK_THREAD_CPUTIME_ID) else {
        return 0;
    };
    let period_ns = PERIOD_NS.load(Ordering::SeqCst).max(1);
    let since = accounted.load(Ordering::SeqCst);
    let periods = now.saturating_sub(since) / period_ns;
    if periods > 0 {
        accounted.store(since + periods * period_ns, Ordering::SeqCst);
    }
    periods
}

/// Takes one sample of the calling thread now, through the same signal and
/// handler path as the ticker's: for the benchmark that prices the
/// handler. False if no profile is running or the ticker does not watch
/// this thread (yet).
#[cfg(feature = "bench")]
pub(crate) fn sample_this_thread() -> bool {
    let tid = current_tid();
    let owner = slot_owner(SESSION.load(Ordering::SeqCst), tid);
    let Some(slot) = SLOT_OWNER
        .iter()
        .position(|slot| slot.load(Ordering::SeqCst) == owner)
    else {
        return false;
    };
    let (Some(accounted), Some(now)) = (
        ACCOUNTED_NS.get(slot),
        cpu_time_of(libc::CLOCK_THREAD_CPUTIME_ID),
    ) else {
        return false;
    };
    // Owe exactly one period, so the handler records one sample.
    accounted.store(
        now.saturating_sub(PERIOD_NS.load(Ordering::SeqCst)),
        Ordering::SeqCst,
    );
    send_sample_signal(tid, slot)
}

/// Whether the ticker holds timers for a profile; it deletes them shortly
/// after the profile stops (for tests of [`Drop`]).
#[cfg(test)]
pub(crate) fn ticker_timers() -> usize {
    TIMERS_LIVE.load(Ordering::SeqCst)
}

/// CPU time the calling thread has used (for tests that burn a known
/// amount of it).
#[cfg(test)]
pub(crate) fn thread_cpu_time() -> Duration {
    Duration::from_nanos(cpu_time_of(libc::CLOCK_THREAD_CPUTIME_ID).unwrap_or(0))
}

/// The SIGPROF handler. Async-signal-safe: atomics, writes into the
/// preallocated buffer, and libgcc's unwinder (see the module docs).
extern "C" fn on_sigprof(_signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: `__errno_location` returns this thread's errno; the unwinder
    // may change errno, which the interrupted code must not observe.
    let errno = unsafe { *libc::__errno_location() };
    IN_HANDLER.fetch_add(1, Ordering::SeqCst);
    if ENABLED.load(Ordering::SeqCst) {
        let mut periods = periods_owed(info);
        if periods > 0 && MARK_MOVED.with(|moved| moved.replace(false)) {
            periods = 1;
        }
        if periods > 0 {
            record(context, periods);
        }
    }
    IN_HANDLER.fetch_sub(1, Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// How many objects the dynamic loader has loaded and unloaded so far
/// (`dlpi_adds`, `dlpi_subs`): while both stay the same, so do the loaded
/// objects and where they lie, and what was read of them still holds.
/// Ordinary code only (it takes the loader's lock).
pub(crate) fn loader_generation() -> Option<(u64, u64)> {
    unsafe extern "C" fn first(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid `dl_phdr_info` for this call;
        // `data` is the `Option` `loader_generation` passed.
        let (info, found) = unsafe { (&*info, &mut *data.cast::<Option<(u64, u64)>>()) };
        *found = Some((info.dlpi_adds, info.dlpi_subs));
        1 // the counts are the same in every object's info: stop here
    }
    let mut found: Option<(u64, u64)> = None;
    // SAFETY: `first` reads only the info passed for the call and writes
    // `found`, which outlives it.
    unsafe {
        libc::dl_iterate_phdr(Some(first), (&raw mut found).cast());
    }
    found
}

/// The calling thread's kernel ID. Through `syscall`, not glibc's `gettid`
/// wrapper, which glibc < 2.30 (Amazon Linux 2) lacks.
fn current_tid() -> i32 {
    // SAFETY: SYS_gettid takes no arguments, cannot fail and touches no
    // memory; a raw system call is async-signal-safe.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    i32::try_from(tid).unwrap_or(0)
}

fn record(context: *mut c_void, periods: u64) {
    let base = BUFFER.load(Ordering::SeqCst);
    let capacity = CAPACITY.load(Ordering::SeqCst);
    let claim = NEXT.fetch_add(1, Ordering::Relaxed);
    if base.is_null() || capacity == 0 {
        return;
    }
    let Some(registers) = interrupted_registers(context) else {
        return;
    };
    let pc = registers.pc;
    // SAFETY: `claim % capacity < capacity`, so the slot is inside the
    // mapping, which stays mapped until `halt` has seen IN_HANDLER reach
    // zero; this handler is counted there. Every word is accessed through
    // atomics, by the handler that claimed the slot and by readers, who
    // check the sequence word around their reads.
    let word = |at: usize| unsafe {
        AtomicU64::from_ptr(base.add((claim % capacity) * SLOT_WORDS + at.min(SLOT_WORDS - 1)))
    };
    // The slot no longer holds its previous claim's sample.
    word(SEQ_WORD).store(0, Ordering::Relaxed);
    std::sync::atomic::fence(Ordering::Release);
    word(FRAMES_AT).store(pc, Ordering::Relaxed);
    let mark = POLL_MARK.with(std::cell::Cell::get);
    let depth = std::cell::Cell::new(1_usize);
    // Stores the callers of the leaf (already stored) until the stack ends,
    // fills the slot, or passes the wrapper's frame: the first frame whose
    // SP is above the mark's local.
    let mut keep = |ip: u64, sp: u64, leaf: bool| {
        let past_root = mark.root != 0 && sp > mark.root as u64;
        if leaf || depth.get() >= MAX_FRAMES || ip == 0 || past_root {
            return leaf && !past_root;
        }
        word(FRAMES_AT + depth.get()).store(ip, Ordering::Relaxed);
        depth.set(depth.get() + 1);
        true
    };
    if !unwind_cached(registers, &mut keep) {
        depth.set(1);
        unwind_libgcc(pc, &mut keep);
    }
    let extra = (periods.saturating_sub(1).min(EXTRA_MASK)) << EXTRA_SHIFT;
    word(0).store(depth.get() as u64 | extra, Ordering::Relaxed);
    word(TAG_WORD).store(mark.invocation, Ordering::Relaxed);
    // Last: the slot is a complete sample of this claim from here on.
    word(SEQ_WORD).store(claim as u64 + 1, Ordering::Release);
}

/// Walks the interrupted stack with [`unwind`], calling `keep(ip, sp,
/// leaf)` per frame; false if it met a frame only libgcc can step over
/// (then the caller starts again with [`unwind_libgcc`]).
#[cfg(target_arch = "x86_64")]
fn unwind_cached(
    registers: unwind::Registers,
    keep: &mut impl FnMut(u64, u64, bool) -> bool,
) -> bool {
    let mut leaf = true;
    let walked = unwind::walk(registers, |ip, sp| {
        let more = keep(ip, sp, leaf);
        leaf = false;
        more
    });
    if walked == unwind::Walk::Unsupported {
        LIBGCC_WALKS.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    true
}

#[cfg(not(target_arch = "x86_64"))]
fn unwind_cached(_: Registers, _: &mut impl FnMut(u64, u64, bool) -> bool) -> bool {
    false
}

/// Walks the calling thread's stack with the handler's cached unwinder
/// ([`unwind::walk`]), from a frame of this function outwards, calling
/// `frame(ip, sp)` per frame until it returns false. False if a frame
/// needs libgcc (or on aarch64): the caller unwinds again with libgcc.
/// Signal-safe and reentrant, so SIGPROF need not be blocked around it.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
pub(crate) fn walk_current_stack(frame: impl FnMut(u64, u64) -> bool) -> bool {
    let (pc, sp, fp): (u64, u64, u64);
    // SAFETY: copies RIP, RSP and RBP into registers; reads no memory and
    // leaves the stack as it was, so this function's CFI at that
    // instruction describes exactly these values.
    unsafe {
        std::arch::asm!(
            "lea {pc}, [rip]",
            "mov {sp}, rsp",
            "mov {fp}, rbp",
            pc = out(reg) pc,
            sp = out(reg) sp,
            fp = out(reg) fp,
            options(nomem, nostack, preserves_flags),
        );
    }
    unwind::walk(unwind::Registers { pc, sp, fp }, frame) == unwind::Walk::Done
}

/// On aarch64 the probe keeps libgcc.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn walk_current_stack(_frame: impl FnMut(u64, u64) -> bool) -> bool {
    false
}

/// Samples unwound by libgcc because [`unwind::walk`] could not (for tests
/// and benchmarks: on x86_64 it should stay near zero).
static LIBGCC_WALKS: AtomicU64 = AtomicU64::new(0);

/// Samples unwound by libgcc so far.
#[cfg(test)]
pub(crate) fn libgcc_walks() -> u64 {
    LIBGCC_WALKS.load(Ordering::Relaxed)
}

/// Walks the current stack with libgcc's unwinder from inside the handler:
/// its first frames are the unwinder's, the handler's and the signal
/// trampoline's, cut by address at the interrupted PC.
fn unwind_libgcc(pc: u64, keep: &mut impl FnMut(u64, u64, bool) -> bool) {
    let mut found_leaf = false;
    let mut handler_frames = 0_usize;
    // SAFETY: unwinding the current thread's stack from a signal handler is
    // what libgcc's unwinder supports for signal frames; `keep` only writes
    // inside the handler's slot.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            let (ip, sp) = (frame.ip() as u64, frame.sp() as u64);
            if !found_leaf {
                found_leaf = ip == pc;
                handler_frames += 1;
                if found_leaf {
                    return keep(ip, sp, true);
                }
                return handler_frames < MAX_HANDLER_FRAMES;
            }
            keep(ip, sp, false)
        });
    }
}

/// The registers the kernel saved for the interrupted code.
#[derive(Debug, Clone, Copy)]
#[cfg(not(target_arch = "x86_64"))]
struct Registers {
    pc: u64,
}

#[cfg(target_arch = "x86_64")]
fn interrupted_registers(context: *mut c_void) -> Option<unwind::Registers> {
    let context = context.cast::<libc::ucontext_t>();
    if context.is_null() {
        return None;
    }
    // SAFETY: with SA_SIGINFO the kernel passes a valid ucontext_t for the
    // interrupted thread as the third argument.
    let gregs = unsafe { &(*context).uc_mcontext.gregs };
    let register = |index: libc::c_int| {
        let value = gregs.get(usize::try_from(index).ok()?).copied()?;
        Some(value.cast_unsigned())
    };
    Some(unwind::Registers {
        pc: register(libc::REG_RIP)?,
        sp: register(libc::REG_RSP)?,
        fp: register(libc::REG_RBP)?,
    })
}

#[cfg(target_arch = "aarch64")]
fn interrupted_registers(context: *mut c_void) -> Option<Registers> {
    let context = context.cast::<libc::ucontext_t>();
    if context.is_null() {
        return None;
    }
    // SAFETY: with SA_SIGINFO the kernel passes a valid ucontext_t for the
    // interrupted thread as the third argument.
    Some(Registers {
        pc: unsafe { (*context).uc_mcontext.pc },
    })
}

#[cfg(test)]
mod tests {
    use super::loader_generation;

    /// Loading an object moves the generation; nothing else does.
    #[test]
    fn loading_an_object_moves_the_loader_generation() {
        let before = loader_generation().expect("glibc reports its counts");
        assert_eq!(loader_generation(), Some(before));
        // Small libraries glibc ships that a Rust test binary does not link.
        let candidates: [&std::ffi::CStr; 3] = [c"libresolv.so.2", c"libanl.so.1", c"libutil.so.1"];
        let loaded = candidates.iter().find(|name| {
            // SAFETY: RTLD_NOLOAD only asks whether the library is loaded.
            let already =
                unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
            if !already.is_null() {
                return false;
            }
            // SAFETY: loads one of glibc's own libraries, whose initialisers
            // are glibc's; the handle is never closed.
            let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW) };
            !handle.is_null()
        });
        let loaded = loaded.expect("one of glibc's small libraries loads");
        let after = loader_generation().expect("still reported");
        assert!(after.0 > before.0, "{loaded:?}: {before:?} -> {after:?}");
    }
}
