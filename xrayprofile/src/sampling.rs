//! The sampling decision: pure code, no I/O, no clock, no environment.

use crate::trace::TraceRoot;

/// Profile an invocation when its trace root's sample key is at most this.
///
/// `0` profiles one invocation in 65,536 (key `0000`), `655` about 1 %,
/// `6553` about 10 % and `65535` every invocation: the same scale as
/// go-xrayprofile, so Go and Rust functions on one trace decide alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Threshold(pub(crate) u16);

/// The outcome of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The trace's key is within the threshold.
    Profile,
    /// The trace's key is above the threshold.
    Skip,
}

/// Decides whether the invocation on this trace is profiled.
pub(crate) fn decide(root: &TraceRoot, threshold: Threshold) -> Decision {
    if root.sample_key() <= threshold.0 {
        Decision::Profile
    } else {
        Decision::Skip
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with_key(key: u16) -> TraceRoot {
        TraceRoot::parse(&format!("1-5759e988-bd862e3fe1be46a99427{key:04x}")).unwrap()
    }

    #[test]
    fn boundaries() {
        let cases = [
            (0, 0x0000, Decision::Profile),
            (0, 0x0001, Decision::Skip),
            (655, 654, Decision::Profile),
            (655, 655, Decision::Profile),
            (655, 656, Decision::Skip),
            (6553, 0x1999, Decision::Profile),
            (6553, 0x199a, Decision::Skip),
            (65535, 0xffff, Decision::Profile),
            (65535, 0x0000, Decision::Profile),
            (65534, 0xffff, Decision::Skip),
        ];
        for (threshold, key, expected) in cases {
            assert_eq!(
                decide(&root_with_key(key), Threshold(threshold)),
                expected,
                "threshold {threshold}, key {key:#06x}"
            );
        }
    }

    #[test]
    fn rate_matches_the_threshold() {
        // Every key once: exactly threshold + 1 of 65,536 are profiled.
        let profiled = (0..=u16::MAX)
            .filter(|key| decide(&root_with_key(*key), Threshold(655)) == Decision::Profile)
            .count();
        assert_eq!(profiled, 656);
    }
}
