//! Entry points for this crate's own benchmarks (`cargo bench -p xrayprofile`):
//! the profiler and the file encoder without a Lambda invocation around them,
//! so the benchmarks time exactly "start → body → pprof bytes".

use std::future::Future;
use std::time::Duration;

use crate::pprof_file::{self, Identity};
use crate::profiler::{ActiveProfile, Detail, FinishedProfile, ProfileError};
use crate::wall::{Observed, Recorder};

/// A running profile, as a sampled invocation starts it.
pub struct Profiling(ActiveProfile);

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

    /// Like [`Profiling::start`], without warming the symbol cache in the
    /// background: a cold cache is parsed after the body returns.
    ///
    /// # Errors
    /// The profiler's error, as text, when it is busy or cannot start.
    pub fn start_cold() -> Result<Profiling, String> {
        ActiveProfile::start_cold()
            .map(Profiling)
            .map_err(|err| err.to_string())
    }

    /// Stops, symbolizes and encodes, as a sampled invocation does after the
    /// handler returns.
    ///
    /// # Errors
    /// The profiler's or encoder's error, as text.
    pub fn finish(self) -> Result<Encoded, String> {
        encode(self.0.finish())
    }

    /// Runs `future` as a sampled invocation in the default `wall` mode
    /// does (polled through the waker probe, with the CPU sampler on), then
    /// builds the profile. Returns the output, the time the future took
    /// (what the caller waits for) and the encoded profile.
    ///
    /// # Errors
    /// The profiler's or encoder's error, as text, or the future's panic.
    pub async fn wall<F: Future>(
        self,
        future: F,
    ) -> Result<(F::Output, Duration, Encoded), String> {
        let mut recorder = Recorder::default();
        let started = std::time::Instant::now();
        let output = Observed::new(future, Some(&mut recorder)).await;
        let took = started.elapsed();
        let output = output.map_err(|_| "the future panicked".to_owned())?;
        let recording = recorder.finish();
        let encoded = encode(self.0.finish_wall(Detail::Names, &recording))?;
        Ok((output, took, encoded))
    }

    /// Like [`Profiling::finish`], writing an address-level profile
    /// (`XRAYPROFILE_SYMBOLIZE=false`) instead of names.
    ///
    /// # Errors
    /// The profiler's or encoder's error, as text.
    pub fn finish_addresses(self) -> Result<Encoded, String> {
        encode(self.0.finish_with(Detail::Addresses))
    }
}

/// Takes one CPU sample of the calling thread while a [`Profiling`] runs,
/// through the sampler's own signal and handler; false if it could not
/// (no profile, or the sampler does not watch this thread yet).
pub fn sample_this_thread() -> bool {
    crate::profiler::sample_this_thread()
}

/// Nanoseconds per poll of a future that yields `polls` times on a
/// current-thread runtime, polled four ways.
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
}

/// Measures [`PollCost`] (no CPU sampler running).
///
/// # Errors
/// If a tokio runtime cannot be built.
pub fn poll_cost(polls: u32) -> Result<PollCost, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|err| err.to_string())?;
    let yields = || async move {
        for _ in 0..polls {
            tokio::task::yield_now().await;
        }
    };
    let per_poll = |took: Duration| took.as_secs_f64() * 1e9 / f64::from(polls.max(1));
    let time = |run: &dyn Fn()| {
        let started = std::time::Instant::now();
        run();
        per_poll(started.elapsed())
    };
    Ok(PollCost {
        plain: time(&|| runtime.block_on(yields())),
        caught: time(&|| drop(runtime.block_on(Observed::new(yields(), None)))),
        timed: time(&|| {
            let mut recorder = Recorder::timing_only();
            drop(runtime.block_on(Observed::new(yields(), Some(&mut recorder))));
        }),
        recorded: time(&|| {
            let mut recorder = Recorder::default();
            drop(runtime.block_on(Observed::new(yields(), Some(&mut recorder))));
        }),
    })
}

/// Encodes a finished profile as a sampled invocation stores it.
fn encode(finished: Result<FinishedProfile, ProfileError>) -> Result<Encoded, String> {
    let finished = finished.map_err(|err| err.to_string())?;
    let identity = Identity {
        trace_id: "1-5759e988-bd862e3fe1be46a9942701f0",
        request_id: "8476a536-e9f4-11e8-9739-2dfe598c3fcd",
        function_name: "bench",
        function_version: "$LATEST",
        outcome: "ok",
    };
    let file = pprof_file::encode(finished.profile, finished.samples, &identity)
        .map_err(|err| err.to_string())?;
    Ok(Encoded {
        gzipped: file.gzipped,
        samples: file.samples,
    })
}
