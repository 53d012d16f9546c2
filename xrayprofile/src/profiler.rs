//! The CPU profiler behind a three-step interface: [`ActiveProfile::start`],
//! [`ActiveProfile::finish`], bytes.
//!
//! Today it is pprof-rs's SIGPROF sampler at 99 Hz. pprof-rs keeps one
//! process-wide profiler, so at most one profile runs at a time: a second
//! `start` while one is active returns [`ProfileError::Busy`] at once, without
//! touching pprof-rs. Its memory cost (a 65 MiB sample table kept for the
//! process's life, see `docs/design.md`) is why nothing outside this module
//! knows which sampler is used.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use pprof::protos::Profile;

/// Samples per second of CPU time, as in go-xrayprofile.
const FREQUENCY_HZ: i32 = 99;

/// Frames from these libraries are the signal machinery, not the handler.
const BLOCKLIST: [&str; 4] = ["libc", "libgcc", "pthread", "vdso"];

/// Held while a profile runs anywhere in the process.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// Why no profile came out.
#[derive(Debug)]
#[non_exhaustive]
pub(crate) enum ProfileError {
    /// Another invocation in this process is being profiled.
    Busy,
    /// pprof-rs could not start, stop or report.
    Sampler(pprof::Error),
    /// The profile could not be encoded or compressed.
    Encode(std::io::Error),
}

impl std::fmt::Display for ProfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProfileError::Busy => {
                f.write_str("another invocation in this process is being profiled")
            }
            ProfileError::Sampler(err) => write!(f, "the CPU sampler failed: {err}"),
            ProfileError::Encode(err) => write!(f, "encoding the profile failed: {err}"),
        }
    }
}

impl std::error::Error for ProfileError {}

/// A running CPU profile. Dropping it stops the sampler, so a panicking or
/// cancelled handler cannot leave the profiler running.
pub(crate) struct ActiveProfile {
    guard: Option<pprof::ProfilerGuard<'static>>,
    started: Instant,
}

/// A stopped profile: pprof-rs's protobuf and how long it ran.
pub(crate) struct FinishedProfile {
    pub(crate) profile: Profile,
    pub(crate) duration: std::time::Duration,
}

impl ActiveProfile {
    /// Starts sampling the whole process.
    ///
    /// # Errors
    /// [`ProfileError::Busy`] if a profile is already running;
    /// [`ProfileError::Sampler`] if pprof-rs cannot install its signal handler.
    pub(crate) fn start() -> Result<ActiveProfile, ProfileError> {
        if RUNNING.swap(true, Ordering::AcqRel) {
            return Err(ProfileError::Busy);
        }
        match pprof::ProfilerGuardBuilder::default()
            .frequency(FREQUENCY_HZ)
            .blocklist(&BLOCKLIST)
            .build()
        {
            Ok(guard) => Ok(ActiveProfile {
                guard: Some(guard),
                started: Instant::now(),
            }),
            Err(err) => {
                RUNNING.store(false, Ordering::Release);
                Err(ProfileError::Sampler(err))
            }
        }
    }

    /// Stops sampling and returns the samples as a symbolized pprof profile.
    ///
    /// # Errors
    /// [`ProfileError::Sampler`] if pprof-rs cannot build its report.
    pub(crate) fn finish(mut self) -> Result<FinishedProfile, ProfileError> {
        let duration = self.started.elapsed();
        let guard = self.guard.take();
        let report = match &guard {
            Some(guard) => guard
                .report()
                .frames_post_processor(drop_sampler_frames)
                .build()
                .map_err(ProfileError::Sampler)?,
            None => return Err(ProfileError::Busy),
        };
        // Stop sampling before symbolizing and encoding, so that work does not
        // show up in the profile it produces.
        drop(guard);
        let profile = report.pprof().map_err(ProfileError::Sampler)?;
        Ok(FinishedProfile { profile, duration })
    }
}

/// Removes the sampler's own frames from the leaf end of a stack.
///
/// pprof-rs unwinds from inside its signal handler and removes only the
/// handler's frame and the signal trampoline, so every stack starts with the
/// unwinder's frames (`backtrace::trace_unsynchronized`, `_Unwind_Backtrace`,
/// the handler's closure, ...). Left in, they would be the "hottest" leaf of
/// every profile and hide the function that was really running.
fn drop_sampler_frames(frames: &mut pprof::Frames) {
    let sampler_frames = frames
        .frames
        .iter()
        .take_while(|symbols| {
            !symbols.is_empty() && symbols.iter().all(|s| is_sampler_symbol(&s.name()))
        })
        .count();
    frames.frames.drain(..sampler_frames);
}

fn is_sampler_symbol(name: &str) -> bool {
    const PREFIXES: [&str; 9] = [
        "backtrace::",
        "<backtrace::",
        "pprof::",
        "<pprof::",
        "_Unwind_",
        "uw_",
        "core::ops::function::",
        "<&mut F as core::ops::function::",
        "<&F as core::ops::function::",
    ];
    PREFIXES.iter().any(|prefix| name.starts_with(prefix)) || name.contains("perf_signal_handler")
}

impl Drop for ActiveProfile {
    fn drop(&mut self) {
        drop(self.guard.take());
        RUNNING.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_frames_are_recognised_and_user_frames_are_not() {
        for sampler in [
            "backtrace::backtrace::trace_unsynchronized",
            "<pprof::backtrace::backtrace_rs::Trace as pprof::backtrace::Trace>::trace",
            "pprof::profiler::perf_signal_handler::{{closure}}",
            "_Unwind_Backtrace",
            "core::ops::function::impls::<impl core::ops::function::FnMut<A> for &mut F>::call_mut",
        ] {
            assert!(is_sampler_symbol(sampler), "{sampler}");
        }
        for user in [
            "fixture_function::fixture_hot_loop",
            "tokio::runtime::task::raw::poll",
            "main",
        ] {
            assert!(!is_sampler_symbol(user), "{user}");
        }
    }
}
