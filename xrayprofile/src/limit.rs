//! The per-execution-environment cap on profiles: a token bucket.
//!
//! The sampling decision comes from the trace ID, and API Gateway and ALB
//! accept `X-Amzn-Trace-Id` from clients, so a caller can send roots ending
//! in `0000` and be sampled every time. Each profile costs the invocation its
//! upload latency and the account an S3 object, so without a cap a caller
//! could make every one of its requests slower and fill the bucket. The cap
//! bounds that: at most `max_per_minute` profiles per minute per execution
//! environment (one process), with bursts of up to `max_per_minute`.
//!
//! The bucket is process-wide because the profiler and its cost are. If two
//! annotated handlers in one binary name different caps, each invocation
//! refills and takes with its own handler's cap; one cap per function (the
//! usual case, and what `XRAYPROFILE_MAX_PER_MINUTE` sets) is exact.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often, at most, the cap's warning is logged.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The one bucket of this process.
static PROFILES: TokenBucket = TokenBucket::new();

/// Takes one profile's token from the process's bucket; `false` means the cap
/// is reached and the invocation must run unprofiled. Logs one warning when
/// the cap first bites and at most one a minute after that, with the number
/// of invocations it kept unprofiled since the previous warning.
pub(crate) fn admit(max_per_minute: NonZeroU32, request_id: &str) -> bool {
    match PROFILES.take(max_per_minute, Instant::now()) {
        Admission::Admitted => true,
        Admission::Denied { log: None } => {
            tracing::debug!(
                request_id,
                max_per_minute,
                "not profiled: the profile cap is reached"
            );
            false
        }
        Admission::Denied {
            log: Some(unprofiled),
        } => {
            tracing::warn!(
                request_id,
                max_per_minute,
                unprofiled,
                "not profiled: this execution environment reached its cap of {max_per_minute} profiles a minute, {unprofiled} sampled invocation(s) ran unprofiled since the last warning (logged at most once a minute); callers may be forcing sampling with trace IDs ending in `0000`; if this traffic is yours raise XRAYPROFILE_MAX_PER_MINUTE (`0` removes the cap)"
            );
            false
        }
    }
}

/// What [`TokenBucket::take`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// A token was taken: profile this invocation.
    Admitted,
    /// No token: run unprofiled. `log` is `Some(n)` when a warning is due,
    /// `n` being the denials since the previous warning, this one included.
    Denied { log: Option<u64> },
}

/// A token bucket refilled continuously at `max_per_minute` tokens a minute
/// and holding at most `max_per_minute`. It starts full, so a fresh execution
/// environment can profile its first burst at once.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Tokens in units of 1/60,000,000,000 of a token: refilling at `n` tokens
    /// a minute then adds exactly `n` units a nanosecond, so no float and no
    /// rounding drift.
    units: u128,
    /// When `units` was last brought up to date; `None` before the first call.
    refilled: Option<Instant>,
    /// Denials not yet reported in a warning.
    unreported: u64,
    /// When the last warning was logged.
    logged: Option<Instant>,
}

/// Units per token: nanoseconds per minute.
const UNITS_PER_TOKEN: u128 = 60_000_000_000;

impl TokenBucket {
    /// An empty-state bucket; it fills to capacity on first use.
    pub(crate) const fn new() -> TokenBucket {
        TokenBucket {
            state: Mutex::new(State {
                units: 0,
                refilled: None,
                unreported: 0,
                logged: None,
            }),
        }
    }

    /// Takes a token at time `now` if one is available.
    pub(crate) fn take(&self, max_per_minute: NonZeroU32, now: Instant) -> Admission {
        // A poisoned lock means a panic elsewhere while holding it; nothing in
        // here panics, but if it ever happened, profiling nothing is the safe side.
        let Ok(mut state) = self.state.lock() else {
            return Admission::Denied { log: None };
        };
        let rate = u128::from(max_per_minute.get());
        let capacity = rate.saturating_mul(UNITS_PER_TOKEN);
        state.units = match state.refilled {
            None => capacity,
            Some(then) => {
                let elapsed = now.saturating_duration_since(then).as_nanos();
                state
                    .units
                    .saturating_add(elapsed.saturating_mul(rate))
                    .min(capacity)
            }
        };
        state.refilled = Some(now);
        if state.units >= UNITS_PER_TOKEN {
            state.units -= UNITS_PER_TOKEN;
            return Admission::Admitted;
        }
        state.unreported = state.unreported.saturating_add(1);
        let due = state
            .logged
            .is_none_or(|logged| now.saturating_duration_since(logged) >= LOG_EVERY);
        if !due {
            return Admission::Denied { log: None };
        }
        state.logged = Some(now);
        let unreported = std::mem::take(&mut state.unreported);
        Admission::Denied {
            log: Some(unreported),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    fn admitted(bucket: &TokenBucket, n: u32, calls: usize, now: Instant) -> usize {
        (0..calls)
            .filter(|_| bucket.take(cap(n), now) == Admission::Admitted)
            .count()
    }

    #[test]
    fn a_fresh_bucket_admits_a_burst_of_the_cap_then_denies() {
        let bucket = TokenBucket::new();
        let t0 = Instant::now();
        assert_eq!(admitted(&bucket, 10, 1_000, t0), 10);
    }

    #[test]
    fn refills_at_the_cap_per_minute() {
        let bucket = TokenBucket::new();
        let t0 = Instant::now();
        assert_eq!(admitted(&bucket, 10, 100, t0), 10);
        // 6 s is one tenth of a minute: one token.
        assert_eq!(admitted(&bucket, 10, 100, t0 + Duration::from_secs(6)), 1);
        // 5.999 s later: not yet a whole token.
        assert_eq!(
            admitted(&bucket, 10, 100, t0 + Duration::from_millis(11_999)),
            0
        );
        assert_eq!(admitted(&bucket, 10, 100, t0 + Duration::from_secs(12)), 1);
        // A long idle spell refills to the cap, not beyond.
        assert_eq!(
            admitted(&bucket, 10, 100, t0 + Duration::from_secs(3_600)),
            10
        );
    }

    #[test]
    fn over_ten_minutes_of_abuse_at_most_cap_plus_rate_times_time() {
        let bucket = TokenBucket::new();
        let t0 = Instant::now();
        // 100 forced invocations a second for 10 minutes.
        let admitted_total = (0..60_000u64)
            .filter(|i| {
                let now = t0 + Duration::from_millis(i * 10);
                bucket.take(cap(10), now) == Admission::Admitted
            })
            .count();
        // 10 at once, then 10 a minute for the ~10 minutes.
        assert!((100..=110).contains(&admitted_total), "{admitted_total}");
    }

    #[test]
    fn the_warning_is_due_on_the_first_denial_then_once_a_minute_with_the_count() {
        let bucket = TokenBucket::new();
        let t0 = Instant::now();
        assert_eq!(bucket.take(cap(1), t0), Admission::Admitted);
        assert_eq!(bucket.take(cap(1), t0), Admission::Denied { log: Some(1) });
        for _ in 0..5 {
            assert_eq!(bucket.take(cap(1), t0), Admission::Denied { log: None });
        }
        // 59 s later: the token is not back and no warning is due.
        let t59 = t0 + Duration::from_secs(59);
        assert_eq!(bucket.take(cap(1), t59), Admission::Denied { log: None });
        // 60 s after the warning the token is back; the next denial warns
        // with every denial since the last warning.
        let t60 = t0 + Duration::from_secs(60);
        assert_eq!(bucket.take(cap(1), t60), Admission::Admitted);
        assert_eq!(bucket.take(cap(1), t60), Admission::Denied { log: Some(7) });
    }

    #[test]
    fn a_clock_that_goes_backwards_adds_nothing_and_does_not_panic() {
        let bucket = TokenBucket::new();
        let t1 = Instant::now() + Duration::from_secs(10);
        assert_eq!(admitted(&bucket, 2, 10, t1), 2);
        assert_eq!(admitted(&bucket, 2, 10, t1 - Duration::from_secs(10)), 0);
    }

    #[test]
    fn the_largest_cap_does_not_overflow() {
        let bucket = TokenBucket::new();
        let t0 = Instant::now();
        assert_eq!(admitted(&bucket, u32::MAX, 1_000, t0), 1_000);
        let later = t0 + Duration::from_secs(u64::from(u32::MAX));
        assert_eq!(admitted(&bucket, u32::MAX, 1_000, later), 1_000);
    }
}
