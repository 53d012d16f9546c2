//! What the library records about each profile: from the S3 object's user
//! metadata, or, for local files (`XRAYPROFILE_OUTPUT_DIR` writes no
//! metadata), from the profile's own comments and header. Both give the same
//! fields, so every filter works on both sources.

use std::collections::HashMap;

use pprof::protos::Profile;
use serde::Serialize;

/// Who produced a profile and how the invocation went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProfileInfo {
    /// The X-Ray trace root, `1-xxxxxxxx-xxxxxxxxxxxxxxxxxxxxxxxx`.
    pub trace_id: Option<String>,
    /// The Lambda request ID.
    pub request_id: Option<String>,
    /// The function's name.
    pub function_name: Option<String>,
    /// The function's version (`$LATEST`, `7`).
    pub function_version: Option<String>,
    /// How long the profile ran, in milliseconds.
    pub duration_ms: Option<u64>,
    /// CPU samples in the profile.
    pub samples: Option<i64>,
    /// `ok`, `error` or `panic`.
    pub outcome: Option<String>,
}

/// The CPU sampling period the library uses (99 Hz), for profiles whose CPU
/// samples are stored as nanoseconds.
const CPU_PERIOD_NS: i64 = 1_000_000_000 / 99;

impl ProfileInfo {
    /// From S3 user metadata (`trace-id`, `request-id`, `function-name`,
    /// `function-version`, `duration-ms`, `samples`, `outcome`).
    pub fn from_metadata(metadata: &HashMap<String, String>) -> ProfileInfo {
        let get = |name: &str| metadata.get(name).filter(|v| !v.is_empty()).cloned();
        ProfileInfo {
            trace_id: get("trace-id"),
            request_id: get("request-id"),
            function_name: get("function-name"),
            function_version: get("function-version"),
            duration_ms: get("duration-ms").and_then(|v| v.parse().ok()),
            samples: get("samples").and_then(|v| v.parse().ok()),
            outcome: get("outcome"),
        }
    }

    /// From the comments (`trace_id=`, `request_id=`, `function=name:version`,
    /// `outcome=`) and header (`duration_nanos`) of a decoded profile.
    pub fn from_profile(profile: &Profile) -> ProfileInfo {
        let mut info = ProfileInfo {
            duration_ms: u64::try_from(profile.duration_nanos / 1_000_000).ok(),
            samples: Some(cpu_samples(profile)),
            ..ProfileInfo::default()
        };
        for comment in &profile.comment {
            let Some((key, value)) = text(profile, *comment).split_once('=') else {
                continue;
            };
            let value = Some(value.to_owned());
            match key {
                "trace_id" => info.trace_id = value,
                "request_id" => info.request_id = value,
                "outcome" => info.outcome = value,
                "function" => {
                    // Lambda function names have no `:`; the version follows it.
                    let (name, version) = value
                        .as_deref()
                        .and_then(|v| v.split_once(':'))
                        .map_or((value.clone(), None), |(n, v)| {
                            (Some(n.to_owned()), Some(v.to_owned()))
                        });
                    info.function_name = name;
                    info.function_version = version;
                }
                _ => {}
            }
        }
        info
    }

    /// `name:version`, or what is known of it.
    pub fn function(&self) -> Option<String> {
        match (&self.function_name, &self.function_version) {
            (Some(name), Some(version)) => Some(format!("{name}:{version}")),
            (Some(name), None) => Some(name.clone()),
            _ => None,
        }
    }
}

/// The string at `index` of the profile's table; `""` when out of range.
pub(crate) fn text(profile: &Profile, index: i64) -> &str {
    usize::try_from(index)
        .ok()
        .and_then(|i| profile.string_table.get(i))
        .map_or("", String::as_str)
}

/// CPU samples, as the library counts them for the `samples` metadata: the
/// `samples` values of a CPU profile, or the `cpu` nanoseconds of a wall
/// profile divided by the 99 Hz period (rounded).
fn cpu_samples(profile: &Profile) -> i64 {
    let index = |name: &str| {
        profile
            .sample_type
            .iter()
            .position(|t| text(profile, t.ty) == name)
    };
    let total = |i: usize| -> i64 {
        profile
            .sample
            .iter()
            .filter_map(|s| s.value.get(i))
            .fold(0_i64, |a, v| a.saturating_add(*v))
    };
    if let Some(i) = index("samples") {
        total(i)
    } else if let Some(i) = index("cpu") {
        (total(i) + CPU_PERIOD_NS / 2) / CPU_PERIOD_NS
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_give_the_metadata_fields() {
        let profile = Profile {
            string_table: vec![
                String::new(),
                "trace_id=1-5759e988-bd862e3fe1be46a9942701f0".into(),
                "request_id=req-1".into(),
                "function=checkout:7".into(),
                "outcome=panic".into(),
                "wall: elapsed=1.000ms".into(),
            ],
            comment: vec![1, 2, 3, 4, 5],
            duration_nanos: 250_400_000,
            ..Profile::default()
        };
        let metadata = HashMap::from(
            [
                ("trace-id", "1-5759e988-bd862e3fe1be46a9942701f0"),
                ("request-id", "req-1"),
                ("function-name", "checkout"),
                ("function-version", "7"),
                ("duration-ms", "250"),
                ("samples", "0"),
                ("outcome", "panic"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        assert_eq!(
            ProfileInfo::from_profile(&profile),
            ProfileInfo::from_metadata(&metadata)
        );
        assert_eq!(
            ProfileInfo::from_metadata(&metadata).function().as_deref(),
            Some("checkout:7")
        );
    }
}
