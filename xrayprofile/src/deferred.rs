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
//! Without [`crate::run`] nothing here is enabled and [`defer`] hands the
//! job back, so the wrapper uploads inline as before; [`disable`] returns to
//! that when the extension stops.
//!
//! At shutdown (SIGTERM) [`flush`] starts whatever still waits and gives the
//! uploads a short budget, then names the profiles that did not make it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::upload::PendingUpload;

/// Uploads that may wait at once; more are dropped (and logged) rather than
/// held in memory. In the classic one-invocation-at-a-time model there is
/// at most one.
const MAX_PENDING: usize = 8;
/// Bytes of stopped profiles (raw samples and stacks) that may wait at once.
const MAX_PENDING_BYTES: usize = 16 << 20;
/// The extension answers this long before the invocation deadline even if an
/// upload is still running, so the invocation is never reported as timed out.
const EXTENSION_MARGIN: Duration = Duration::from_millis(100);

static ENABLED: AtomicBool = AtomicBool::new(false);
/// Invocations whose response has been sent (the runtime layer's count).
static ANSWERED: AtomicU64 = AtomicU64::new(0);
/// INVOKE events the extension has received.
static INVOKES_SEEN: AtomicU64 = AtomicU64::new(0);

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
    if queue.pending() >= MAX_PENDING || waiting_bytes + job.bytes > MAX_PENDING_BYTES {
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
    ANSWERED.fetch_add(1, Ordering::AcqRel);
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

/// The extension's answer to one INVOKE event: returns once that invocation
/// has been answered and no upload is waiting or running, or when only
/// [`EXTENSION_MARGIN`] is left before `deadline`.
pub(crate) async fn wait_until_idle(deadline: Option<SystemTime>) {
    let invocation = INVOKES_SEEN.fetch_add(1, Ordering::AcqRel) + 1;
    let mut changed = changes().subscribe();
    let idle = async {
        loop {
            let answered = ANSWERED.load(Ordering::Acquire) >= invocation;
            let busy = queue().lock().map(|q| q.pending() > 0).unwrap_or(false);
            if answered && !busy {
                return;
            }
            if changed.changed().await.is_err() {
                return;
            }
        }
    };
    let budget = deadline
        .and_then(|d| d.duration_since(SystemTime::now()).ok())
        .map_or(Duration::from_secs(900), |left| {
            left.saturating_sub(EXTENSION_MARGIN)
        });
    if tokio::time::timeout(budget, idle).await.is_err() {
        let keys = queue().lock().map(|q| q.pending_keys()).unwrap_or_default();
        tracing::warn!(
            ?keys,
            "the invocation deadline arrived with profile uploads still pending; they may be lost when Lambda freezes the environment; raise the function timeout"
        );
    }
}
