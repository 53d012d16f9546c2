//! The CPU profile of one invocation, started and stopped: at most one runs
//! per process, behind an RAII guard ([`ActiveProfile`]).
//!
//! Our own SIGPROF sampler ([`crate::sampler`]) records raw instruction
//! addresses at 99 Hz into a small preallocated buffer; stopping hands them
//! over unsymbolized ([`StoppedProfile`]), and the report
//! (`report.rs`) resolves only the sampled addresses when it builds
//! the profile. A second start while one is active returns
//! [`ProfileError::Busy`] at once. Why not pprof-rs's sampler (a 65 MiB table
//! kept for the process's life) is in `docs/design.md`.

use std::time::{Duration, Instant, SystemTime};

use crate::sampler::{self, SamplerError};
use crate::symbolize::{self, Detail, WarmUp};

/// Samples per second of CPU time, as in go-xrayprofile.
pub(crate) const FREQUENCY_HZ: u32 = 99;

/// Stacks the buffer holds: 8,192 × 512 B = 4 MiB of address space, 82 s of
/// CPU time at 99 Hz. Pages are touched only as samples arrive (a 200 ms
/// invocation uses about 10 KiB); samples past the end are counted and
/// dropped.
const BUFFER_SLOTS: usize = 8192;

/// Why no profile came out.
#[derive(Debug)]
#[non_exhaustive]
pub(crate) enum ProfileError {
    /// Another invocation in this process is being profiled.
    Busy,
    /// The sampler could not start: the system call `call` failed.
    Sampler {
        call: &'static str,
        error: std::io::Error,
    },
}

impl std::fmt::Display for ProfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProfileError::Busy => {
                f.write_str("another invocation in this process is being profiled")
            }
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
    warm_up: Option<WarmUp>,
}

impl ActiveProfile {
    /// Starts sampling the whole process, for a profile with function names.
    ///
    /// # Errors
    /// As [`ActiveProfile::start_for`].
    #[cfg(any(test, feature = "bench"))]
    pub(crate) fn start() -> Result<ActiveProfile, ProfileError> {
        ActiveProfile::start_for(Detail::Names)
    }

    /// Starts sampling the whole process, for a profile that `detail` will
    /// finish. For the process's first [`Detail::Names`] profile, the symbol
    /// cache is filled on a background thread while the handler runs
    /// ([`symbolize::warm_up`]).
    ///
    /// # Errors
    /// [`ProfileError::Busy`] if a profile is already running;
    /// [`ProfileError::Sampler`] if the signal handler, timer or buffer cannot
    /// be set up.
    pub(crate) fn start_for(detail: Detail) -> Result<ActiveProfile, ProfileError> {
        ActiveProfile::start_warming(detail == Detail::Names)
    }

    /// [`ActiveProfile::start`] without the background warm-up: the cold
    /// cache is parsed after the handler returns. For the tests, and the
    /// benchmark that measures what the warm-up saves.
    ///
    /// # Errors
    /// As [`ActiveProfile::start_for`].
    #[cfg(any(test, feature = "bench"))]
    pub(crate) fn start_cold() -> Result<ActiveProfile, ProfileError> {
        ActiveProfile::start_warming(false)
    }

    fn start_warming(warm_up: bool) -> Result<ActiveProfile, ProfileError> {
        match sampler::start(FREQUENCY_HZ, BUFFER_SLOTS) {
            Ok(sampler) => Ok(ActiveProfile {
                sampler,
                started: Instant::now(),
                started_at: SystemTime::now(),
                warm_up: if warm_up { symbolize::warm_up() } else { None },
            }),
            Err(SamplerError::Busy) => Err(ProfileError::Busy),
            Err(SamplerError::Os(call, error)) => Err(ProfileError::Sampler { call, error }),
        }
    }

    /// Whether this profile started the symbol cache's warm-up.
    #[cfg(test)]
    pub(crate) fn warms_up(&self) -> bool {
        self.warm_up.is_some()
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
                "profile truncated: the sample buffer filled after {} s of CPU time; later samples are missing",
                BUFFER_SLOTS / FREQUENCY_HZ as usize
            );
        }
        StoppedProfile {
            samples,
            duration,
            started_at: self.started_at,
            warm_up: self.warm_up,
        }
    }
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
    /// The symbol cache's warm-up, if this profile started one; symbolizing
    /// waits for it.
    pub(crate) warm_up: Option<WarmUp>,
}

impl StoppedProfile {
    /// Roughly the memory its samples hold until built: one touched slot
    /// per sample.
    pub(crate) fn memory_estimate(&self) -> usize {
        self.samples.recorded().saturating_mul(sampler::SLOT_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler;
    use crate::test_support::{serial, spin_in_named_leaf, wait_for_warm_ups};

    #[test]
    fn start_while_running_is_busy_and_drop_stops_the_timer() {
        let _serial = serial();
        let first = ActiveProfile::start_cold().unwrap();
        assert!(
            eventually(|| sampler::ticker_timers() > 0),
            "the ticker gives the threads their timers"
        );
        assert!(matches!(ActiveProfile::start(), Err(ProfileError::Busy)));
        drop(first);
        assert!(
            eventually(|| sampler::ticker_timers() == 0),
            "dropping the profile deletes the timers"
        );
        let again = ActiveProfile::start_cold().unwrap();
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

    #[test]
    fn a_full_buffer_drops_and_counts_samples() {
        let _serial = serial();
        wait_for_warm_ups();
        let sampler = sampler::start(FREQUENCY_HZ, 2).unwrap();
        spin_in_named_leaf(std::time::Duration::from_millis(200));
        let samples = sampler.stop();
        assert_eq!(samples.recorded(), 2);
        assert!(samples.dropped() >= 5, "{}", samples.dropped());
        for stack in samples.stacks() {
            assert!(!stack.is_empty() && stack.len() <= sampler::MAX_FRAMES);
        }
    }
}
