//! Stand-in for the SIGPROF sampler on targets it does not support yet
//! (it reads the interrupted PC from Linux's x86_64/aarch64 `ucontext`):
//! profiling never starts there, and the invocation runs unprofiled.

/// Why the sampler could not start.
#[derive(Debug)]
pub(crate) enum SamplerError {
    /// The platform has no sampler.
    Os(&'static str, std::io::Error),
}

/// Never constructed on this target.
#[derive(Debug)]
pub(crate) struct Sampler(());

/// Never constructed on this target.
#[derive(Debug)]
pub(crate) struct Samples(());

/// Unknown here: nothing read of the loaded objects is kept.
pub(crate) fn loader_generation() -> Option<(u64, u64)> {
    None
}

/// No unwinder of its own here: the probe uses libgcc.
pub(crate) fn walk_current_stack(_frame: impl FnMut(u64, u64) -> bool) -> bool {
    false
}

pub(crate) fn start(_hz: u32, _slots: usize) -> Result<Sampler, SamplerError> {
    Err(SamplerError::Os(
        "sampler",
        std::io::Error::other("CPU profiling is implemented for Linux on x86_64 and aarch64 only"),
    ))
}

impl Sampler {
    pub(crate) fn invocation(&self) -> u64 {
        0
    }

    pub(crate) fn stop(self) -> Samples {
        Samples(())
    }
}

impl Samples {
    pub(crate) fn stacks(&self) -> impl Iterator<Item = &[u64]> + '_ {
        std::iter::empty()
    }

    pub(crate) fn marked_stacks(&self) -> impl Iterator<Item = (bool, &[u64])> + '_ {
        std::iter::empty()
    }

    pub(crate) fn recorded(&self) -> usize {
        0
    }

    pub(crate) fn dropped(&self) -> u64 {
        0
    }

    pub(crate) fn memory(&self) -> usize {
        0
    }
}

/// What a thread is polling (see the Linux sampler).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PollMark {
    pub(crate) root: usize,
    pub(crate) invocation: u64,
}

/// The mark of the profiler's own work (see the Linux sampler).
pub(crate) const PROFILER_WORK: u64 = u64::MAX;

/// No sampler, so no sample is ever tagged; the mark is kept for symmetry.
pub(crate) fn set_poll_mark(_mark: PollMark) -> PollMark {
    PollMark::default()
}

/// Bytes per sample slot (none are ever filled here).
pub(crate) const SLOT_BYTES: usize = 512;

/// No sampler, so no sample can be taken.
#[cfg(feature = "bench")]
pub(crate) fn sample_this_thread() -> bool {
    false
}
