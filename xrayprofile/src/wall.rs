//! Where one invocation's time went, awaits included: the wall-clock side of
//! a profile.
//!
//! The wrapper polls the handler's future through [`Recorder::poll`]. Each
//! poll is timed; the leaf futures that go pending during it register the
//! probe waker, which records their stacks ([`probe`]). The time until the
//! next poll (the future was waiting) is then charged, exactly, to the stacks
//! recorded in the poll that started the wait. Time spent polling is on-CPU
//! time; the CPU sampler's samples taken inside the poll carry its stacks,
//! and the profile builder scales them to the measured polling time.
//!
//! Costs are bounded: timing a poll costs about 0.2 µs and recording its
//! stacks 0.5 µs (frame pointers) to 5 µs (DWARF), so after the first
//! [`FREE_RECORDINGS`] polls a poll is recorded only while the probe's cost
//! so far stays under [`PROBE_BUDGET_PERCENT`] of the elapsed time (a token
//! bucket: [`Budget`]), and not when it follows the previous poll within
//! [`DENSE_POLLS`]. A wait after a poll that was not recorded is charged,
//! exactly, to [`Charge::Unrecorded`], never guessed: weighting the recorded
//! polls instead would multiply one long wait, or drop it. The profile's
//! comments say how much went there. Unsampled invocations never come here.

pub(crate) mod probe;

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::sampler::{PollMark, set_poll_mark};

/// The most of an invocation's elapsed time the probe may cost (timing every
/// poll, recording stacks on some) and still record polls.
pub(crate) const PROBE_BUDGET_PERCENT: u64 = 1;
/// Polls always recorded, outside the budget: a handler with a few awaits
/// (most Lambda handlers) is attributed completely, and the first unwinds of
/// a process (which touch the unwind tables, up to 100 µs each) cannot use
/// up the budget of the rest.
pub(crate) const FREE_RECORDINGS: u64 = 32;
/// What timing one poll costs (two clock reads, the panic catcher, marking
/// the poll's root for the CPU sampler), for the budget: the probe cannot
/// time its own clock reads. Measured with `cargo bench -p xrayprofile-tests
/// --bench wall_overhead` as the CPU the handler's thread spends more when
/// polls are only timed: 100–160 ns per poll of a yield or an mpsc round
/// trip, 140–290 ns per poll of the chatty handler, more on a busy machine
/// (`docs/performance.md`).
pub(crate) const TIMED_POLL_NS: u64 = 200;
/// What each registration of a recorded poll costs beyond what the probe
/// times (the clone, the unwind and the interning): the release of the
/// probe's handle (a drop or a wake, on any thread) and the leaf storing the
/// new waker in place of the old one. Timing those would cost about as much
/// again (two clock reads are 60 ns here), so the budget counts this
/// allowance instead. Measured by the same benchmark: a recorded poll costs
/// 140–160 ns more than the probe times for a yield or an mpsc round trip,
/// 200–260 ns in the chatty handler.
pub(crate) const UNTIMED_NS_PER_REGISTRATION: u64 = 250;
/// Polls closer together than this are not recorded (past the free ones):
/// timing them alone costs the whole budget ([`TIMED_POLL_NS`] is 1 % of
/// it), and the waits between them are as short, so recording them would
/// spend what the long waits need on next to no time. Measured on the
/// chatty handler (`docs/performance.md`, session 4).
pub(crate) const DENSE_POLLS: Duration =
    Duration::from_nanos(TIMED_POLL_NS * 100 / PROBE_BUDGET_PERCENT);
/// Emptied stack vectors kept for the next recorded poll's clones.
const SPARE_STACKS: usize = 64;

/// What a panicking handler panicked with, carried out of the poll so the
/// profile can be written before the panic goes on.
pub(crate) type PanicPayload = Box<dyn Any + Send + 'static>;

/// A stack recorded by the probe, interned.
type StackId = u32;

/// What a piece of wall time is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Charge {
    /// Waiting on the leaf future whose stack this is.
    Waiting(StackId),
    /// Waiting after a poll in which no leaf kept the waker (a `yield_now`
    /// that woke the task directly, or a leaf that does not register).
    NoRegistration,
    /// On CPU, resuming from the await whose stack this is; used only when
    /// the CPU sampler saw nothing of the poll (polls far shorter than its
    /// 10 ms period).
    ResumedFrom(StackId),
    /// On CPU with no recorded await to resume from: the first poll, or one
    /// after a poll that was not recorded or left nothing registered.
    Running,
    /// Waiting after a poll the probe budget did not record.
    Unrecorded,
}

/// The wall-clock recorder of one sampled invocation.
#[derive(Default)]
pub(crate) struct Recorder {
    started: Option<Instant>,
    last_poll_end: Option<Instant>,
    root: Option<probe::Root>,
    stacks: Vec<Vec<u64>>,
    stack_ids: HashMap<Vec<u64>, StackId, BuildHasherDefault<AddressHasher>>,
    /// What the future waits on since its last poll, and whether that poll
    /// was recorded.
    waiting_on: Vec<StackId>,
    last_recorded: bool,
    /// Reused between polls.
    spare: probe::Buffers,
    charges: Charges,
    totals: Totals,
    budget: Budget,
    /// Which polls are recorded instead of the budget's choice; only the
    /// tests and benchmarks have one.
    #[cfg(any(test, feature = "bench"))]
    policy: Option<Policy>,
}

/// Which polls a [`Recorder`] records in place of the [`Budget`]'s choice:
/// for the tests and the benchmarks that price the probe, never in a user's
/// build.
#[cfg(any(test, feature = "bench"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// Every poll, whatever it costs (the benchmark that prices a recorded
    /// poll).
    #[cfg(feature = "bench")]
    EveryPoll,
    /// The first poll only (tests and the benchmark that prices timing).
    FirstPollOnly,
}

/// The probe budget, a token bucket: it earns [`PROBE_BUDGET_PERCENT`] of the
/// elapsed time and pays what the probe costs (timing each poll, recording
/// those past the free ones). A poll is recorded when the balance is not
/// negative (and it is not a [`DENSE_POLLS`] one), so recordings never
/// take the probe's cost past the budget by more than one; only timing
/// dense polls can, and nothing is recorded until that is paid back.
#[derive(Debug, Default)]
struct Budget {
    balance_ns: i64,
    earned_until: Option<Instant>,
    /// All it earned, and what it paid for recordings (for the tests).
    #[cfg(test)]
    earned_ns: u64,
    #[cfg(test)]
    recordings_ns: u64,
}

impl Budget {
    /// Earns for the time since the last call (the previous poll's start),
    /// and returns that time.
    fn earn(&mut self, now: Instant) -> Option<Duration> {
        let since = self
            .earned_until
            .replace(now)
            .map(|then| now.saturating_duration_since(then));
        if let Some(since) = since {
            let earned = nanos(since).saturating_mul(PROBE_BUDGET_PERCENT) / 100;
            self.balance_ns = self
                .balance_ns
                .saturating_add(i64::try_from(earned).unwrap_or(i64::MAX));
            #[cfg(test)]
            {
                self.earned_ns = self.earned_ns.saturating_add(earned);
            }
        }
        since
    }

    fn pay(&mut self, ns: u64) {
        self.balance_ns = self
            .balance_ns
            .saturating_sub(i64::try_from(ns).unwrap_or(i64::MAX));
    }

    fn pay_recording(&mut self, ns: u64) {
        self.pay(ns);
        #[cfg(test)]
        {
            self.recordings_ns = self.recordings_ns.saturating_add(ns);
        }
    }

    fn allows_recording(&self) -> bool {
        self.balance_ns >= 0
    }
}

/// Nanoseconds per [`Charge`], kept so that charging costs an index, not a
/// hash: this runs on every poll of a sampled invocation.
#[derive(Debug, Default)]
struct Charges {
    /// By stack ID.
    waiting: Vec<u64>,
    /// By stack ID.
    resumed_from: Vec<u64>,
    no_registration: u64,
    running: u64,
    unrecorded: u64,
}

impl Charges {
    fn add(&mut self, charge: Charge, ns: u64) {
        let total = match charge {
            Charge::Waiting(id) => by_stack(&mut self.waiting, id),
            Charge::ResumedFrom(id) => by_stack(&mut self.resumed_from, id),
            Charge::NoRegistration => Some(&mut self.no_registration),
            Charge::Running => Some(&mut self.running),
            Charge::Unrecorded => Some(&mut self.unrecorded),
        };
        if let Some(total) = total {
            *total = total.saturating_add(ns);
        }
    }

    /// Every non-zero charge, largest first.
    fn into_sorted(self) -> Vec<(Charge, u64)> {
        let per_stack = |ns: Vec<u64>, charge: fn(StackId) -> Charge| {
            ns.into_iter()
                .enumerate()
                .filter_map(move |(id, ns)| Some((charge(StackId::try_from(id).ok()?), ns)))
        };
        let mut charges: Vec<(Charge, u64)> = per_stack(self.waiting, Charge::Waiting)
            .chain(per_stack(self.resumed_from, Charge::ResumedFrom))
            .chain([
                (Charge::NoRegistration, self.no_registration),
                (Charge::Running, self.running),
                (Charge::Unrecorded, self.unrecorded),
            ])
            .filter(|&(_, ns)| ns > 0)
            .collect();
        charges.sort_by_key(|&(charge, ns)| (std::cmp::Reverse(ns), charge));
        charges
    }
}

/// The entry of `id` in a per-stack table, grown as needed.
fn by_stack(table: &mut Vec<u64>, id: StackId) -> Option<&mut u64> {
    let index = usize::try_from(id).ok()?;
    if table.len() <= index {
        table.resize(index.checked_add(1)?, 0);
    }
    table.get_mut(index)
}

/// Exact figures for the profile's comments.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Totals {
    pub(crate) polling: Duration,
    pub(crate) pending: Duration,
    pub(crate) polls: u64,
    pub(crate) recorded_polls: u64,
    /// What recording stacks cost, as the budget counts it: the clones
    /// (handles and unwinds) and the interning, timed, plus
    /// [`UNTIMED_NS_PER_REGISTRATION`] per registration.
    pub(crate) recording: Duration,
    /// Registrations dropped before their poll returned (not waited on).
    pub(crate) stale: u64,
    /// Stacks that did not reach the wrapper's frame within the depth limit.
    pub(crate) truncated: u64,
    /// Waiting time after polls the budget did not record.
    pub(crate) unrecorded: Duration,
    /// Captures the frame-pointer unwinder handed to DWARF (its chain did not
    /// reach the wrapper's frame); always 0 in a default build.
    pub(crate) fp_fallbacks: u64,
}

impl Totals {
    /// What the probe cost, as its budget counts it: recording, and
    /// [`TIMED_POLL_NS`] per poll.
    pub(crate) fn probe_cost(&self) -> Duration {
        self.recording.saturating_add(Duration::from_nanos(
            self.polls.saturating_mul(TIMED_POLL_NS),
        ))
    }

    /// Nanoseconds the budget counted per recorded poll for recording it.
    #[cfg(feature = "bench")]
    pub(crate) fn recording_per_recorded_poll(&self) -> f64 {
        self.recording.as_secs_f64() * 1e9 / self.recorded_polls.max(1) as f64
    }
}

/// A finished recording: charges in nanoseconds, and the stacks they name.
#[derive(Debug, Default)]
pub(crate) struct Recording {
    pub(crate) charges: Vec<(Charge, u64)>,
    pub(crate) stacks: Vec<Vec<u64>>,
    pub(crate) totals: Totals,
    pub(crate) elapsed: Duration,
}

impl Recording {
    /// Roughly the memory its stacks and charges hold.
    pub(crate) fn memory_estimate(&self) -> usize {
        let frames: usize = self.stacks.iter().map(Vec::len).sum();
        frames
            .saturating_mul(8)
            .saturating_add(self.charges.len().saturating_mul(24))
    }

    /// The raw stack of `id`, leaf first (return addresses).
    pub(crate) fn stack(&self, id: StackId) -> &[u64] {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.stacks.get(i))
            .map_or(&[], Vec::as_slice)
    }
}

impl Recorder {
    /// A recorder that records the polls `policy` says.
    #[cfg(any(test, feature = "bench"))]
    pub(crate) fn with_policy(policy: Policy) -> Recorder {
        Recorder {
            policy: Some(policy),
            ..Recorder::default()
        }
    }

    /// Polls `future` as a probed poll of `invocation`'s future (see
    /// [`probe::poll`]) and accounts for the time since the previous one. A
    /// panic inside the poll comes back as `Err`.
    pub(crate) fn poll<F: Future>(
        &mut self,
        future: Pin<&mut F>,
        cx: &mut Context<'_>,
        invocation: u64,
    ) -> Poll<Result<F::Output, PanicPayload>> {
        let start = Instant::now();
        self.started.get_or_insert(start);
        if let Some(end) = self.last_poll_end.take() {
            let gap = start.saturating_duration_since(end);
            self.totals.pending += gap;
            self.charge_wait(gap);
        }
        let since_last_poll = self.budget.earn(start);
        let free = self.totals.recorded_polls < FREE_RECORDINGS;
        let dense = since_last_poll.is_some_and(|since| since < DENSE_POLLS);
        let record = free || (!dense && self.budget.allows_recording());
        #[cfg(any(test, feature = "bench"))]
        let record = match self.policy {
            None => record,
            #[cfg(feature = "bench")]
            Some(Policy::EveryPoll) => true,
            Some(Policy::FirstPollOnly) => self.totals.polls == 0,
        };
        // Polls that are not recorded get the task's own waker: leaves that
        // already hold it keep it (`will_wake`), so they pay nothing extra.
        if record
            && !self
                .root
                .as_ref()
                .is_some_and(|root| root.wraps(cx.waker()))
        {
            self.root = Some(probe::Root::new(cx.waker()));
        }
        let probe_waker = self
            .root
            .as_ref()
            .filter(|_| record)
            .map(probe::Root::waker);
        let buffers = std::mem::take(&mut self.spare);
        let polled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &probe_waker {
                Some(waker) => {
                    let mut probe_cx = Context::from_waker(waker);
                    probe::poll(true, invocation, buffers, || future.poll(&mut probe_cx))
                }
                None => probe::poll(false, invocation, buffers, || future.poll(cx)),
            }));
        let end = Instant::now();
        let busy = end.saturating_duration_since(start);
        self.totals.polling += busy;
        self.totals.polls += 1;
        self.charge_poll(busy);
        let (output, mut log) = match polled {
            Ok((output, log)) => (output, log),
            Err(payload) => return Poll::Ready(Err(payload)),
        };
        self.waiting_on.clear();
        self.last_recorded = record;
        self.budget.pay(TIMED_POLL_NS);
        if record {
            self.totals.recorded_polls += 1;
            let registrations = u64::try_from(log.buffers.registrations.len()).unwrap_or(u64::MAX);
            let mut recording = log
                .capture_ns
                .saturating_add(registrations.saturating_mul(UNTIMED_NS_PER_REGISTRATION));
            self.totals.fp_fallbacks += log.fp_fallbacks;
            let buffers = &mut log.buffers;
            for registration in buffers.registrations.drain(..) {
                if registration.is_live() {
                    self.totals.truncated += u64::from(!registration.reached_root);
                    let id = self.intern(&registration.stack);
                    if !self.waiting_on.contains(&id) {
                        self.waiting_on.push(id);
                    }
                } else {
                    self.totals.stale += 1;
                }
                let mut stack = registration.stack;
                if buffers.stacks.len() < SPARE_STACKS {
                    stack.clear();
                    buffers.stacks.push(stack);
                }
            }
            // Interning is part of the recording's cost too: with the
            // frame-pointer walk, as much as the unwinds.
            recording =
                recording.saturating_add(nanos(Instant::now().saturating_duration_since(end)));
            self.totals.recording += Duration::from_nanos(recording);
            if !free {
                self.budget.pay_recording(recording);
            }
        }
        // Unrecorded polls hand the (empty) buffers back too, so they are
        // allocated once per invocation, not once per recorded poll.
        self.spare = log.buffers;
        match output {
            Poll::Ready(output) => Poll::Ready(Ok(output)),
            Poll::Pending => {
                self.last_poll_end = Some(end);
                Poll::Pending
            }
        }
    }

    /// Ends the recording; a wait still open (the future was dropped while
    /// pending) is charged up to now.
    pub(crate) fn finish(mut self) -> Recording {
        let now = Instant::now();
        if let Some(end) = self.last_poll_end.take() {
            let gap = now.saturating_duration_since(end);
            self.totals.pending += gap;
            self.charge_wait(gap);
        }
        self.totals.unrecorded = Duration::from_nanos(self.charges.unrecorded);
        Recording {
            charges: self.charges.into_sorted(),
            stacks: self.stacks,
            totals: self.totals,
            elapsed: self
                .started
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s)),
        }
    }

    fn intern(&mut self, stack: &[u64]) -> StackId {
        if let Some(&id) = self.stack_ids.get(stack) {
            return id;
        }
        let id = StackId::try_from(self.stacks.len()).unwrap_or(StackId::MAX);
        self.stacks.push(stack.to_vec());
        self.stack_ids.insert(stack.to_vec(), id);
        id
    }

    /// Charges a wait to what the last poll left registered, split evenly
    /// when it waits on several leaves (a `join!`), so the total stays exact.
    fn charge_wait(&mut self, gap: Duration) {
        if self.last_recorded {
            self.charge(nanos(gap), Charge::NoRegistration, Charge::Waiting);
        } else {
            self.charges.add(Charge::Unrecorded, nanos(gap));
        }
    }

    /// Charges a poll's time to the await it resumed from (the fallback for
    /// polls the CPU sampler did not see).
    fn charge_poll(&mut self, busy: Duration) {
        if self.totals.polls > 1 && self.last_recorded {
            self.charge(nanos(busy), Charge::Running, Charge::ResumedFrom);
        } else {
            self.charges.add(Charge::Running, nanos(busy));
        }
    }

    /// Splits `ns` over the stacks waited on, or gives it to `none` when
    /// there are none.
    fn charge(&mut self, ns: u64, none: Charge, each: fn(StackId) -> Charge) {
        if ns == 0 {
            return;
        }
        if self.waiting_on.is_empty() {
            self.charges.add(none, ns);
            return;
        }
        split(ns, &self.waiting_on, |id, part| {
            self.charges.add(each(id), part);
        });
    }
}

/// The hash of the interned stacks: return addresses are not chosen by an
/// adversary, and SipHash over a 15-frame stack cost more than the
/// frame-pointer walk that captured it. A multiply-rotate hash (as rustc's
/// `FxHasher`) over whole words.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut buf = [0_u8; 8];
            buf.copy_from_slice(word);
            self.write_u64(u64::from_ne_bytes(buf));
        }
        for &byte in words.remainder() {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Splits `ns` over `ids` so the parts add up to `ns` exactly.
fn split(ns: u64, ids: &[StackId], mut charge: impl FnMut(StackId, u64)) {
    let n = u64::try_from(ids.len()).unwrap_or(1).max(1);
    let mut left = ns;
    for (i, &id) in ids.iter().enumerate() {
        let part = if i + 1 == ids.len() { left } else { ns / n };
        left -= part;
        charge(id, part);
    }
}

pin_project_lite::pin_project! {
    /// The handler's future, polled through the recorder on wall-clock
    /// profiled invocations and directly otherwise; a panic inside comes back
    /// as `Err` so the profile can be written before it goes on. Each poll
    /// marks the thread as polling `invocation`'s future, so the CPU
    /// samples taken meanwhile are that profile's.
    pub(crate) struct Observed<'r, F> {
        #[pin]
        inner: F,
        recorder: Option<&'r mut Recorder>,
        invocation: u64,
    }
}

impl<'r, F> Observed<'r, F> {
    /// Polls `inner`, its samples tagged with no profile (tests and benches
    /// only: the wrapper always polls as a profile's invocation).
    #[cfg(any(test, feature = "bench"))]
    pub(crate) fn new(inner: F, recorder: Option<&'r mut Recorder>) -> Self {
        Observed::tagged(inner, recorder, 0)
    }

    /// Polls `inner` as the future of the profile numbered `invocation`
    /// ([`crate::profiler::ActiveProfile::invocation`]).
    pub(crate) fn tagged(inner: F, recorder: Option<&'r mut Recorder>, invocation: u64) -> Self {
        Observed {
            inner,
            recorder,
            invocation,
        }
    }
}

impl<F: Future> Future for Observed<'_, F> {
    type Output = Result<F::Output, PanicPayload>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let invocation = *this.invocation;
        match this.recorder {
            Some(recorder) => recorder.poll(this.inner, cx, invocation),
            None => {
                let inner = this.inner;
                // CPU mode: the samples carry the invocation; their stacks
                // are kept whole (no root to cut at).
                let outer = set_poll_mark(PollMark {
                    root: 0,
                    invocation,
                });
                let polled =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx)));
                set_poll_mark(outer);
                match polled {
                    Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
                    Ok(Poll::Pending) => Poll::Pending,
                    Err(payload) => Poll::Ready(Err(payload)),
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::test_support::serial;
    use std::future::poll_fn;

    /// Polls `future` to completion on a current-thread runtime through a
    /// recorder, as the wrapper does. The caller holds [`serial`]: a probed
    /// poll marks its thread for the sampler, which would count another
    /// test's polls as inside the profiled invocation.
    /// A current-thread runtime with timers, as the tests' handlers need.
    fn timer_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    pub(crate) fn record<F: Future>(future: F) -> (Result<F::Output, PanicPayload>, Recording) {
        record_for(0, future)
    }

    /// [`record`] as the future of the profile numbered `invocation`.
    pub(crate) fn record_for<F: Future>(
        invocation: u64,
        future: F,
    ) -> (Result<F::Output, PanicPayload>, Recording) {
        let runtime = timer_runtime();
        let mut recorder = Recorder::default();
        let output = runtime.block_on(Observed::tagged(future, Some(&mut recorder), invocation));
        (output, recorder.finish())
    }

    fn waiting_total(recording: &Recording) -> u64 {
        recording
            .charges
            .iter()
            .filter(|(c, _)| matches!(c, Charge::Waiting(_) | Charge::NoRegistration))
            .map(|(_, ns)| ns)
            .sum()
    }

    /// Registers the waker, then finds itself ready in the same poll and
    /// drops the registration: what tokio's timer and a racing mpsc do.
    fn register_then_ready() -> impl Future<Output = ()> {
        poll_fn(|cx| {
            let registration = cx.waker().clone();
            drop(registration);
            Poll::Ready(())
        })
    }

    #[inline(never)]
    pub(crate) async fn waits_on_a_timer(ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    #[test]
    fn a_wait_is_charged_exactly_to_the_leaf_that_registered() {
        let _serial = serial();
        let (output, recording) = record(async {
            register_then_ready().await;
            waits_on_a_timer(60).await;
        });
        assert!(output.is_ok());
        let totals = recording.totals;
        assert!(
            totals.stale >= 1,
            "the stale registration is discarded: {totals:?}"
        );
        assert!(totals.polls >= 2, "{totals:?}");
        // Only the timer's stack was waited on, and it holds all the wait.
        let waited: Vec<&(Charge, u64)> = recording
            .charges
            .iter()
            .filter(|(c, _)| matches!(c, Charge::Waiting(_)))
            .collect();
        assert!(!waited.is_empty(), "{recording:?}");
        assert_eq!(
            waiting_total(&recording),
            u64::try_from(totals.pending.as_nanos()).unwrap()
        );
        assert!(totals.pending >= Duration::from_millis(60), "{totals:?}");
        // Polling and waiting add up to the elapsed time (the rest is the
        // recorder's own bookkeeping between polls).
        let accounted = totals.polling + totals.pending;
        assert!(
            accounted <= recording.elapsed,
            "{accounted:?} {:?}",
            recording.elapsed
        );
        assert!(
            recording.elapsed - accounted < Duration::from_millis(20),
            "{totals:?} {:?}",
            recording.elapsed
        );
        for (charge, _) in waited {
            let Charge::Waiting(id) = charge else {
                unreachable!()
            };
            let stack = recording.stack(*id);
            assert!(!stack.is_empty() && stack.len() <= probe::MAX_FRAMES);
        }
    }

    #[test]
    fn a_wait_after_an_unrecorded_poll_is_charged_once_to_its_own_bucket() {
        let _serial = serial();
        let runtime = timer_runtime();
        // Only the first poll is recorded: the wait after the second one is
        // not attributable, and must be neither dropped nor multiplied.
        let mut recorder = Recorder::with_policy(Policy::FirstPollOnly);
        let output = runtime.block_on(Observed::new(
            async {
                waits_on_a_timer(10).await;
                waits_on_a_timer(30).await;
            },
            Some(&mut recorder),
        ));
        assert!(output.is_ok());
        let recording = recorder.finish();
        let pending = u64::try_from(recording.totals.pending.as_nanos()).unwrap();
        let unrecorded: u64 = recording
            .charges
            .iter()
            .filter(|(c, _)| *c == Charge::Unrecorded)
            .map(|(_, ns)| ns)
            .sum();
        assert_eq!(
            waiting_total(&recording) + unrecorded,
            pending,
            "{recording:?}"
        );
        assert!(unrecorded >= 30_000_000, "{recording:?}");
        assert_eq!(
            recording.totals.unrecorded.as_nanos(),
            u128::from(unrecorded)
        );
    }

    #[test]
    fn the_budget_earns_one_percent_of_the_elapsed_time() {
        let t0 = Instant::now();
        let mut budget = Budget::default();
        budget.earn(t0);
        assert!(budget.allows_recording());
        // 1 ms earns 10 µs: a 4 µs recording fits, then a 7 µs one overdraws.
        budget.earn(t0 + Duration::from_millis(1));
        budget.pay(4_000);
        assert!(budget.allows_recording());
        budget.pay(7_000);
        assert!(!budget.allows_recording());
        // The 1 µs overdrawn is earned back in 0.1 ms.
        budget.earn(t0 + Duration::from_micros(1_099));
        assert!(!budget.allows_recording());
        budget.earn(t0 + Duration::from_micros(1_101));
        assert!(budget.allows_recording());
    }

    #[test]
    fn the_budget_records_sparse_waits_and_stops_in_a_dense_stretch() {
        let _serial = serial();
        let runtime = timer_runtime();
        let mut recorder = Recorder::default();
        let output = runtime.block_on(Observed::new(
            async {
                // 40 waits of 4–5 ms: each earns 40 µs or more, several
                // times what recording it costs in a debug build.
                for _ in 0..40 {
                    waits_on_a_timer(4).await;
                }
                // Timing these polls alone costs more than 1 % of their time.
                for _ in 0..20_000 {
                    tokio::task::yield_now().await;
                }
            },
            Some(&mut recorder),
        ));
        assert!(output.is_ok());
        // The recordings past the free ones cost at most what the budget
        // earned (1 % of the elapsed time) and one recording more.
        let (earned, paid) = (recorder.budget.earned_ns, recorder.budget.recordings_ns);
        assert!(
            paid <= earned + 100_000,
            "{paid} ns paid, {earned} ns earned"
        );
        let recording = recorder.finish();
        let totals = recording.totals;
        // Every timer wait was recorded, charged to its leaf.
        assert!(waiting_total(&recording) >= 160_000_000, "{recording:?}");
        assert!(
            totals.recorded_polls < totals.polls / 2,
            "the budget let the dense stretch record: {totals:?}"
        );
        assert_eq!(
            u64::try_from(totals.pending.as_nanos()).unwrap(),
            waiting_total(&recording)
                + u64::try_from(totals.unrecorded.as_nanos()).unwrap()
                + recording
                    .charges
                    .iter()
                    .filter(|(c, _)| *c == Charge::NoRegistration)
                    .map(|(_, ns)| ns)
                    .sum::<u64>(),
            "{recording:?}"
        );
    }

    #[test]
    fn a_wake_without_registration_is_charged_to_a_named_bucket() {
        let _serial = serial();
        let mut yielded = false;
        let (output, recording) = record(poll_fn(move |cx| {
            if yielded {
                return Poll::Ready(());
            }
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }));
        assert!(output.is_ok());
        assert_eq!(recording.totals.polls, 2);
        let bucket: u64 = recording
            .charges
            .iter()
            .filter(|(c, _)| *c == Charge::NoRegistration)
            .map(|(_, ns)| ns)
            .sum();
        assert_eq!(
            bucket,
            u64::try_from(recording.totals.pending.as_nanos()).unwrap()
        );
    }

    #[test]
    fn a_panic_comes_back_with_the_time_so_far() {
        let _serial = serial();
        let (output, recording) = record(async {
            waits_on_a_timer(30).await;
            panic!("handler failed");
        });
        let payload = output.expect_err("the panic is caught");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"handler failed"));
        assert!(recording.totals.pending >= Duration::from_millis(30));
        assert_eq!(
            waiting_total(&recording),
            u64::try_from(recording.totals.pending.as_nanos()).unwrap()
        );
    }

    #[test]
    fn a_future_dropped_while_waiting_is_charged_up_to_the_drop() {
        let _serial = serial();
        let runtime = timer_runtime();
        let mut recorder = Recorder::default();
        runtime.block_on(async {
            let slow = Observed::new(waits_on_a_timer(10_000), Some(&mut recorder));
            let _ = tokio::time::timeout(Duration::from_millis(40), slow).await;
        });
        let recording = recorder.finish();
        assert!(recording.totals.pending >= Duration::from_millis(40));
        assert_eq!(
            waiting_total(&recording),
            u64::try_from(recording.totals.pending.as_nanos()).unwrap()
        );
    }

    #[test]
    fn nested_recorders_keep_their_own_stacks() {
        let _serial = serial();
        let (output, recording) = record(async {
            let mut inner = Recorder::default();
            let out = Observed::new(waits_on_a_timer(20), Some(&mut inner)).await;
            let inner = inner.finish();
            assert!(out.is_ok());
            assert!(inner.totals.pending >= Duration::from_millis(20));
            assert!(!inner.stacks.is_empty());
            waits_on_a_timer(20).await;
        });
        assert!(output.is_ok());
        assert!(recording.totals.pending >= Duration::from_millis(40));
        assert!(!recording.stacks.is_empty());
    }

    #[inline(never)]
    async fn waits_under_a_timeout() {
        let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
        let _ = tokio::time::timeout(Duration::from_millis(80), rx).await;
    }

    #[test]
    fn a_timeout_splits_the_wait_between_its_timer_and_the_leaf_and_keeps_the_parent() {
        let _serial = serial();
        let (output, recording) = record(waits_under_a_timeout());
        assert!(output.is_ok());
        let waiting: Vec<(StackId, u64)> = recording
            .charges
            .iter()
            .filter_map(|&(c, ns)| match c {
                Charge::Waiting(id) => Some((id, ns)),
                _ => None,
            })
            .collect();
        // Two leaves registered in the same poll: the oneshot and the
        // timeout's timer. The wait is split between them, so the total
        // (and the parent, which is on both stacks) stays exact.
        assert!(waiting.len() >= 2, "{recording:?}");
        let total: u64 = waiting.iter().map(|(_, ns)| ns).sum();
        assert_eq!(
            total,
            u64::try_from(recording.totals.pending.as_nanos()).unwrap()
        );
        let (first, second) = (waiting[0].1, waiting[1].1);
        assert!(first.abs_diff(second) <= first / 10 + 1_000, "{waiting:?}");
        let a = recording.stack(waiting[0].0);
        let b = recording.stack(waiting[1].0);
        assert_ne!(a, b, "two different leaves");
        // They share the frames from the parent up to the root.
        assert_eq!(a.last(), b.last(), "same root frame");
    }
}
