//! The CPU profiler behind a three-step interface: [`ActiveProfile::start`],
//! [`ActiveProfile::finish`], bytes.
//!
//! Our own SIGPROF sampler ([`signal`]) records raw instruction addresses at
//! 99 Hz into a small preallocated buffer; [`symbols`] resolves only the
//! sampled addresses when the profile finishes. At most one profile runs per
//! process: a second `start` while one is active returns
//! [`ProfileError::Busy`] at once. Why not pprof-rs's sampler (a 65 MiB table
//! kept for the process's life) is in `docs/design.md`.

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod signal;
#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
#[path = "profiler/unsupported.rs"]
mod signal;
mod symbols;
mod warm;

use std::time::{Instant, SystemTime};

use pprof::protos::Profile;

use crate::wall::Recording;

pub(crate) use signal::{SamplerError, sample_this_thread, set_poll_root};
pub(crate) use symbols::Detail;

/// Samples per second of CPU time, as in go-xrayprofile.
const FREQUENCY_HZ: u32 = 99;

/// Stacks the buffer holds: 8,192 × 512 B = 4 MiB of address space, 82 s of
/// CPU time at 99 Hz. Pages are touched only as samples arrive (a 200 ms
/// invocation uses about 10 KiB); samples past the end are counted and
/// dropped.
const BUFFER_SLOTS: usize = 8192;

/// The most RSS the symbolizer's cache may add and be kept between
/// profiles; above it the cache is dropped after each profile. 16 MiB is
/// P3's budget: a binary with line tables keeps its ~13 MiB cache, so later
/// profiles symbolize in 0.5–0.7 ms instead of re-parsing for 10–50 ms (at
/// 8 MiB they missed P4; docs/performance.md).
const SYMBOL_CACHE_LIMIT_KIB: u64 = 16 * 1024;

/// This process's resident set (`VmRSS`), in KiB.
fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Why no profile came out.
#[derive(Debug)]
#[non_exhaustive]
pub(crate) enum ProfileError {
    /// Another invocation in this process is being profiled.
    Busy,
    /// The sampler could not start.
    Sampler(SamplerError),
    /// The profile could not be encoded or compressed.
    Encode(std::io::Error),
}

impl std::fmt::Display for ProfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProfileError::Busy => {
                f.write_str("another invocation in this process is being profiled")
            }
            ProfileError::Sampler(SamplerError::Busy) => {
                f.write_str("the CPU sampler is in use by another profile")
            }
            ProfileError::Sampler(SamplerError::Os(call, err)) => {
                write!(f, "the CPU sampler could not start: {call} failed: {err}")
            }
            ProfileError::Encode(err) => write!(f, "encoding the profile failed: {err}"),
        }
    }
}

impl std::error::Error for ProfileError {}

/// A running CPU profile. Dropping it stops the sampler, so a panicking or
/// cancelled handler cannot leave the profiler running.
pub(crate) struct ActiveProfile {
    sampler: signal::Sampler,
    started: Instant,
    started_at: SystemTime,
    warm_up: Option<warm::WarmUp>,
}

/// A stopped profile: its protobuf, how long it ran and how many CPU
/// samples it holds.
pub(crate) struct FinishedProfile {
    pub(crate) profile: Profile,
    pub(crate) duration: std::time::Duration,
    pub(crate) samples: i64,
}

impl ActiveProfile {
    /// Starts sampling the whole process, for a profile with function names.
    ///
    /// # Errors
    /// As [`ActiveProfile::start_for`].
    pub(crate) fn start() -> Result<ActiveProfile, ProfileError> {
        ActiveProfile::start_for(Detail::Names)
    }

    /// Starts sampling the whole process, for a profile that `detail` will
    /// finish. For the process's first [`Detail::Names`] profile, the symbol
    /// cache is filled on a background thread while the handler runs
    /// (`warm.rs`).
    ///
    /// # Errors
    /// [`ProfileError::Busy`] if a profile is already running;
    /// [`ProfileError::Sampler`] if the signal handler, timer or buffer cannot
    /// be set up.
    pub(crate) fn start_for(detail: Detail) -> Result<ActiveProfile, ProfileError> {
        ActiveProfile::start_warming(detail == Detail::Names)
    }

    /// [`ActiveProfile::start`] without the background warm-up: the cold
    /// cache is parsed after the handler returns. For the benchmark that
    /// measures what the warm-up saves.
    ///
    /// # Errors
    /// As [`ActiveProfile::start_for`].
    pub(crate) fn start_cold() -> Result<ActiveProfile, ProfileError> {
        ActiveProfile::start_warming(false)
    }

    fn start_warming(warm_up: bool) -> Result<ActiveProfile, ProfileError> {
        match signal::start(FREQUENCY_HZ, BUFFER_SLOTS) {
            Ok(sampler) => Ok(ActiveProfile {
                sampler,
                started: Instant::now(),
                started_at: SystemTime::now(),
                warm_up: if warm_up { warm::start() } else { None },
            }),
            Err(SamplerError::Busy) => Err(ProfileError::Busy),
            Err(err) => Err(ProfileError::Sampler(err)),
        }
    }

    /// Stops sampling and returns the samples as a symbolized pprof profile.
    ///
    /// # Errors
    /// None today; the `Result` leaves room for symbolizers that can fail.
    pub(crate) fn finish(self) -> Result<FinishedProfile, ProfileError> {
        self.finish_with(Detail::Names)
    }

    /// Like [`ActiveProfile::finish`], with `detail` choosing between
    /// in-process names and addresses for offline symbolization.
    ///
    /// # Errors
    /// None today; the `Result` leaves room for symbolizers that can fail.
    pub(crate) fn finish_with(self, detail: Detail) -> Result<FinishedProfile, ProfileError> {
        self.stop().build(detail, None)
    }

    /// Stops sampling and combines the CPU samples with a wall-clock
    /// `recording` of the invocation future into one profile (see
    /// [`symbols::wall_profile`]).
    ///
    /// # Errors
    /// None today; the `Result` leaves room for symbolizers that can fail.
    pub(crate) fn finish_wall(
        self,
        detail: Detail,
        recording: &Recording,
    ) -> Result<FinishedProfile, ProfileError> {
        self.stop().build(detail, Some(recording))
    }

    /// Stops sampling, so nothing after this shows up in the profile; the
    /// samples wait, unsymbolized, in the returned value. Cheap: building
    /// the profile is [`StoppedProfile::build`], which a caller may run
    /// later (after the response).
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
    samples: signal::Samples,
    duration: std::time::Duration,
    started_at: SystemTime,
    warm_up: Option<warm::WarmUp>,
}

impl StoppedProfile {
    /// Roughly the memory its samples hold until built: one touched slot
    /// per sample.
    pub(crate) fn memory_estimate(&self) -> usize {
        self.samples.recorded().saturating_mul(signal::SLOT_BYTES)
    }

    /// Symbolizes the samples (and `recording`, in wall mode) into a pprof
    /// profile.
    ///
    /// # Errors
    /// None today; the `Result` leaves room for symbolizers that can fail.
    pub(crate) fn build(
        self,
        detail: Detail,
        recording: Option<&Recording>,
    ) -> Result<FinishedProfile, ProfileError> {
        let StoppedProfile {
            samples,
            duration,
            started_at,
            warm_up,
        } = self;
        // Symbolizing waits for the warm-up: both fill the same cache, and
        // its growth counts towards the limit below.
        let warm_growth = warm_up.map_or(0, warm::WarmUp::wait);
        let resident_before = resident_kib();
        let timing = symbols::Timing {
            started: started_at,
            duration,
            hz: FREQUENCY_HZ,
        };
        let count = i64::try_from(samples.stacks().count()).unwrap_or(i64::MAX);
        let profile = match recording {
            Some(recording) => {
                symbols::wall_profile(samples.marked_stacks(), recording, timing, detail)
            }
            None => symbols::profile(samples.stacks(), timing, detail),
        };
        drop(samples);
        // backtrace-rs keeps what it parsed to name addresses. Kept, later
        // profiles symbolize in ~0.5 ms instead of re-parsing (10 ms with
        // line tables); but it grows with the binary's debug info. So keep
        // it only while it is small: if warming and symbolizing grew RSS by
        // more than SYMBOL_CACHE_LIMIT_KIB, give it back, on a background
        // thread since freeing it takes milliseconds (docs/performance.md,
        // P3/P4).
        if detail == Detail::Names {
            let growth = resident_before
                .zip(resident_kib())
                .map_or(0, |(before, after)| after.saturating_sub(before));
            if warm_growth.saturating_add(growth) > SYMBOL_CACHE_LIMIT_KIB {
                warm::drop_cache();
            }
        }
        Ok(FinishedProfile {
            profile,
            duration,
            samples: count,
        })
    }
}

/// Burns the calling thread's CPU in a function tests find by name.
#[cfg(test)]
#[inline(never)]
pub(crate) fn spin_in_named_leaf(duration: std::time::Duration) -> u64 {
    let start = Instant::now();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while start.elapsed() < duration {
        for _ in 0..1_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        x = std::hint::black_box(x);
    }
    x
}

/// Tests that start the process-wide sampler take this, one at a time.
#[cfg(test)]
pub(crate) static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`SERIAL`]; a test that panicked while holding it does not stop
/// the others.
#[cfg(test)]
pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::{serial, spin_in_named_leaf};

    /// Each sample's function names, leaf first (inlined functions included),
    /// and its count.
    fn stacks(profile: &Profile) -> Vec<(Vec<String>, i64)> {
        let text = |i: i64| profile.string_table[usize::try_from(i).unwrap()].clone();
        let names_at = |id: u64| -> Vec<String> {
            let loc = profile.location.iter().find(|l| l.id == id).unwrap();
            loc.line
                .iter()
                .map(|line| {
                    let f = profile.function.iter().find(|f| f.id == line.function_id);
                    text(f.unwrap().name)
                })
                .collect()
        };
        profile
            .sample
            .iter()
            .map(|s| {
                let names = s.location_id.iter().flat_map(|id| names_at(*id)).collect();
                (names, s.value[0])
            })
            .collect()
    }

    #[test]
    fn a_busy_named_function_is_at_the_leaf_of_most_samples() {
        let _serial = serial();
        // Cold: a warm-up thread would compete with the spin for the CPU.
        let profile = ActiveProfile::start_cold().unwrap();
        spin_in_named_leaf(std::time::Duration::from_millis(300));
        let finished = profile.finish().unwrap().profile;
        let stacks = stacks(&finished);
        let total: i64 = stacks.iter().map(|(_, n)| n).sum();
        // In unoptimised builds the range iterator it calls is a real frame,
        // so the named function is the leaf or within a few frames of it.
        let near_leaf: i64 = stacks
            .iter()
            .filter(|(names, _)| {
                names
                    .iter()
                    .take(4)
                    .any(|n| n.ends_with("spin_in_named_leaf"))
            })
            .map(|(_, n)| n)
            .sum();
        assert!(
            total >= 10,
            "300 ms at 99 Hz is about 30 samples: {stacks:?}"
        );
        // The sampler sees every thread; other tests (proptest) run beside
        // this one, so compare with this test thread's samples only.
        let this_thread: i64 = stacks
            .iter()
            .filter(|(names, _)| {
                names
                    .iter()
                    .any(|n| n.contains("a_busy_named_function_is_at_the_leaf_of_most_samples"))
            })
            .map(|(_, n)| n)
            .sum();
        assert!(near_leaf * 2 > this_thread, "{stacks:?}");
        for (names, _) in &stacks {
            let leaf = names.first().map_or("", String::as_str);
            assert!(
                !leaf.contains("on_sigprof")
                    && !leaf.contains("backtrace")
                    && !leaf.contains("_Unwind")
                    && !leaf.contains("restore_rt"),
                "a sampler frame is a leaf: {names:?}"
            );
        }
        let on_stacks = stacks.iter().any(|(names, _)| {
            names
                .iter()
                .any(|n| n.contains("a_busy_named_function_is_at_the_leaf_of_most_samples"))
        });
        assert!(on_stacks, "the test function is on the stacks: {stacks:?}");
    }

    /// Burns `cpu` of this thread's CPU time (not wall time: under
    /// contention it takes longer).
    #[inline(never)]
    fn burn_thread_cpu(cpu: std::time::Duration) -> u64 {
        let start = signal::thread_cpu_time();
        let mut x = 0;
        while signal::thread_cpu_time().saturating_sub(start) < cpu {
            x ^= spin_in_named_leaf(std::time::Duration::from_micros(200));
        }
        x
    }

    #[inline(never)]
    fn idle_thread_parked(stop: &std::sync::atomic::AtomicBool) {
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::park_timeout(std::time::Duration::from_millis(50));
        }
    }

    /// Busy processes beside this one, so the machine's CPUs are contended,
    /// as on a loaded build machine or a Lambda sandbox with less than one
    /// vCPU. Killed on drop.
    struct Hogs(Vec<std::process::Child>);

    impl Hogs {
        fn start(n: usize) -> Hogs {
            Hogs(
                (0..n)
                    .map(|_| {
                        std::process::Command::new("sh")
                            .args(["-c", "while :; do :; done"])
                            .spawn()
                            .unwrap()
                    })
                    .collect(),
            )
        }
    }

    impl Drop for Hogs {
        fn drop(&mut self) {
            for child in &mut self.0 {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Profiles `burn_thread_cpu(300 ms)` on this thread beside 4 idle
    /// threads and 3 busy processes; returns the CPU time burned, the
    /// samples it is worth at `FREQUENCY_HZ`, the samples naming the burn
    /// and those naming an idle thread.
    fn profile_a_burn_under_contention() -> (std::time::Duration, i64, i64, i64, String) {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let idle: Vec<_> = (0..4)
            .map(|_| {
                let stop = std::sync::Arc::clone(&stop);
                std::thread::spawn(move || idle_thread_parked(&stop))
            })
            .collect();
        let _hogs = Hogs::start(3);
        let profile = ActiveProfile::start_cold().unwrap();
        // The ticker starts watching this thread within a moment of start.
        std::thread::sleep(std::time::Duration::from_millis(5));
        let burned_from = signal::thread_cpu_time();
        burn_thread_cpu(std::time::Duration::from_millis(300));
        let burned = signal::thread_cpu_time().saturating_sub(burned_from);
        let finished = profile.finish().unwrap().profile;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for thread in idle {
            thread.thread().unpark();
            thread.join().unwrap();
        }
        let stacks = stacks(&finished);
        let count = |name: &str| -> i64 {
            stacks
                .iter()
                .filter(|(names, _)| names.iter().any(|n| n.contains(name)))
                .map(|(_, n)| n)
                .sum()
        };
        let summary = format!(
            "{:?}",
            stacks
                .iter()
                .map(|(names, n)| (names.iter().take(3).collect::<Vec<_>>(), n))
                .collect::<Vec<_>>()
        );
        let expected = i64::try_from(burned.as_millis()).unwrap() * i64::from(FREQUENCY_HZ) / 1000;
        (
            burned,
            expected,
            count("burn_thread_cpu"),
            count("idle_thread_parked"),
            summary,
        )
    }

    /// Samples follow the CPU time of the thread that burns it, also when
    /// the machine is contended and the process has idle threads (tokio's
    /// other workers): every period of its CPU time is counted, once, and
    /// none is handed to an idle thread.
    #[test]
    fn samples_follow_the_busy_thread_under_cpu_contention() {
        let _serial = serial();
        wait_for_warm_ups();
        let (burned, expected, busy, idle, all) = profile_a_burn_under_contention();
        assert!(
            (expected - 1..=expected + 1).contains(&busy),
            "{burned:?} of CPU on this thread is {expected} samples at {FREQUENCY_HZ} Hz; \
             {busy} name it; idle threads got {idle}; all: {all}"
        );
        assert_eq!(idle, 0, "{all}");
    }

    /// The same with the kernel's timers off: the ticker's own signals
    /// alone still count every period (what happens when the kernel sends
    /// none, as it sometimes does under contention).
    #[test]
    fn the_ticker_alone_counts_every_period() {
        let _serial = serial();
        wait_for_warm_ups();
        /// Turns the kernel timers back on even if the profile panics, so
        /// the tests after this one get them.
        struct KernelTimersOff;
        impl Drop for KernelTimersOff {
            fn drop(&mut self) {
                signal::KERNEL_TIMERS.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        signal::KERNEL_TIMERS.store(false, std::sync::atomic::Ordering::SeqCst);
        let timers_off = KernelTimersOff;
        let (burned, expected, busy, _, all) = profile_a_burn_under_contention();
        drop(timers_off);
        assert!(
            (expected - 2..=expected + 1).contains(&busy),
            "{burned:?} of CPU is {expected} samples; the ticker alone gave {busy}: {all}"
        );
    }

    /// A profile another test dropped unfinished may have left its warm-up
    /// thread running (and excluded).
    fn wait_for_warm_ups() {
        while warm::running() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[inline(never)]
    fn spin_on_excluded_thread(duration: std::time::Duration) -> u64 {
        spin_in_named_leaf(duration)
    }

    #[test]
    fn an_excluded_thread_burning_cpu_leaves_no_samples() {
        let _serial = serial();
        wait_for_warm_ups();
        let profile = ActiveProfile::start_cold().unwrap();
        let excluded = std::thread::spawn(|| {
            let _excluded = signal::exclude_current_thread().unwrap();
            spin_on_excluded_thread(std::time::Duration::from_millis(300))
        });
        spin_in_named_leaf(std::time::Duration::from_millis(300));
        excluded.join().unwrap();
        let stacks = stacks(&profile.finish().unwrap().profile);
        let total: i64 = stacks.iter().map(|(_, n)| n).sum();
        assert!(total >= 3, "the other thread is sampled: {stacks:?}");
        assert!(
            !stacks
                .iter()
                .any(|(names, _)| names.iter().any(|n| n.contains("spin_on_excluded_thread"))),
            "{stacks:?}"
        );
    }

    #[test]
    fn the_symbol_warm_up_runs_and_is_not_in_the_profile() {
        let _serial = serial();
        wait_for_warm_ups();
        warm::forget_cache();
        let profile = ActiveProfile::start().unwrap();
        assert!(profile.warm_up.is_some(), "the first profile warms up");
        spin_in_named_leaf(std::time::Duration::from_millis(300));
        let stacks = stacks(&profile.finish().unwrap().profile);
        for (names, _) in &stacks {
            assert!(
                !names.iter().any(|n| n.contains("addr2line")
                    || n.contains("gimli")
                    || n.contains("warm::start")),
                "the warm-up thread was sampled: {names:?}"
            );
        }
        wait_for_warm_ups();
        let again = ActiveProfile::start().unwrap();
        assert!(again.warm_up.is_none(), "only the first profile warms up");
    }

    #[test]
    fn start_while_running_is_busy_and_drop_stops_the_timer() {
        let _serial = serial();
        let first = ActiveProfile::start_cold().unwrap();
        assert!(
            eventually(|| signal::ticker_timers() > 0),
            "the ticker gives the threads their timers"
        );
        assert!(matches!(ActiveProfile::start(), Err(ProfileError::Busy)));
        drop(first);
        assert!(
            eventually(|| signal::ticker_timers() == 0),
            "dropping the profile deletes the timers"
        );
        let again = ActiveProfile::start_cold().unwrap();
        assert!(eventually(|| signal::ticker_timers() > 0));
        drop(again);
        assert!(eventually(|| signal::ticker_timers() == 0));
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
        let sampler = signal::start(FREQUENCY_HZ, 2).unwrap();
        spin_in_named_leaf(std::time::Duration::from_millis(200));
        let samples = sampler.stop();
        assert_eq!(samples.recorded(), 2);
        assert!(samples.dropped() >= 5, "{}", samples.dropped());
        for stack in samples.stacks() {
            assert!(!stack.is_empty() && stack.len() <= signal::MAX_FRAMES);
        }
    }
}
