//! The CPU profile of one invocation, started and stopped behind an RAII
//! guard ([`ActiveProfile`]). Several may run at once (concurrent
//! invocations): they share the process-wide sampler, and each keeps only
//! the samples taken inside its own invocation's future, plus those taken
//! outside any.
//!
//! Our own SIGPROF sampler ([`crate::sampler`]) records raw instruction
//! addresses at 99 Hz into a small preallocated buffer; stopping hands them
//! over unsymbolized ([`StoppedProfile`]), and the report
//! (`report.rs`) resolves only the sampled addresses when it builds
//! the profile. Why not pprof-rs's sampler (a 65 MiB table kept for the
//! process's life) is in `docs/design.md`.

use std::time::{Duration, Instant, SystemTime};

use crate::sampler::{self, SamplerError};

/// Samples per second of CPU time, as in go-xrayprofile.
pub(crate) const FREQUENCY_HZ: u32 = 99;

/// Stacks the ring holds, for all the profiles running at once: 8,192 ×
/// 512 B = 4 MiB of address space, 82 s of CPU time at 99 Hz (41 s with two
/// busy vCPUs). Pages are touched only as samples arrive (a 200 ms
/// invocation uses about 10 KiB); a profile that outlives one turn of the
/// ring loses its oldest samples, counted and logged.
const BUFFER_SLOTS: usize = 8192;

/// Why no profile came out.
#[derive(Debug)]
#[non_exhaustive]
pub(crate) enum ProfileError {
    /// The sampler could not start: the system call `call` failed.
    Sampler {
        call: &'static str,
        error: std::io::Error,
    },
}

impl std::fmt::Display for ProfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProfileError::Sampler { call, error } => {
                write!(f, "the CPU sampler could not start: {call} failed: {error}")
            }
        }
    }
}

impl std::error::Error for ProfileError {}

/// A running CPU profile. Dropping it stops the sampler, so a panicking or
/// cancelled handler cannot leave the profiler running.
pub(crate) struct ActiveProfile {
    sampler: sampler::Sampler,
    started: Instant,
    started_at: SystemTime,
}

impl ActiveProfile {
    /// Starts sampling the whole process. Nothing is read for symbolization
    /// until the profile is built: no warm-up competes with the handler.
    ///
    /// # Errors
    /// [`ProfileError::Sampler`] if the signal handler, timer or buffer cannot
    /// be set up.
    pub(crate) fn start() -> Result<ActiveProfile, ProfileError> {
        match sampler::start(FREQUENCY_HZ, BUFFER_SLOTS) {
            Ok(sampler) => Ok(ActiveProfile {
                sampler,
                started: Instant::now(),
                started_at: SystemTime::now(),
            }),
            Err(SamplerError::Os(call, error)) => Err(ProfileError::Sampler { call, error }),
        }
    }

    /// This profile's number: what the wrapper's polls of its invocation's
    /// future mark (see [`crate::sampler::PollMark`]).
    pub(crate) fn invocation(&self) -> u64 {
        self.sampler.invocation()
    }

    /// Stops sampling, so nothing after this shows up in the profile; the
    /// samples wait, unsymbolized, in the returned value. Cheap: building
    /// the profile is `report::build`, which a caller may run later
    /// (after the response).
    pub(crate) fn stop(self) -> StoppedProfile {
        let duration = self.started.elapsed();
        let samples = self.sampler.stop();
        if samples.dropped() > 0 {
            tracing::warn!(
                dropped = samples.dropped(),
                kept = BUFFER_SLOTS,
                "profile truncated: the sample ring, shared by the profiles running at once, went round during this one ({} s of CPU time of the whole process); its oldest samples are missing",
                BUFFER_SLOTS / FREQUENCY_HZ as usize
            );
        }
        StoppedProfile {
            samples,
            duration,
            started_at: self.started_at,
        }
    }
}

/// Runs `work` as the profiler's own (building a profile): the CPU samples
/// taken meanwhile on this thread go into no profile. Under concurrency
/// other profiles are still sampling, and symbolizing one profile is not
/// the work of another invocation.
pub(crate) fn as_profiler_work<T>(work: impl FnOnce() -> T) -> T {
    let outer = sampler::set_poll_mark(sampler::PollMark {
        root: 0,
        invocation: sampler::PROFILER_WORK,
    });
    let output = work();
    sampler::set_poll_mark(outer);
    output
}

/// A profile whose sampling has stopped and whose samples are not yet
/// symbolized.
pub(crate) struct StoppedProfile {
    /// The raw stacks, leaf first.
    pub(crate) samples: sampler::Samples,
    /// How long sampling ran.
    pub(crate) duration: Duration,
    /// When sampling started.
    pub(crate) started_at: SystemTime,
}

impl StoppedProfile {
    /// Roughly the memory its samples hold until built.
    pub(crate) fn memory_estimate(&self) -> usize {
        self.samples.memory()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler;
    use crate::test_support::{burn_thread_cpu, serial};

    #[test]
    fn profiles_overlap_and_the_last_one_dropped_stops_the_timer() {
        let _serial = serial();
        let first = ActiveProfile::start().unwrap();
        assert!(
            eventually(|| sampler::ticker_timers() > 0),
            "the ticker gives the threads their timers"
        );
        let second = ActiveProfile::start().unwrap();
        assert_ne!(first.invocation(), second.invocation());
        drop(first);
        std::thread::sleep(3 * sampler::TICK);
        assert!(
            sampler::ticker_timers() > 0,
            "the second profile still samples"
        );
        drop(second);
        assert!(
            eventually(|| sampler::ticker_timers() == 0),
            "dropping the last profile deletes the timers"
        );
        let again = ActiveProfile::start().unwrap();
        assert!(eventually(|| sampler::ticker_timers() > 0));
        drop(again);
        assert!(eventually(|| sampler::ticker_timers() == 0));
    }

    /// Whether `condition` holds within a second (the ticker acts on its
    /// own thread).
    fn eventually(condition: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + std::time::Duration::from_secs(1);
        while !condition() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        true
    }

    /// The handler's own unwinder (x86_64) gives, for every sample taken
    /// on this thread, the callers libgcc gives from ordinary code, and
    /// leaves (almost) no sample to libgcc.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn sampled_stacks_end_with_the_callers_libgcc_finds() {
        let _serial = serial();
        let this = sampled_stacks_end_with_the_callers_libgcc_finds as *const () as usize;
        let mut callers = Vec::new();
        let mut seen_this = false;
        backtrace::trace(|frame| {
            if seen_this && !frame.ip().is_null() {
                callers.push(frame.ip() as u64);
            }
            seen_this = seen_this || frame.symbol_address() as usize == this;
            true
        });
        assert!(callers.len() > 3, "libgcc found {callers:x?}");
        let fallbacks = sampler::libgcc_walks();
        let sampler = sampler::start(FREQUENCY_HZ, BUFFER_SLOTS).unwrap();
        burn_thread_cpu(std::time::Duration::from_millis(300));
        let samples = sampler.stop();
        let fallbacks = sampler::libgcc_walks() - fallbacks;
        let ending = samples
            .stacks()
            .filter(|stack| stack.ends_with(&callers))
            .count();
        // 300 ms of this thread's CPU at 99 Hz: ~29 samples here, and other
        // tests' threads may add theirs.
        assert!(ending >= 15, "{ending} of {} stacks", samples.recorded());
        assert!(
            fallbacks * 10 <= samples.recorded() as u64,
            "{fallbacks} of {} samples unwound by libgcc",
            samples.recorded()
        );
    }

    #[test]
    fn a_full_buffer_drops_and_counts_samples() {
        let _serial = serial();
        let sampler = sampler::start(FREQUENCY_HZ, 2).unwrap();
        // Thread CPU time: the sampler's timers count it, so a loaded
        // machine still gets the samples that overflow the ring.
        burn_thread_cpu(std::time::Duration::from_millis(200));
        let samples = sampler.stop();
        // A ring of two: the last two samples survive, the others were
        // overwritten.
        assert_eq!(samples.recorded(), 2);
        assert!(samples.dropped() >= 1, "{}", samples.dropped());
        for stack in samples.stacks() {
            assert!(!stack.is_empty() && stack.len() <= sampler::MAX_FRAMES);
        }
    }
}
