//! The report: the pprof profile of one invocation, built from what the CPU
//! sampler and, in wall mode, the waker probe collected.
//!
//! In `cpu` mode it counts the sampler's stacks ([`cpu_profile`]). In `wall`
//! mode it puts the probe's exact waits (off-CPU) and the sampler's stacks
//! taken inside the invocation's poll (on-CPU, scaled to the measured polling
//! time) under one root ([`wall_profile`]). The locations come from
//! [`crate::symbolize`].

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use pprof::protos::{Label, Profile, Sample};

use crate::pprof_file::{self, Identity, PprofFile};
use crate::profiler::{FREQUENCY_HZ, StoppedProfile};
use crate::symbolize::{Detail, Tables};
use crate::wall::{self, Charge, Recording, probe};

/// A built profile: its protobuf, how long it ran and how many CPU samples
/// it holds.
pub(crate) struct FinishedProfile {
    pub(crate) profile: Profile,
    pub(crate) duration: Duration,
    pub(crate) samples: i64,
}

/// Symbolizes the samples of `stopped` (and `recording`, in wall mode) into
/// a pprof profile, with locations as `detail` says.
pub(crate) fn build(
    stopped: StoppedProfile,
    detail: Detail,
    recording: Option<&Recording>,
) -> FinishedProfile {
    let StoppedProfile {
        samples,
        duration,
        started_at,
    } = stopped;
    let timing = Timing {
        started: started_at,
        duration,
        hz: FREQUENCY_HZ,
    };
    let count = i64::try_from(samples.stacks().count()).unwrap_or(i64::MAX);
    let profile = match recording {
        Some(recording) => wall_profile(samples.marked_stacks(), recording, timing, detail),
        None => cpu_profile(samples.marked_stacks(), timing, detail),
    };
    drop(samples);
    FinishedProfile {
        profile,
        duration,
        samples: count,
    }
}

/// Builds the profile of `stopped` and encodes it, with `identity` in it,
/// as the file to store; returns it with how long the profile ran. `None`
/// (logged) if building it panicked.
pub(crate) fn build_file(
    stopped: StoppedProfile,
    detail: Detail,
    recording: Option<&Recording>,
    identity: &Identity<'_>,
) -> Option<(PprofFile, Duration)> {
    // Symbolizing runs code we do not control (backtrace-rs over the
    // binary's debug info); a panic there must not become the handler's
    // failure.
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let finished = build(stopped, detail, recording);
        let file = pprof_file::encode(finished.profile, finished.samples, identity);
        (file, finished.duration)
    }));
    if built.is_err() {
        tracing::warn!(request_id = %identity.request_id, "profile dropped: the profiler panicked while building the report; handler result unaffected");
    }
    built.ok()
}

/// What the samples were taken at.
#[derive(Debug, Clone, Copy)]
struct Timing {
    started: SystemTime,
    duration: Duration,
    hz: u32,
}

impl Timing {
    /// `profile` with its start time and duration filled in.
    fn stamp(self, profile: Profile) -> Profile {
        Profile {
            time_nanos: self
                .started
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
            duration_nanos: i64::try_from(self.duration.as_nanos()).unwrap_or(i64::MAX),
            ..profile
        }
    }
}

/// Builds a CPU profile of `stacks` (leaf first: the interrupted PC, then
/// return addresses), each with whether it was taken inside the invocation's
/// future. Locations carry the code address (`return address - 1` for
/// callers, so the line is the call's, not the next statement's) and one
/// line per function inlined at it, innermost first, as pprof expects.
/// Samples taken outside the invocation's future (other threads, other
/// tasks between polls) sit under [`OUTSIDE_ROOT`] with label
/// `state=other`, so they never read as the invocation's own work.
fn cpu_profile<'a>(
    stacks: impl Iterator<Item = (bool, &'a [u64])>,
    timing: Timing,
    detail: Detail,
) -> Profile {
    let mut counts: HashMap<(bool, &[u64]), i64> = HashMap::new();
    for key in stacks {
        *counts.entry(key).or_default() += 1;
    }
    let period = 1_000_000_000 / i64::from(timing.hz.max(1));
    let mut builder = Tables::new(detail);
    let samples_type = builder.value_type("samples", "count");
    let cpu_type = builder.value_type("cpu", "nanoseconds");
    let other = Label {
        key: builder.string("state"),
        str: builder.string("other"),
        ..Label::default()
    };
    let outside = builder.synthetic(OUTSIDE_ROOT);
    let mut samples: Vec<Sample> = Vec::with_capacity(counts.len());
    for ((own, stack), count) in counts {
        let mut location_id = builder.stack(stack, true);
        if !own {
            location_id.push(outside);
        }
        samples.push(Sample {
            location_id,
            value: vec![count, count.saturating_mul(period)],
            label: if own { Vec::new() } else { vec![other.clone()] },
        });
    }
    // Deterministic order: most samples first.
    samples.sort_by(|a, b| {
        b.value
            .cmp(&a.value)
            .then(a.location_id.cmp(&b.location_id))
    });
    timing.stamp(builder.into_profile(Profile {
        sample_type: vec![samples_type, cpu_type.clone()],
        sample: samples,
        period_type: Some(cpu_type),
        period,
        ..Profile::default()
    }))
}

/// The root frame of every stack inside the invocation future.
const INVOCATION_ROOT: &str = "[invocation future]";
/// The root frame of CPU samples taken elsewhere (other tasks and threads).
const OUTSIDE_ROOT: &str = "[outside the invocation future]";

/// Builds a wall-clock profile of one invocation: sample types
/// `wall/nanoseconds` (the default) and `cpu/nanoseconds`, and a `state` label.
///
/// - Off-CPU: one sample per stack the future waited on, wall = the exact
///   time charged to it by the recorder.
/// - On-CPU: the CPU samples taken inside the invocation's poll (cut at its
///   root by the sampler), cpu = samples × period, wall scaled so they add up
///   to the measured polling time. When the sampler saw none of the polls
///   (short polls), the recorder's per-poll charges stand in for them.
/// - Other CPU samples keep their cpu value, with wall 0, under
///   [`OUTSIDE_ROOT`].
fn wall_profile<'a>(
    cpu_stacks: impl Iterator<Item = (bool, &'a [u64])>,
    recording: &Recording,
    timing: Timing,
    detail: Detail,
) -> Profile {
    let mut counts: HashMap<(bool, &[u64]), i64> = HashMap::new();
    for key in cpu_stacks {
        *counts.entry(key).or_default() += 1;
    }
    let mut cpu: Vec<((bool, &[u64]), i64)> = counts.into_iter().collect();
    // Deterministic, and the wall scaling below hands out rounding in order.
    cpu.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let period = 1_000_000_000 / i64::from(timing.hz.max(1));
    let mut builder = Tables::new(detail);
    let wall_type = builder.value_type("wall", "nanoseconds");
    let cpu_type = builder.value_type("cpu", "nanoseconds");
    let state_key = builder.string("state");
    let state = |builder: &mut Tables, value: &str| Label {
        key: state_key,
        str: builder.string(value),
        ..Label::default()
    };
    let inside = builder.synthetic(INVOCATION_ROOT);
    let outside = builder.synthetic(OUTSIDE_ROOT);
    let polling = i64::try_from(recording.totals.polling.as_nanos()).unwrap_or(i64::MAX);
    let sampled_inside: i64 = cpu.iter().filter(|((p, _), _)| *p).map(|(_, n)| n).sum();

    let mut samples: Vec<Sample> = Vec::new();
    let mut wall_left = polling;
    let mut inside_left = sampled_inside;
    for ((in_poll, stack), count) in cpu {
        let mut location_id = builder.stack(stack, true);
        location_id.push(if in_poll { inside } else { outside });
        // Proportional share of the polling time; the last sample takes
        // what rounding left, so the on-CPU wall adds up exactly.
        let wall = if in_poll {
            let share = if inside_left == count {
                wall_left
            } else {
                i64::try_from(
                    i128::from(polling) * i128::from(count) / i128::from(sampled_inside.max(1)),
                )
                .unwrap_or(0)
            };
            inside_left -= count;
            wall_left -= share;
            share
        } else {
            0
        };
        let label = state(&mut builder, if in_poll { "on-cpu" } else { "other" });
        samples.push(Sample {
            location_id,
            value: vec![wall, count.saturating_mul(period)],
            label: vec![label],
        });
    }
    for &(charge, ns) in &recording.charges {
        let (leaf, stack, on_cpu) = match charge {
            Charge::Waiting(id) => (None, recording.stack(id), false),
            Charge::NoRegistration => (Some("[woken without a registration]"), &[][..], false),
            Charge::Unrecorded => (
                Some("[waiting, not recorded: probe budget]"),
                &[][..],
                false,
            ),
            // Stand-ins for CPU samples; only when there are none.
            Charge::ResumedFrom(_) | Charge::Running if sampled_inside > 0 => continue,
            Charge::ResumedFrom(id) => {
                (Some("[on-CPU after this await]"), recording.stack(id), true)
            }
            Charge::Running => (Some("[on-CPU]"), &[][..], true),
        };
        let mut location_id: Vec<u64> = leaf
            .map(|name| builder.synthetic(name))
            .into_iter()
            .collect();
        location_id.extend(builder.stack(stack, false));
        location_id.push(inside);
        let label = state(&mut builder, if on_cpu { "on-cpu" } else { "off-cpu" });
        samples.push(Sample {
            location_id,
            value: vec![i64::try_from(ns).unwrap_or(i64::MAX), 0],
            label: vec![label],
        });
    }

    let totals = &recording.totals;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let comments = [
        format!(
            "wall: elapsed={:.3}ms polling={:.3}ms pending={:.3}ms polls={}",
            ms(recording.elapsed),
            ms(totals.polling),
            ms(totals.pending),
            totals.polls
        ),
        format!(
            "cpu: {sampled_inside} samples at {} Hz inside the invocation future, scaled to the polling time",
            timing.hz
        ),
        if totals.recorded_polls < totals.polls {
            format!(
                "probe: recorded {} of {} polls (the probe cost {:.3}ms as its budget counts it, recording {:.3}ms); past {} polls it records a poll only while its cost stays under {}% of the elapsed time, and not within {}µs of the previous poll; the {:.3}ms of waits after the others are under [waiting, not recorded: probe budget]",
                totals.recorded_polls,
                totals.polls,
                ms(totals.probe_cost()),
                ms(totals.recording),
                wall::FREE_RECORDINGS,
                wall::PROBE_BUDGET_PERCENT,
                wall::DENSE_POLLS.as_micros(),
                ms(totals.unrecorded)
            )
        } else {
            format!(
                "probe: recorded {} of {} polls (the probe cost {:.3}ms as its budget counts it, recording {:.3}ms)",
                totals.recorded_polls,
                totals.polls,
                ms(totals.probe_cost()),
                ms(totals.recording)
            )
        },
        format!(
            "probe: {} stale registrations discarded, {} stacks deeper than {} frames",
            totals.stale,
            totals.truncated,
            probe::MAX_FRAMES
        ),
        if probe::frame_pointers() || totals.fp_fallbacks > 0 {
            format!(
                "probe: unwinder=frame pointers, {} captures fell back to DWARF",
                totals.fp_fallbacks
            )
        } else {
            "probe: unwinder=DWARF".to_owned()
        },
    ];
    let comment = comments.iter().map(|c| builder.string(c)).collect();
    let default_sample_type = wall_type.ty;
    timing.stamp(builder.into_profile(Profile {
        sample_type: vec![wall_type.clone(), cpu_type],
        sample: samples,
        period_type: Some(wall_type),
        period: 1,
        comment,
        default_sample_type,
        ..Profile::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiler::{ActiveProfile, FREQUENCY_HZ};
    use crate::sampler;
    use crate::test_support::{burn_thread_cpu, serial, spin_in_named_leaf};
    use crate::wall::tests::{record_for, waits_on_a_timer};

    /// Stops `profile` and builds its CPU profile with names.
    fn finish(profile: ActiveProfile) -> Profile {
        build(profile.stop(), Detail::Names, None).profile
    }

    /// Each sample's function names, leaf first (inlined functions included),
    /// and its count.
    fn stacks(profile: &Profile) -> Vec<(Vec<String>, i64)> {
        profile
            .sample
            .iter()
            .map(|s| (names(profile, s), s.value[0]))
            .collect()
    }

    /// The function names of `sample`, leaf first (inlined functions
    /// included).
    fn names(profile: &Profile, sample: &Sample) -> Vec<String> {
        let text = |i: i64| profile.string_table[usize::try_from(i).unwrap()].clone();
        sample
            .location_id
            .iter()
            .flat_map(|id| {
                let loc = profile.location.iter().find(|l| l.id == *id).unwrap();
                loc.line.iter().map(|line| {
                    let f = profile.function.iter().find(|f| f.id == line.function_id);
                    text(f.unwrap().name)
                })
            })
            .collect()
    }

    #[test]
    fn a_busy_named_function_is_at_the_leaf_of_most_samples() {
        let _serial = serial();
        // Cold: a warm-up thread would compete with the spin for the CPU.
        let profile = ActiveProfile::start().unwrap();
        // Thread CPU time, not wall time: on a loaded machine a wall-bounded
        // spin gets too little CPU for the per-thread CPU timer to fire.
        burn_thread_cpu(std::time::Duration::from_millis(300));
        let finished = finish(profile);
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

    /// Burns `cpu` of this thread's CPU time as invocation A's work.
    #[inline(never)]
    fn work_of_invocation_a(cpu: std::time::Duration) -> u64 {
        std::hint::black_box(burn_thread_cpu(cpu))
    }

    /// Burns `cpu` of this thread's CPU time as invocation B's work.
    #[inline(never)]
    fn work_of_invocation_b(cpu: std::time::Duration) -> u64 {
        std::hint::black_box(burn_thread_cpu(cpu))
    }

    /// Samples of `profile` whose stack names `function`, split into its own
    /// (no label) and `state=other` ones.
    fn own_and_other(profile: &Profile, function: &str) -> (i64, i64) {
        let mut counts = (0, 0);
        for sample in &profile.sample {
            if !names(profile, sample).iter().any(|n| n.contains(function)) {
                continue;
            }
            if sample.label.is_empty() {
                counts.0 += sample.value[0];
            } else {
                counts.1 += sample.value[0];
            }
        }
        counts
    }

    #[test]
    fn concurrent_profiles_each_keep_only_their_own_invocations_samples() {
        let _serial = serial();
        let a = ActiveProfile::start().unwrap();
        let b = ActiveProfile::start().unwrap();
        let as_invocation = |invocation: u64, work: fn(std::time::Duration) -> u64| {
            std::thread::spawn(move || {
                let outer = sampler::set_poll_mark(sampler::PollMark {
                    root: 0,
                    invocation,
                });
                let x = work(std::time::Duration::from_millis(400));
                sampler::set_poll_mark(outer);
                x
            })
        };
        let on_a = as_invocation(a.invocation(), work_of_invocation_a);
        let on_b = as_invocation(b.invocation(), work_of_invocation_b);
        assert!(on_a.join().is_ok() && on_b.join().is_ok());
        let (a, b) = (finish(a), finish(b));
        for (profile, own, foreign) in [
            (&a, "work_of_invocation_a", "work_of_invocation_b"),
            (&b, "work_of_invocation_b", "work_of_invocation_a"),
        ] {
            let (mine, mine_as_other) = own_and_other(profile, own);
            let (theirs, theirs_as_other) = own_and_other(profile, foreign);
            assert!(
                mine >= 10,
                "{own}: 400 ms of CPU at 99 Hz, ~40 samples: {mine}"
            );
            assert_eq!(
                (mine_as_other, theirs, theirs_as_other),
                (0, 0, 0),
                "{own}'s profile holds only its own invocation's samples"
            );
        }
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
        let profile = ActiveProfile::start().unwrap();
        // The ticker starts watching this thread within a moment of start.
        std::thread::sleep(std::time::Duration::from_millis(5));
        let burned_from = sampler::thread_cpu_time();
        burn_thread_cpu(std::time::Duration::from_millis(300));
        let burned = sampler::thread_cpu_time().saturating_sub(burned_from);
        let finished = finish(profile);
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
        /// Turns the kernel timers back on even if the profile panics, so
        /// the tests after this one get them.
        struct KernelTimersOff;
        impl Drop for KernelTimersOff {
            fn drop(&mut self) {
                sampler::KERNEL_TIMERS.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        sampler::KERNEL_TIMERS.store(false, std::sync::atomic::Ordering::SeqCst);
        let timers_off = KernelTimersOff;
        let (burned, expected, busy, _, all) = profile_a_burn_under_contention();
        drop(timers_off);
        assert!(
            (expected - 2..=expected + 1).contains(&busy),
            "{burned:?} of CPU is {expected} samples; the ticker alone gave {busy}: {all}"
        );
    }

    #[test]
    fn the_probe_unwinds_beside_the_sampler_and_restores_the_signal_mask() {
        let _serial = serial();
        let profile = ActiveProfile::start().unwrap();
        let (output, recording) = record_for(profile.invocation(), async {
            let mut x = 0_u64;
            // Many registering polls with CPU work between them, at 99 Hz
            // of SIGPROF: captures and signal handlers interleave.
            for i in 0..3_000_u64 {
                tokio::task::yield_now().await;
                for _ in 0..2_000 {
                    x = std::hint::black_box(
                        x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i),
                    );
                }
            }
            x
        });
        assert!(output.is_ok());
        let finished = build(profile.stop(), Detail::Names, Some(&recording));
        assert!(
            recording.totals.recorded_polls > 0,
            "{:?}",
            recording.totals
        );
        assert!(!finished.profile.sample.is_empty());
        // The mask is back to what it was: SIGPROF is not left blocked.
        // SAFETY: querying this thread's signal mask into a zeroed set.
        #[allow(unsafe_code)]
        let blocked = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut set);
            libc::sigismember(&set, libc::SIGPROF)
        };
        assert_eq!(blocked, 0, "SIGPROF is unblocked after the probe's unwinds");
    }

    #[inline(never)]
    async fn sleepy_then_busy() -> u64 {
        waits_on_a_timer(300).await;
        spin_in_named_leaf(Duration::from_millis(150))
    }

    /// `(names from root to leaf, wall, cpu, state)` of every sample.
    fn samples(profile: &Profile) -> Vec<(Vec<String>, i64, i64, String)> {
        let text = |i: i64| profile.string_table[usize::try_from(i).unwrap()].clone();
        profile
            .sample
            .iter()
            .map(|s| {
                let mut names = names(profile, s);
                names.reverse();
                let state = s
                    .label
                    .iter()
                    .find(|l| text(l.key) == "state")
                    .map(|l| text(l.str));
                (names, s.value[0], s.value[1], state.unwrap_or_default())
            })
            .collect()
    }

    #[test]
    fn the_wall_profile_shows_the_await_and_the_cpu_work_under_the_invocation() {
        let _serial = serial();
        let profile = ActiveProfile::start().unwrap();
        let (output, recording) = record_for(profile.invocation(), sleepy_then_busy());
        assert!(output.is_ok());
        let profile = build(profile.stop(), Detail::Names, Some(&recording)).profile;
        let text = |i: i64| profile.string_table[usize::try_from(i).unwrap()].as_str();
        let types: Vec<(&str, &str)> = profile
            .sample_type
            .iter()
            .map(|t| (text(t.ty), text(t.unit)))
            .collect();
        assert_eq!(types, [("wall", "nanoseconds"), ("cpu", "nanoseconds")]);
        assert_eq!(text(profile.default_sample_type), "wall");

        let samples = samples(&profile);
        let total_wall: i64 = samples.iter().map(|s| s.1).sum();
        let elapsed = i64::try_from(recording.elapsed.as_nanos()).unwrap();
        assert!(
            (total_wall - elapsed).abs() * 50 < elapsed,
            "wall {total_wall} vs elapsed {elapsed}"
        );
        let under = |name: &str, state: &str| -> i64 {
            samples
                .iter()
                .filter(|(names, _, _, s)| s == state && names.iter().any(|n| n.contains(name)))
                .map(|s| s.1)
                .sum()
        };
        let waited = under("waits_on_a_timer", "off-cpu");
        let spun = under("spin_in_named_leaf", "on-cpu");
        assert!(
            waited * 100 >= total_wall * 55,
            "the 300 ms await: {waited} of {total_wall}: {samples:#?}"
        );
        assert!(
            spun * 100 >= total_wall * 25,
            "the 150 ms spin: {spun} of {total_wall}: {samples:#?}"
        );
        for (names, wall, _, state) in &samples {
            if state == "other" {
                assert_eq!(*wall, 0);
                assert_eq!(names[0], "[outside the invocation future]");
            } else {
                assert_eq!(names[0], "[invocation future]", "{names:?}");
                assert!(
                    names.iter().any(|n| n.contains("sleepy_then_busy")),
                    "the user's async fn is on the path: {names:?}"
                );
            }
        }
        for (names, ..) in samples.iter().filter(|s| s.3 != "other") {
            let poll_names = names.iter().filter(|n| n.ends_with("::poll"));
            for name in poll_names {
                assert!(
                    !name.starts_with('<'),
                    "`<X as Future>::poll` is rewritten: {names:?}"
                );
            }
        }
    }
}
