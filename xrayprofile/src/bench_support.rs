//! Entry points for this crate's own benchmarks (`cargo bench -p xrayprofile`):
//! the profiler and the file encoder without a Lambda invocation around them,
//! so the benchmarks time exactly "start → body → pprof bytes".

use std::future::Future;
use std::time::Duration;

use crate::pprof_file::{self, Identity};
use crate::profiler::ActiveProfile;
use crate::report::{self, FinishedProfile};
use crate::symbolize::Detail;
use crate::wall::{Observed, Policy, Recorder, probe};

/// A running profile, as a sampled invocation starts it.
pub struct Profiling(ActiveProfile);

/// What the probe budget counts for what it cannot time, in ns: per poll
/// (timing it) and per registration of a recorded poll (releasing the handle,
/// the leaf re-storing the waker).
pub fn budget_allowances() -> (u64, u64) {
    (
        crate::wall::TIMED_POLL_NS,
        crate::wall::UNTIMED_NS_PER_REGISTRATION,
    )
}

/// Which polls the waker probe records, for [`Profiling::wall_recording`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recording {
    /// As a sampled invocation does: within the probe budget.
    Budgeted,
    /// Every poll, whatever it costs.
    EveryPoll,
    /// None after the first: polls and waits are only timed.
    TimingOnly,
}

/// A finished profile as it would be stored.
#[derive(Debug)]
pub struct Encoded {
    /// The gzipped pprof file.
    pub gzipped: Vec<u8>,
    /// CPU samples in it.
    pub samples: i64,
}

impl Profiling {
    /// Starts the process-wide profiler.
    ///
    /// # Errors
    /// The profiler's error, as text, when it is busy or cannot start.
    pub fn start() -> Result<Profiling, String> {
        ActiveProfile::start()
            .map(Profiling)
            .map_err(|err| err.to_string())
    }

    /// Stops, symbolizes and encodes, as a sampled invocation does after the
    /// handler returns.
    pub fn finish(self) -> Encoded {
        encode(report::build(self.0.stop(), Detail::Names, None))
    }

    /// Awaits `future` as this profile's invocation does in `cpu` mode: its
    /// polls are marked with this profile's number, so the CPU samples
    /// taken in it are this profile's, whichever other profiles run at
    /// once (issue 18's concurrency benchmark).
    ///
    /// # Errors
    /// The future's panic, as text.
    pub async fn cpu<F: Future>(&self, future: F) -> Result<F::Output, String> {
        Observed::tagged(future, None, self.0.invocation())
            .await
            .map_err(|_| "the future panicked".to_owned())
    }

    /// Runs `future` as a sampled invocation in the default `wall` mode
    /// does (polled through the waker probe, with the CPU sampler on), then
    /// builds the profile. Returns the output, the time the future took
    /// (what the caller waits for) and the encoded profile.
    ///
    /// # Errors
    /// The future's panic, as text.
    pub async fn wall<F: Future>(
        self,
        future: F,
    ) -> Result<(F::Output, Duration, Encoded), String> {
        self.wall_recording(Recording::Budgeted, future).await
    }

    /// [`Profiling::wall`] with the probe recording polls as `recording`
    /// says.
    ///
    /// # Errors
    /// As [`Profiling::wall`].
    pub async fn wall_recording<F: Future>(
        self,
        recording: Recording,
        future: F,
    ) -> Result<(F::Output, Duration, Encoded), String> {
        let mut recorder = match recording {
            Recording::Budgeted => Recorder::default(),
            Recording::EveryPoll => Recorder::with_policy(Policy::EveryPoll),
            Recording::TimingOnly => Recorder::with_policy(Policy::FirstPollOnly),
        };
        let started = std::time::Instant::now();
        let output = Observed::new(future, Some(&mut recorder)).await;
        let took = started.elapsed();
        let output = output.map_err(|_| "the future panicked".to_owned())?;
        let recording = recorder.finish();
        let encoded = encode(report::build(
            self.0.stop(),
            Detail::Names,
            Some(&recording),
        ));
        Ok((output, took, encoded))
    }

    /// Like [`Profiling::finish`], writing an address-level profile
    /// (`XRAYPROFILE_SYMBOLIZE=false`) instead of names.
    pub fn finish_addresses(self) -> Encoded {
        encode(report::build(self.0.stop(), Detail::Addresses, None))
    }
}

/// Takes one CPU sample of the calling thread while a [`Profiling`] runs,
/// through the sampler's own signal and handler; false if it could not
/// (no profile, or the sampler does not watch this thread yet).
pub fn sample_this_thread() -> bool {
    crate::sampler::sample_this_thread()
}

/// What the future of [`poll_cost`] does, `units` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `tokio::task::yield_now()`: one poll each.
    Yields,
    /// A round trip over tokio mpsc channels to a task that answers: the
    /// receive registers a waker, the answer wakes it.
    RoundTrips,
}

/// Nanoseconds per unit of a [`Workload`] on a current-thread runtime,
/// polled several ways.
#[derive(Debug, Clone, Copy)]
pub struct PollCost {
    /// Awaited directly.
    pub plain: f64,
    /// Through the wrapper's panic catcher only (`mode = "cpu"`).
    pub caught: f64,
    /// Through the wall recorder, stacks never recorded (timing only).
    pub timed: f64,
    /// Through the wall recorder with its default budget.
    pub recorded: f64,
    /// Through the wall recorder recording every poll.
    pub every_poll: f64,
    /// Of which the probe budget counts, per recorded poll.
    pub every_poll_counted: f64,
}

/// Measures [`PollCost`] (no CPU sampler running).
///
/// # Errors
/// If a tokio runtime cannot be built.
pub fn poll_cost(workload: Workload, units: u32) -> Result<PollCost, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|err| err.to_string())?;
    let yields = || async move {
        match workload {
            Workload::Yields => {
                for _ in 0..units {
                    tokio::task::yield_now().await;
                }
            }
            Workload::RoundTrips => round_trips(units).await,
        }
    };
    let counted = std::cell::Cell::new(0.0);
    let per_poll = |took: Duration| took.as_secs_f64() * 1e9 / f64::from(units.max(1));
    let time = |run: &dyn Fn()| {
        let started = std::time::Instant::now();
        run();
        per_poll(started.elapsed())
    };
    Ok(PollCost {
        plain: time(&|| runtime.block_on(yields())),
        caught: time(&|| drop(runtime.block_on(Observed::new(yields(), None)))),
        timed: time(&|| {
            let mut recorder = Recorder::with_policy(Policy::FirstPollOnly);
            drop(runtime.block_on(Observed::new(yields(), Some(&mut recorder))));
        }),
        recorded: time(&|| {
            let mut recorder = Recorder::default();
            drop(runtime.block_on(Observed::new(yields(), Some(&mut recorder))));
        }),
        every_poll: time(&|| {
            let mut recorder = Recorder::with_policy(Policy::EveryPoll);
            drop(runtime.block_on(Observed::new(yields(), Some(&mut recorder))));
            counted.set(recorder.finish().totals.recording_per_recorded_poll());
        }),
        every_poll_counted: counted.get(),
    })
}

async fn round_trips(n: u32) {
    let (to_echo, mut from_us) = tokio::sync::mpsc::channel::<u32>(1);
    let (to_us, mut from_echo) = tokio::sync::mpsc::channel::<u32>(1);
    let echo = tokio::spawn(async move {
        while let Some(v) = from_us.recv().await {
            if to_us.send(v).await.is_err() {
                break;
            }
        }
    });
    for i in 0..n {
        if to_echo.send(i).await.is_err() || from_echo.recv().await.is_none() {
            break;
        }
    }
    drop(to_echo);
    let _ = echo.await;
}

/// Which unwinder the waker probe uses in this build, and what the
/// frame-pointer one has done so far in this process.
#[derive(Debug, Clone, Copy)]
pub struct Unwinder {
    /// Built with `-C force-frame-pointers=yes` (`cfg(xrayprofile_frame_pointers)`)
    /// and not turned off by a mismatch.
    pub frame_pointers: bool,
    /// Captures whose frame-pointer walk did not reach the wrapper's frame
    /// and were unwound with DWARF.
    pub fallbacks: u64,
    /// Captures unwound both ways and compared.
    pub checked: u64,
    /// Compared captures whose stacks differed.
    pub mismatches: u64,
}

/// The probe's unwinder and its counts.
pub fn unwinder() -> Unwinder {
    let counts = probe::fp_counts();
    Unwinder {
        frame_pointers: probe::frame_pointers(),
        fallbacks: counts.fallbacks,
        checked: counts.checked,
        mismatches: counts.mismatches,
    }
}

/// Turns the frame-pointer walk off (`false`: captures use DWARF) or back on,
/// so one benchmark process can compare both. No effect in a build without
/// frame pointers.
pub fn use_frame_pointers(enabled: bool) {
    probe::set_frame_pointers(enabled);
}

/// What one capture of the probe costs, per unwinder.
#[derive(Debug, Clone, Copy)]
pub struct CaptureCost {
    /// Frames in each captured stack.
    pub frames: usize,
    /// DWARF unwinder: ns per capture as the probe budget counts it
    /// (the handle, the unwind, the signal mask, the stack buffer), and ns per
    /// `Waker::clone` with its drop.
    pub dwarf: (f64, f64),
    /// The same with the frame-pointer unwinder, in a build that has it.
    pub frame_pointers: Option<(f64, f64)>,
}

/// Measures [`CaptureCost`]: `clones` clones of the probe waker in one
/// probed poll, `depth` frames below the wrapper (no CPU sampler running).
pub fn capture_cost(clones: u32, depth: u32) -> CaptureCost {
    let run = || {
        let root = probe::Root::new(std::task::Waker::noop());
        let waker = root.waker();
        let started = std::time::Instant::now();
        let (_, log) = probe::poll(true, 0, probe::Buffers::default(), || {
            let mut cx = std::task::Context::from_waker(waker);
            nest(depth, &mut cx, clones)
        });
        let took = started.elapsed();
        let n = f64::from(clones.max(1));
        let frames = log
            .buffers
            .registrations
            .first()
            .map_or(0, |r| r.stack.len());
        let per_capture = log.capture_ns as f64 / n;
        (frames, (per_capture, took.as_secs_f64() * 1e9 / n))
    };
    let frame_pointers = probe::frame_pointers().then(|| {
        let _warm = run();
        run()
    });
    probe::set_frame_pointers(false);
    let _warm = run();
    let (frames, dwarf) = run();
    if frame_pointers.is_some() {
        probe::set_frame_pointers(true);
    }
    CaptureCost {
        frames: frame_pointers.map_or(frames, |(f, _)| f),
        dwarf,
        frame_pointers: frame_pointers.map(|(_, cost)| cost),
    }
}

/// `depth` frames, then `clones` registrations of the waker.
#[inline(never)]
fn nest(depth: u32, cx: &mut std::task::Context<'_>, clones: u32) -> u32 {
    if depth == 0 {
        for _ in 0..clones {
            drop(std::hint::black_box(cx.waker().clone()));
        }
        return clones;
    }
    // Used after the call, so the recursion is not a tail call.
    std::hint::black_box(nest(depth - 1, cx, clones)) + 1
}

/// Encodes a finished profile as a sampled invocation stores it.
fn encode(finished: FinishedProfile) -> Encoded {
    let identity = Identity {
        trace_id: "1-5759e988-bd862e3fe1be46a9942701f0",
        request_id: "8476a536-e9f4-11e8-9739-2dfe598c3fcd",
        function_name: "bench",
        function_version: "$LATEST",
        outcome: "ok",
    };
    let file = pprof_file::encode(finished.profile, finished.samples, &identity);
    Encoded {
        gzipped: file.gzipped,
        samples: file.samples,
    }
}
