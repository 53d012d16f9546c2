//! Which profiles a command reads: `--trace`, `--function`, `--since` /
//! `--from` / `--to`, `--outcome`, `--min-duration` / `--max-duration`,
//! checked against [`ProfileInfo`] (S3 metadata or the profile's comments)
//! and the time the profile was written.

use std::time::{Duration, SystemTime};

use clap::ValueEnum;

use crate::info::ProfileInfo;

/// How an invocation ended, as the library records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Outcome {
    /// The handler returned `Ok`.
    Ok,
    /// The handler returned `Err`.
    Error,
    /// The handler panicked.
    Panic,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Panic => "panic",
        }
    }
}

/// The conditions a profile must meet; an unset one accepts everything.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    /// The trace root.
    pub(crate) trace: Option<String>,
    /// `name` or `name:version`.
    pub(crate) function: Option<String>,
    /// Written at or after.
    pub(crate) from: Option<SystemTime>,
    /// Written at or before.
    pub(crate) to: Option<SystemTime>,
    /// How the invocation ended.
    pub(crate) outcome: Option<Outcome>,
    /// Ran at least this long.
    pub(crate) min_duration: Option<Duration>,
    /// Ran at most this long.
    pub(crate) max_duration: Option<Duration>,
}

impl Filter {
    /// Whether a profile written at `written` and described by `info` passes.
    /// A profile that lacks a field a condition needs does not pass it.
    pub(crate) fn accepts(&self, info: &ProfileInfo, written: SystemTime) -> bool {
        let trace = self
            .trace
            .as_ref()
            .is_none_or(|t| info.trace_id.as_ref() == Some(t));
        let function = self.function.as_ref().is_none_or(|f| {
            info.function_name.as_ref() == Some(f) || info.function().as_ref() == Some(f)
        });
        let time =
            self.from.is_none_or(|from| written >= from) && self.to.is_none_or(|to| written <= to);
        let outcome = self
            .outcome
            .is_none_or(|o| info.outcome.as_deref() == Some(o.as_str()));
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let min = self
            .min_duration
            .is_none_or(|d| info.duration_ms.is_some_and(|have| have >= ms(d)));
        let max = self
            .max_duration
            .is_none_or(|d| info.duration_ms.is_some_and(|have| have <= ms(d)));
        trace && function && time && outcome && min && max
    }

    /// Whether a condition needs more than the key (trace root, request ID)
    /// and the write time: the function, outcome or duration.
    pub(crate) fn needs_metadata(&self) -> bool {
        self.function.is_some()
            || self.outcome.is_some()
            || self.min_duration.is_some()
            || self.max_duration.is_some()
    }

    /// Whether any condition is set.
    pub(crate) fn is_set(&self) -> bool {
        self.trace.is_some()
            || self.function.is_some()
            || self.from.is_some()
            || self.to.is_some()
            || self.outcome.is_some()
            || self.min_duration.is_some()
            || self.max_duration.is_some()
    }
}

/// Parses `200ms`, `1h`, `2h 30m`.
///
/// # Errors
/// A message naming the accepted forms.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{e}; write a duration such as `200ms`, `30s`, `1h` or `2h 30m`"))
}

/// Parses a moment: RFC 3339 (`2026-12-04T15:00:00Z`, or without the `T`
/// and `Z`, read as UTC), or a duration before now (`2h`).
///
/// # Errors
/// A message naming the accepted forms.
pub(crate) fn parse_time(text: &str) -> Result<SystemTime, String> {
    // `2026-12-04 15:00` lacks the seconds humantime wants.
    let with_seconds = format!("{text}:00");
    for candidate in [text, with_seconds.as_str()] {
        if let Ok(time) = humantime::parse_rfc3339_weak(candidate) {
            return Ok(time);
        }
    }
    humantime::parse_duration(text)
        .ok()
        .and_then(|ago| SystemTime::now().checked_sub(ago))
        .ok_or_else(|| {
            format!("`{text}` is not a time; write UTC as `2026-12-04T15:00:00Z` or `2026-12-04 15:00`, or a time ago such as `2h`")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ProfileInfo {
        ProfileInfo {
            trace_id: Some("1-a-b".into()),
            request_id: Some("r".into()),
            function_name: Some("checkout".into()),
            function_version: Some("7".into()),
            duration_ms: Some(250),
            samples: Some(3),
            outcome: Some("error".into()),
        }
    }

    #[test]
    fn each_condition_can_reject() {
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let pass = |f: Filter| f.accepts(&info(), now);
        assert!(pass(Filter::default()));
        assert!(pass(Filter {
            function: Some("checkout".into()),
            ..Filter::default()
        }));
        assert!(pass(Filter {
            function: Some("checkout:7".into()),
            ..Filter::default()
        }));
        assert!(!pass(Filter {
            function: Some("checkout:8".into()),
            ..Filter::default()
        }));
        assert!(!pass(Filter {
            trace: Some("1-a-c".into()),
            ..Filter::default()
        }));
        assert!(!pass(Filter {
            from: Some(now + hour),
            ..Filter::default()
        }));
        assert!(!pass(Filter {
            to: Some(now - hour),
            ..Filter::default()
        }));
        assert!(!pass(Filter {
            outcome: Some(Outcome::Ok),
            ..Filter::default()
        }));
        assert!(pass(Filter {
            outcome: Some(Outcome::Error),
            ..Filter::default()
        }));
        assert!(pass(Filter {
            min_duration: Some(Duration::from_millis(250)),
            ..Filter::default()
        }));
        assert!(!pass(Filter {
            min_duration: Some(Duration::from_millis(251)),
            ..Filter::default()
        }));
        assert!(!pass(Filter {
            max_duration: Some(Duration::from_millis(249)),
            ..Filter::default()
        }));
        assert!(
            !Filter {
                outcome: Some(Outcome::Ok),
                ..Filter::default()
            }
            .accepts(&ProfileInfo::default(), now)
        );
    }

    #[test]
    fn times_and_durations_parse() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert!(parse_duration("soon").unwrap_err().contains("200ms"));
        assert!(parse_time("2026-12-04T15:00:00Z").is_ok());
        assert!(parse_time("2026-12-04 15:00").is_ok());
        assert!(parse_time("2h").unwrap() < SystemTime::now());
        assert!(parse_time("yesterday").is_err());
    }
}
