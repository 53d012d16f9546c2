//! The rules that `#[xrayprofile(...)]` checks at compile time and the
//! `xrayprofile` runtime checks on environment values and `ProfileLayer`
//! settings, written once so that a value gets the same verdict in both
//! places: the argument names, the S3 bucket and key-prefix rules, the
//! `sample_rate` formula and the `mode` names.
//!
//! Each check returns what is wrong as a phrase that reads after "it"
//! (`"must be 3 to 63 characters long"`), so each caller can put it in a
//! sentence that names the setting and the fix.
//!
//! An internal crate of `xrayprofile`: depend on `xrayprofile` instead.

#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

/// Every argument of `#[xrayprofile(...)]`, in the order the documentation
/// lists them.
pub const ARGUMENTS: [&str; 7] = [
    "threshold",
    "sample_rate",
    "bucket",
    "prefix",
    "max_per_minute",
    "mode",
    "symbolize",
];

/// The most bytes a key prefix may have: S3 keys are limited to 1,024
/// bytes, and the rest of the key (trace root, request ID) needs about 80.
pub const MAX_PREFIX_LEN: usize = 512;

/// What a profile measures, as named by `mode = "..."` and `XRAYPROFILE_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `"wall"`: where the invocation's time went, awaits included.
    Wall,
    /// `"cpu"`: CPU time only.
    Cpu,
}

/// Every mode name with its mode.
pub const MODES: [(&str, Mode); 2] = [("wall", Mode::Wall), ("cpu", Mode::Cpu)];

/// The mode `value` names, ignoring case and surrounding whitespace;
/// `None` if it names none.
pub fn mode(value: &str) -> Option<Mode> {
    let value = value.trim();
    MODES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(value))
        .map(|&(_, mode)| mode)
}

/// The threshold that profiles the share `rate` of invocations,
/// `ceil(rate × 65536) − 1` (0.01 → 655, 0.1 → 6553, 1.0 → 65535); `None`
/// unless `0.0 < rate <= 1.0`.
pub fn threshold_from_rate(rate: f64) -> Option<u16> {
    if !(rate > 0.0 && rate <= 1.0) {
        return None;
    }
    // In 0..=65535 by the check above: `as` cannot saturate here.
    u16::try_from((rate * 65536.0).ceil() as i64 - 1).ok()
}

/// Which S3 bucket naming rule `name` breaks, if any.
pub fn bucket_problem(name: &str) -> Option<&'static str> {
    let bytes = name.as_bytes();
    let alnum = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    if !(3..=63).contains(&bytes.len()) {
        Some("must be 3 to 63 characters long")
    } else if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
    {
        Some("may contain only lower-case letters, digits, `.` and `-`")
    } else if !alnum(bytes.first()) || !alnum(bytes.last()) {
        Some("must start and end with a letter or digit")
    } else if name.contains("..") {
        Some("must not contain two adjacent periods")
    } else if name.parse::<std::net::Ipv4Addr>().is_ok() {
        Some("must not be formatted as an IP address")
    } else {
        None
    }
}

/// Why `prefix` cannot start an object key, if it cannot.
pub fn prefix_problem(prefix: &str) -> Option<&'static str> {
    if prefix.len() > MAX_PREFIX_LEN {
        Some("is longer than 512 bytes")
    } else if prefix.starts_with('/') {
        Some("starts with `/`; S3 keys have no leading slash")
    } else if prefix.split('/').any(|s| s == ".." || s == ".") {
        Some("has a `.` or `..` segment")
    } else if prefix.chars().any(char::is_control) {
        Some("contains a control character")
    } else if prefix.trim() != prefix {
        Some("has leading or trailing whitespace")
    } else {
        None
    }
}

/// The bucket profiles go to when none is named:
/// `xrayprofile-{account}-{region}`. The command line reading them builds the
/// same name for the caller's account.
pub fn default_bucket(account: &str, region: &str) -> String {
    format!("xrayprofile-{account}-{region}")
}

/// The slash that goes between `prefix` and the trace root in an object key:
/// none after an empty prefix or one that already ends in `/`, else `"/"`
/// (`prefix = "p"` and `prefix = "p/"` name the same keys).
pub fn prefix_separator(prefix: &str) -> &'static str {
    if prefix.is_empty() || prefix.ends_with('/') {
        ""
    } else {
        "/"
    }
}

/// A function name as profiles carry it: `<X as Trait>::method` →
/// `X::method`. The library writes names this way and the command line
/// symbolizes to the same names; `go tool pprof` shortens names by
/// dropping everything between `<` and `>`, which would merge every
/// `<X as Future>::poll` into one `::poll`.
pub fn readable_name(name: &str) -> std::borrow::Cow<'_, str> {
    let Some(rest) = name.strip_prefix('<') else {
        return name.into();
    };
    // Find the ` as ` and the `>` that close the outermost `<`.
    let mut depth = 0_usize;
    let mut as_at = None;
    let mut previous = ' ';
    for (i, c) in rest.char_indices() {
        let arrow = previous == '-';
        previous = c;
        match c {
            '<' => depth += 1,
            // `fn() -> T` inside the self type.
            '>' if arrow => {}
            '>' if depth == 0 => {
                let Some(tail) = rest.get(i + 1..) else {
                    break;
                };
                return match (as_at, rest.get(..as_at.unwrap_or(0))) {
                    (Some(_), Some(self_ty)) if tail.starts_with("::") => {
                        format!("{self_ty}{tail}").into()
                    }
                    _ => name.into(),
                };
            }
            '>' => depth -= 1,
            ' ' if depth == 0
                && as_at.is_none()
                && rest.get(i..).is_some_and(|t| t.starts_with(" as ")) =>
            {
                as_at = Some(i);
            }
            _ => {}
        }
    }
    name.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_prefix_and_default_bucket() {
        assert_eq!(prefix_separator(""), "");
        assert_eq!(prefix_separator("p/"), "");
        assert_eq!(prefix_separator("team/p"), "/");
        assert_eq!(
            default_bucket("123456789012", "eu-west-1"),
            "xrayprofile-123456789012-eu-west-1"
        );
    }

    #[test]
    fn sample_rate_formula() {
        assert_eq!(threshold_from_rate(0.01), Some(655));
        assert_eq!(threshold_from_rate(0.1), Some(6553));
        assert_eq!(threshold_from_rate(0.5), Some(32767));
        assert_eq!(threshold_from_rate(1.0), Some(65535));
        assert_eq!(threshold_from_rate(1e-9), Some(0));
        for bad in [0.0, -0.5, 1.0001, f64::NAN, f64::INFINITY] {
            assert_eq!(threshold_from_rate(bad), None, "{bad}");
        }
    }

    #[test]
    fn bucket_rules() {
        for ok in ["abc", "my-profiles", "a.b.c", "0123456789", &"a".repeat(63)] {
            assert_eq!(bucket_problem(ok), None, "{ok:?}");
        }
        let bad = [
            ("ab", "3 to 63"),
            (&"a".repeat(64), "3 to 63"),
            ("My-Bucket", "lower-case"),
            ("my_bucket", "lower-case"),
            ("-abc", "start and end"),
            ("abc.", "start and end"),
            ("a..b", "adjacent periods"),
            ("192.168.1.1", "IP address"),
        ];
        for (name, rule) in bad {
            let problem = bucket_problem(name).unwrap_or_default();
            assert!(problem.contains(rule), "{name:?}: {problem:?}");
        }
    }

    #[test]
    fn prefix_rules() {
        for ok in ["", "profiles", "profiles/", "team/service", "a b/c"] {
            assert_eq!(prefix_problem(ok), None, "{ok:?}");
        }
        for bad in [
            "/abs",
            "a/../b",
            "..",
            "a\nb",
            "team ",
            " team",
            &"p".repeat(513),
        ] {
            assert!(prefix_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn mode_names() {
        assert_eq!(mode("wall"), Some(Mode::Wall));
        assert_eq!(mode(" CPU "), Some(Mode::Cpu));
        assert_eq!(mode("fast"), None);
        assert_eq!(mode(""), None);
    }

    #[test]
    fn trait_impl_names_keep_their_self_type() {
        for (name, want) in [
            (
                "<tokio::time::sleep::Sleep as core::future::future::Future>::poll",
                "tokio::time::sleep::Sleep::poll",
            ),
            (
                "<core::pin::Pin<P> as core::future::future::Future>::poll",
                "core::pin::Pin<P>::poll",
            ),
            (
                "<fn() -> u8 as core::ops::function::FnOnce<()>>::call_once",
                "fn() -> u8::call_once",
            ),
            ("<&T as core::fmt::Debug>::fmt", "&T::fmt"),
            ("demo::handler::{{closure}}", "demo::handler::{{closure}}"),
            ("<T>::method", "<T>::method"),
            ("<unbalanced", "<unbalanced"),
            (
                "<demo::Job as core::future::Future>::poll",
                "demo::Job::poll",
            ),
            ("<alloc::vec::Vec<T>>::push", "<alloc::vec::Vec<T>>::push"),
            ("plain::name", "plain::name"),
        ] {
            assert_eq!(readable_name(name), want, "{name}");
        }
    }
}
