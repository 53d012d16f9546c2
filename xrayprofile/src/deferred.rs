//! Uploads that wait for the response to go out, and the internal Lambda
//! extension that keeps the execution environment awake until they finish.
//!
//! Lambda freezes an environment once the runtime has asked for the next
//! event *and* every extension has done the same. Under [`crate::run`]:
//!
//! 1. a sampled invocation's wrapper stops the profile and [`defer`]s the
//!    upload instead of awaiting it, so the handler's result returns at once;
//! 2. the runtime posts the response; the layer around the runtime's client
//!    then calls [`response_sent`], which starts that invocation's uploads;
//! 3. the extension, which received the same `INVOKE` event, answers it only
//!    when the invocation has been answered and no upload is left
//!    ([`wait_until_idle`]), bounded by the invocation's deadline.
//!
//! The extension pairs its INVOKE event with the runtime's invocation by
//! request ID, not by counting: Runtime API emulators may send an INVOKE
//! before the extension registered, none at all, or the same one twice, and
//! a count shifted by one would release a later invocation before its upload
//! ran (or hold one until its deadline). An INVOKE whose invocation the
//! runtime never gets is settled once the runtime starts another one.
//!
//! Under `crate::run_concurrent` with several invocations at once (Lambda
//! Managed Instances, never frozen) steps 1 and 2 hold and there is no
//! extension: the uploads simply run in the background
//! ([`enable_concurrent`]).
//!
//! Without [`crate::run`] nothing here is enabled and [`defer`] hands the
//! job back, so the wrapper uploads inline as before; [`disable`] returns to
//! that when the extension stops.
//!
//! At shutdown (SIGTERM) [`flush`] starts whatever still waits and gives the
//! uploads a short budget, then names the profiles that did not make it.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::upload::PendingUpload;

/// Uploads that may wait at once; more are dropped (and logged) rather than
/// held in memory. In the classic one-invocation-at-a-time model there is
/// at most one; [`enable_concurrent`] raises it with the concurrency.
static MAX_PENDING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(8);
/// Uploads per invocation the environment may run at once, under
/// [`enable_concurrent`]: one waiting for its response, the others
/// uploading while the next invocations run (bytes stay bounded by
/// [`MAX_PENDING_BYTES`]).
#[cfg(feature = "concurrency")]
const PENDING_PER_CONCURRENT_INVOCATION: usize = 4;
/// Bytes of stopped profiles (raw samples and stacks) that may wait at once.
const MAX_PENDING_BYTES: usize = 16 << 20;
/// The extension answers this long before the invocation deadline even if an
/// upload is still running, so the invocation is never reported as timed out.
const EXTENSION_MARGIN: Duration = Duration::from_millis(100);
/// How long the extension waits when the deadline is unknown (an emulator
/// sent one that cannot be real): Lambda's longest timeout.
const UNKNOWN_DEADLINE_WAIT: Duration = Duration::from_secs(900);
/// Answered request IDs remembered for an INVOKE that arrives after its
/// response went out (or arrives twice); older ones are forgotten.
const ANSWERED_KEPT: usize = 64;

static ENABLED: AtomicBool = AtomicBool::new(false);
/// Set by [`enable_concurrent`]: the environment is never frozen.
static NEVER_FROZEN: AtomicBool = AtomicBool::new(false);

/// Jobs waiting for their response, and the keys of the uploads running.
#[derive(Default)]
struct Queue {
    waiting: VecDeque<PendingUpload>,
    running: Vec<String>,
}

impl Queue {
    fn pending(&self) -> usize {
        self.waiting.len() + self.running.len()
    }

    /// Every profile not yet stored, waiting or uploading.
    fn pending_keys(&self) -> Vec<String> {
        let waiting = self.waiting.iter().map(|j| j.key.to_string());
        waiting.chain(self.running.iter().cloned()).collect()
    }
}

/// What the runtime has done with its invocations, by request ID: what the
/// extension pairs its INVOKE events with.
#[derive(Default)]
struct Invocations {
    /// How many invocations the runtime has started.
    started: u64,
    /// Started and not yet answered.
    in_flight: HashSet<String>,
    /// Answered, newest last, at most [`ANSWERED_KEPT`].
    answered: VecDeque<String>,
}

impl Invocations {
    fn start(&mut self, request_id: &str) {
        self.started = self.started.wrapping_add(1);
        self.in_flight.insert(request_id.to_owned());
    }

    fn answer(&mut self, request_id: &str) {
        self.in_flight.remove(request_id);
        if self.answered.len() >= ANSWERED_KEPT {
            self.answered.pop_front();
        }
        self.answered.push_back(request_id.to_owned());
    }

    /// Whether the extension may stop waiting for `request_id`'s response,
    /// given that the runtime had started `started_before` invocations when
    /// the INVOKE event arrived: it has been answered, or the runtime has
    /// since started another invocation while this one is not running (so
    /// the runtime will never get it).
    fn settled(&self, request_id: &str, started_before: u64) -> bool {
        self.answered.iter().any(|id| id == request_id)
            || (self.started != started_before && !self.in_flight.contains(request_id))
    }
}

fn invocations() -> &'static Mutex<Invocations> {
    static INVOCATIONS: OnceLock<Mutex<Invocations>> = OnceLock::new();
    INVOCATIONS.get_or_init(Mutex::default)
}

fn queue() -> &'static Mutex<Queue> {
    static QUEUE: OnceLock<Mutex<Queue>> = OnceLock::new();
    QUEUE.get_or_init(Mutex::default)
}

/// Bumped whenever an invocation is answered or an upload ends.
fn changes() -> &'static watch::Sender<u64> {
    static CHANGES: OnceLock<watch::Sender<u64>> = OnceLock::new();
    CHANGES.get_or_init(|| watch::Sender::new(0))
}

fn bump() {
    changes().send_modify(|n| *n = n.wrapping_add(1));
}

/// Turns deferred uploads on for the process; called by [`crate::run`] once
/// its extension is registered.
pub(crate) fn enable() {
    ENABLED.store(true, Ordering::Release);
}

/// Turns deferred uploads on for an environment that runs up to
/// `concurrency` invocations at once and is never frozen (Lambda Managed
/// Instances, under `crate::run_concurrent`): each upload starts after its
/// response and runs in the background; no extension waits for it.
#[cfg(feature = "concurrency")]
pub(crate) fn enable_concurrent(concurrency: usize) {
    let limit = concurrency.saturating_mul(PENDING_PER_CONCURRENT_INVOCATION);
    MAX_PENDING.store(limit.max(8), Ordering::Release);
    NEVER_FROZEN.store(true, Ordering::Release);
    enable();
}

/// Whether the environment keeps running between invocations (Lambda
/// Managed Instances), so an upload after the response is not bound by its
/// invocation's deadline.
pub(crate) fn never_frozen() -> bool {
    NEVER_FROZEN.load(Ordering::Acquire)
}

/// Turns deferred uploads off again: the extension that keeps the
/// environment awake for them has stopped, so later profiles upload inline.
pub(crate) fn disable() {
    ENABLED.store(false, Ordering::Release);
}

/// Queues `job` until its invocation's response is sent. Hands the job back
/// when deferred uploads are off, so the caller uploads it inline.
pub(crate) fn defer(job: PendingUpload) -> Option<PendingUpload> {
    if !ENABLED.load(Ordering::Acquire) {
        return Some(job);
    }
    let Ok(mut queue) = queue().lock() else {
        return Some(job);
    };
    let waiting_bytes: usize = queue.waiting.iter().map(|j| j.bytes).sum();
    if queue.pending() >= MAX_PENDING.load(Ordering::Acquire)
        || waiting_bytes + job.bytes > MAX_PENDING_BYTES
    {
        tracing::warn!(
            request_id = %job.request_id,
            key = %job.key,
            pending = queue.pending(),
            "profile dropped: too many uploads are already pending; lower XRAYPROFILE_THRESHOLD or check why uploads are slow"
        );
        return None;
    }
    queue.waiting.push_back(job);
    None
}

/// The runtime has received the invocation `request_id` and calls the
/// handler.
pub(crate) fn invocation_started(request_id: &str) {
    if let Ok(mut invocations) = invocations().lock() {
        invocations.start(request_id);
    }
    bump();
}

/// The runtime has posted the response of `request_id`: start its uploads.
pub(crate) fn response_sent(request_id: &str) {
    let ready: Vec<PendingUpload> = match queue().lock() {
        Ok(mut queue) => {
            let (ready, rest): (VecDeque<PendingUpload>, VecDeque<PendingUpload>) = queue
                .waiting
                .drain(..)
                .partition(|job| job.request_id == request_id);
            queue.waiting = rest;
            ready.into()
        }
        Err(_) => Vec::new(),
    };
    start(ready);
    if let Ok(mut invocations) = invocations().lock() {
        invocations.answer(request_id);
    }
    bump();
}

/// Spawns `jobs`, tracking each as running until it ends.
fn start(jobs: Vec<PendingUpload>) {
    if let Ok(mut queue) = queue().lock() {
        queue
            .running
            .extend(jobs.iter().map(|job| job.key.to_string()));
    }
    for job in jobs {
        tokio::spawn(async move {
            let key = job.key.to_string();
            job.run().await;
            if let Ok(mut queue) = queue().lock()
                && let Some(at) = queue.running.iter().position(|k| *k == key)
            {
                queue.running.swap_remove(at);
            }
            bump();
        });
    }
}

/// At shutdown: starts every upload still waiting for its response (the
/// response will not come now) and waits up to `budget` for all uploads to
/// end. Returns the keys of the profiles still not stored, which the caller
/// reports as dropped.
pub(crate) async fn flush(budget: Duration) -> Vec<String> {
    let mut changed = changes().subscribe();
    let waiting: Vec<PendingUpload> = queue()
        .lock()
        .map(|mut q| q.waiting.drain(..).collect())
        .unwrap_or_default();
    start(waiting);
    let idle = async {
        loop {
            let busy = queue().lock().map(|q| q.pending() > 0).unwrap_or(false);
            if !busy || changed.changed().await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(budget, idle).await;
    queue().lock().map(|q| q.pending_keys()).unwrap_or_default()
}

/// The extension's answer to the INVOKE event of `request_id`: returns once
/// that invocation is settled ([`Invocations::settled`]) and no upload is
/// waiting or running, or when only [`EXTENSION_MARGIN`] is left before
/// `deadline` ([`UNKNOWN_DEADLINE_WAIT`] when it is unknown).
pub(crate) async fn wait_until_idle(request_id: &str, deadline: Option<SystemTime>) {
    let mut changed = changes().subscribe();
    let started_before = invocations().lock().map(|i| i.started).unwrap_or(0);
    let idle = async {
        loop {
            let settled = invocations()
                .lock()
                .map(|i| i.settled(request_id, started_before))
                .unwrap_or(true);
            let busy = queue().lock().map(|q| q.pending() > 0).unwrap_or(false);
            if settled && !busy {
                return;
            }
            if changed.changed().await.is_err() {
                return;
            }
        }
    };
    let budget = deadline.map_or(UNKNOWN_DEADLINE_WAIT, |d| {
        d.duration_since(SystemTime::now())
            .unwrap_or_default()
            .saturating_sub(EXTENSION_MARGIN)
    });
    if tokio::time::timeout(budget, idle).await.is_err() {
        let keys = queue().lock().map(|q| q.pending_keys()).unwrap_or_default();
        if deadline.is_some() {
            tracing::warn!(
                request_id,
                ?keys,
                "the invocation deadline arrived with profile uploads still pending; they may be lost when Lambda freezes the environment; raise the function timeout"
            );
        } else {
            tracing::warn!(
                request_id,
                ?keys,
                "the xrayprofile extension stopped waiting for this invocation after {} s (its deadline is unknown, as emulators send); if uploads are listed, check the network path to S3",
                UNKNOWN_DEADLINE_WAIT.as_secs()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The extension's side of one INVOKE event: what `wait_until_idle`
    /// snapshots when the event arrives.
    struct Invoke<'a> {
        request_id: &'a str,
        started_before: u64,
    }

    impl<'a> Invoke<'a> {
        fn arrives(invocations: &Invocations, request_id: &'a str) -> Self {
            Invoke {
                request_id,
                started_before: invocations.started,
            }
        }

        fn settled(&self, invocations: &Invocations) -> bool {
            invocations.settled(self.request_id, self.started_before)
        }
    }

    #[test]
    fn the_extension_waits_for_its_own_invocation() {
        let mut runtime = Invocations::default();
        let invoke = Invoke::arrives(&runtime, "a");
        assert!(!invoke.settled(&runtime), "before the runtime got it");
        runtime.start("a");
        assert!(!invoke.settled(&runtime), "while the handler runs");
        runtime.answer("a");
        assert!(invoke.settled(&runtime));
    }

    #[test]
    fn an_invoke_that_arrives_after_its_response_is_settled() {
        let mut runtime = Invocations::default();
        runtime.start("a");
        runtime.answer("a");
        assert!(Invoke::arrives(&runtime, "a").settled(&runtime));
    }

    #[test]
    fn an_invoke_sent_before_the_extension_registered_shifts_nothing() {
        let mut runtime = Invocations::default();
        // The extension never sees A's INVOKE.
        runtime.start("a");
        runtime.answer("a");
        // B's INVOKE arrives: counting would pair it with A's answer and
        // release the environment before B's upload ran.
        let b = Invoke::arrives(&runtime, "b");
        assert!(!b.settled(&runtime));
        runtime.start("b");
        assert!(!b.settled(&runtime), "B's response has not gone out");
        runtime.answer("b");
        assert!(b.settled(&runtime));
    }

    #[test]
    fn invocations_without_any_invoke_leave_later_pairings_intact() {
        let mut runtime = Invocations::default();
        for id in ["a", "b", "c"] {
            runtime.start(id);
            runtime.answer(id);
        }
        let d = Invoke::arrives(&runtime, "d");
        runtime.start("d");
        assert!(!d.settled(&runtime));
        runtime.answer("d");
        assert!(d.settled(&runtime));
    }

    #[test]
    fn an_invoke_sent_twice_holds_neither_copy_nor_the_next_invocation() {
        let mut runtime = Invocations::default();
        let first = Invoke::arrives(&runtime, "a");
        runtime.start("a");
        let second = Invoke::arrives(&runtime, "a");
        assert!(!first.settled(&runtime) && !second.settled(&runtime));
        runtime.answer("a");
        assert!(first.settled(&runtime) && second.settled(&runtime));
        // Counting would now expect a third response for B's INVOKE.
        let b = Invoke::arrives(&runtime, "b");
        runtime.start("b");
        assert!(!b.settled(&runtime));
        runtime.answer("b");
        assert!(b.settled(&runtime));
        // The duplicate arriving late is settled at once.
        assert!(Invoke::arrives(&runtime, "a").settled(&runtime));
    }

    #[test]
    fn an_invoke_the_runtime_never_gets_is_settled_by_the_next_invocation() {
        let mut runtime = Invocations::default();
        let ghost = Invoke::arrives(&runtime, "ghost");
        assert!(!ghost.settled(&runtime));
        runtime.start("b");
        assert!(ghost.settled(&runtime));
    }

    #[test]
    fn answered_ids_are_bounded() {
        let mut runtime = Invocations::default();
        for n in 0..ANSWERED_KEPT * 3 {
            let id = n.to_string();
            runtime.start(&id);
            runtime.answer(&id);
        }
        assert_eq!(runtime.answered.len(), ANSWERED_KEPT);
        assert!(runtime.in_flight.is_empty());
    }
}
