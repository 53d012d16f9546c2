//! Whether an invocation's deadline, as the Runtime API sent it, can be real.
//!
//! Lambda sends each invocation's deadline (`Lambda-Runtime-Deadline-Ms`, and
//! `deadlineMs` in the extension's INVOKE event) as milliseconds since the
//! Unix epoch, at most 15 minutes after the invocation starts. Emulators do
//! not all follow: `cargo lambda watch` sends `600000` for every invocation
//! (ten minutes after 1970), and others may send zero. Taken at its word,
//! such a deadline has passed before the handler runs, and every profile
//! would be dropped "to meet the deadline". A deadline that cannot be real is
//! therefore treated as unknown: the upload budget falls back to its cap and
//! the extension keeps the environment awake for as long as uploads run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Lambda's longest function timeout.
const MAX_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Allowed beyond [`MAX_TIMEOUT`] for an emulator whose timeout is set a
/// little higher; a deadline further away than both is not Lambda's.
const SLACK: Duration = Duration::from_secs(60);

/// Why a deadline cannot be real.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Implausible {
    /// The Runtime API sent zero (or no deadline at all).
    Zero,
    /// It had passed when the invocation started.
    BeforeStart,
    /// It is further away than any Lambda timeout.
    TooFar,
}

impl Implausible {
    fn reason(self) -> &'static str {
        match self {
            Implausible::Zero => "it is zero",
            Implausible::BeforeStart => "it had passed before the invocation started",
            Implausible::TooFar => "it is further away than Lambda's 15-minute limit",
        }
    }
}

/// The deadline `deadline_ms` (milliseconds since the Unix epoch) of an
/// invocation that started at `started`, or why it cannot be real.
fn judge(deadline_ms: u64, started: SystemTime) -> Result<SystemTime, Implausible> {
    if deadline_ms == 0 {
        return Err(Implausible::Zero);
    }
    let deadline = UNIX_EPOCH
        .checked_add(Duration::from_millis(deadline_ms))
        .ok_or(Implausible::TooFar)?;
    match deadline.duration_since(started) {
        Err(_) => Err(Implausible::BeforeStart),
        Ok(left) if left.is_zero() => Err(Implausible::BeforeStart),
        Ok(left) if left > MAX_TIMEOUT + SLACK => Err(Implausible::TooFar),
        Ok(_) => Ok(deadline),
    }
}

/// The deadline the Runtime API sent as `deadline_ms` for an invocation that
/// started at `started` (now, when it is received), or `None` when it cannot
/// be real and is to be treated as unknown. The first such deadline is
/// logged at debug level; later ones are not, since an emulator sends one
/// with every invocation.
pub(crate) fn plausible(deadline_ms: u64, started: SystemTime) -> Option<SystemTime> {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    match judge(deadline_ms, started) {
        Ok(deadline) => Some(deadline),
        Err(why) => {
            if !LOGGED.swap(true, Ordering::Relaxed) {
                tracing::debug!(
                    deadline_ms,
                    "the invocation deadline is treated as unknown because {}, as Runtime API emulators such as `cargo lambda watch` send; uploads get their full budget (this is logged once)",
                    why.reason()
                );
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(time: SystemTime) -> u64 {
        u64::try_from(time.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
    }

    #[test]
    fn a_deadline_within_lambdas_timeouts_is_kept() {
        let started = SystemTime::now();
        for left in [
            Duration::from_millis(1),
            Duration::from_secs(3),
            MAX_TIMEOUT,
        ] {
            let deadline_ms = ms(started + left);
            assert_eq!(
                judge(deadline_ms, started),
                Ok(UNIX_EPOCH + Duration::from_millis(deadline_ms)),
                "{left:?}"
            );
        }
    }

    #[test]
    fn cargo_lambdas_constant_is_before_the_start() {
        // `cargo lambda watch` sends 600000 with every invocation.
        assert_eq!(
            judge(600_000, SystemTime::now()),
            Err(Implausible::BeforeStart)
        );
        assert_eq!(plausible(600_000, SystemTime::now()), None);
    }

    #[test]
    fn zero_is_unknown() {
        assert_eq!(judge(0, SystemTime::now()), Err(Implausible::Zero));
        assert_eq!(plausible(0, SystemTime::now()), None);
    }

    #[test]
    fn a_deadline_at_or_before_the_start_is_unknown() {
        let started = SystemTime::now();
        let at = ms(started);
        let started = UNIX_EPOCH + Duration::from_millis(at);
        assert_eq!(judge(at, started), Err(Implausible::BeforeStart));
        assert_eq!(judge(at - 1, started), Err(Implausible::BeforeStart));
    }

    #[test]
    fn a_deadline_beyond_any_lambda_timeout_is_unknown() {
        let started = SystemTime::now();
        assert_eq!(
            judge(
                ms(started + MAX_TIMEOUT + SLACK + Duration::from_secs(1)),
                started
            ),
            Err(Implausible::TooFar)
        );
        assert_eq!(judge(u64::MAX, started), Err(Implausible::TooFar));
    }

    #[test]
    fn plausible_returns_the_real_deadline() {
        let started = SystemTime::now();
        let deadline_ms = ms(started + Duration::from_secs(30));
        assert_eq!(
            plausible(deadline_ms, started),
            Some(UNIX_EPOCH + Duration::from_millis(deadline_ms))
        );
    }
}
