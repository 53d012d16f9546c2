//! Where each setting comes from.
//!
//! Precedence, highest first (documented here and nowhere else in the code):
//!
//! 1. `XRAYPROFILE_*` environment variables, read once per process at the first
//!    invocation of any annotated handler;
//! 2. the arguments of `#[xrayprofile(...)]`;
//! 3. the built-in defaults: threshold 0, bucket `xrayprofile-{account}-{region}`,
//!    no prefix.
//!
//! An environment value that cannot be used is logged once, with the fix, and
//! ignored, so the attribute's value (or the default) applies instead. A bad
//! setting never fails an invocation.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::sampling::Threshold;

/// Env var: `false`/`0` turns every profile off (a kill switch that needs no redeploy).
pub(crate) const ENV_ENABLED: &str = "XRAYPROFILE_ENABLED";
/// Env var: the sampling threshold, 0–65535.
pub(crate) const ENV_THRESHOLD: &str = "XRAYPROFILE_THRESHOLD";
/// Env var: the S3 bucket profiles are written to.
pub(crate) const ENV_BUCKET: &str = "XRAYPROFILE_S3_BUCKET";
/// Env var: the key prefix inside the bucket.
pub(crate) const ENV_PREFIX: &str = "XRAYPROFILE_S3_PREFIX";
/// Env var: write profiles under this directory instead of S3.
pub(crate) const ENV_OUTPUT_DIR: &str = "XRAYPROFILE_OUTPUT_DIR";
/// Env var: path-style S3 addressing, for S3-compatible endpoints.
pub(crate) const ENV_FORCE_PATH_STYLE: &str = "XRAYPROFILE_S3_FORCE_PATH_STYLE";
/// Env var: `false` writes address-level profiles (mappings and build IDs,
/// no names), symbolized later from the unstripped binary.
pub(crate) const ENV_SYMBOLIZE: &str = "XRAYPROFILE_SYMBOLIZE";

/// The most bytes a key prefix may have; S3 keys are limited to 1,024 bytes and
/// the rest of the key needs about 80.
const MAX_PREFIX_LEN: usize = 512;

/// What one `#[xrayprofile(...)]` attribute wrote; `None` where it was silent.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Defaults {
    pub(crate) threshold: Option<u16>,
    pub(crate) bucket: Option<&'static str>,
    pub(crate) prefix: Option<&'static str>,
}

/// The environment's overrides, parsed once per process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Overrides {
    pub(crate) enabled: bool,
    pub(crate) threshold: Option<Threshold>,
    pub(crate) bucket: Option<String>,
    pub(crate) prefix: Option<String>,
    pub(crate) output_dir: Option<PathBuf>,
    pub(crate) force_path_style: bool,
    /// `false`: profiles carry addresses only, for offline symbolization.
    pub(crate) symbolize: bool,
    /// `AWS_REGION`, which Lambda always sets; part of the default bucket name.
    pub(crate) region: Option<String>,
}

/// One environment value that was ignored, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigProblem {
    pub(crate) var: &'static str,
    pub(crate) value: String,
    pub(crate) fix: &'static str,
}

/// The settings one invocation runs with, borrowed so that computing them
/// costs no allocation on the unsampled path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings<'a> {
    pub(crate) enabled: bool,
    pub(crate) threshold: Threshold,
    /// `None`: use the default bucket, `xrayprofile-{account}-{region}`.
    pub(crate) bucket: Option<&'a str>,
    pub(crate) prefix: &'a str,
    pub(crate) output_dir: Option<&'a std::path::Path>,
    pub(crate) force_path_style: bool,
    pub(crate) symbolize: bool,
    pub(crate) region: Option<&'a str>,
}

impl Overrides {
    /// The process's overrides; the first call reads the environment and logs
    /// every ignored value once.
    pub(crate) fn get() -> &'static Overrides {
        static OVERRIDES: OnceLock<Overrides> = OnceLock::new();
        OVERRIDES.get_or_init(|| {
            let (overrides, problems) = Overrides::from_env(|name| std::env::var_os(name));
            for problem in &problems {
                tracing::warn!(
                    var = problem.var,
                    value = ?crate::trace::truncate_for_log(&problem.value),
                    "ignoring invalid {}, the attribute's value or the default applies; {}",
                    problem.var,
                    problem.fix,
                );
            }
            if !overrides.enabled {
                tracing::info!(
                    "profiling is turned off by {ENV_ENABLED}; no invocation will be profiled"
                );
            }
            overrides
        })
    }

    /// Parses the overrides from `var`, a stand-in for `std::env::var_os`.
    pub(crate) fn from_env(
        var: impl Fn(&str) -> Option<OsString>,
    ) -> (Overrides, Vec<ConfigProblem>) {
        let mut problems = Vec::new();
        let mut read = |name: &'static str, fix: &'static str| -> Option<String> {
            let raw = var(name)?;
            match raw.into_string() {
                Ok(text) => Some(text),
                Err(raw) => {
                    problems.push(ConfigProblem {
                        var: name,
                        value: raw.to_string_lossy().into_owned(),
                        fix,
                    });
                    None
                }
            }
        };
        let enabled_fix = "set it to `true` or `false` (or `1`/`0`)";
        let threshold_fix =
            "set it to an integer from 0 to 65535 (655 profiles about 1 % of invocations)";
        let bucket_fix = "set it to an S3 bucket name: 3-63 characters of a-z, 0-9, `.` and `-`, starting and ending with a letter or digit";
        let prefix_fix = "set it to a key prefix of at most 512 bytes with no leading `/`, no `..` segment and no control characters";
        let path_style_fix = "set it to `true` or `false`";

        let enabled_raw = read(ENV_ENABLED, enabled_fix);
        let threshold_raw = read(ENV_THRESHOLD, threshold_fix);
        let bucket_raw = read(ENV_BUCKET, bucket_fix);
        let prefix_raw = read(ENV_PREFIX, prefix_fix);
        let path_style_raw = read(ENV_FORCE_PATH_STYLE, path_style_fix);
        let symbolize_fix = "set it to `true` (names in the profile) or `false` (addresses, mappings and build IDs, for stripped binaries)";
        let symbolize_raw = read(ENV_SYMBOLIZE, symbolize_fix);
        let region = read("AWS_REGION", "").filter(|r| !r.trim().is_empty());
        let output_dir = var(ENV_OUTPUT_DIR)
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from);

        let mut check = |var: &'static str,
                         raw: Option<String>,
                         fix: &'static str,
                         ok: &dyn Fn(&str) -> bool| {
            let raw = raw?;
            if ok(&raw) {
                Some(raw)
            } else {
                problems.push(ConfigProblem {
                    var,
                    value: raw,
                    fix,
                });
                None
            }
        };
        let enabled = check(ENV_ENABLED, enabled_raw, enabled_fix, &|v| {
            parse_bool(v).is_some()
        })
        .and_then(|v| parse_bool(&v))
        .unwrap_or(true);
        let threshold = check(ENV_THRESHOLD, threshold_raw, threshold_fix, &|v| {
            v.trim().parse::<u16>().is_ok()
        })
        .and_then(|v| v.trim().parse::<u16>().ok())
        .map(Threshold);
        let bucket = check(ENV_BUCKET, bucket_raw, bucket_fix, &|v| {
            bucket_name_problem(v).is_none()
        });
        let prefix = check(ENV_PREFIX, prefix_raw, prefix_fix, &|v| {
            prefix_problem(v).is_none()
        });
        let force_path_style = check(ENV_FORCE_PATH_STYLE, path_style_raw, path_style_fix, &|v| {
            parse_bool(v).is_some()
        })
        .and_then(|v| parse_bool(&v))
        .unwrap_or(false);
        let symbolize = check(ENV_SYMBOLIZE, symbolize_raw, symbolize_fix, &|v| {
            parse_bool(v).is_some()
        })
        .and_then(|v| parse_bool(&v))
        .unwrap_or(true);

        let overrides = Overrides {
            enabled,
            threshold,
            bucket,
            prefix,
            output_dir,
            force_path_style,
            symbolize,
            region,
        };
        (overrides, problems)
    }

    /// Merges these overrides over one attribute's defaults.
    pub(crate) fn settings(&self, defaults: &Defaults) -> Settings<'_> {
        let threshold = self
            .threshold
            .unwrap_or(Threshold(defaults.threshold.unwrap_or(0)));
        Settings {
            enabled: self.enabled,
            threshold,
            bucket: self.bucket.as_deref().or(defaults.bucket),
            prefix: self.prefix.as_deref().or(defaults.prefix).unwrap_or(""),
            output_dir: self.output_dir.as_deref(),
            force_path_style: self.force_path_style,
            symbolize: self.symbolize,
            region: self.region.as_deref(),
        }
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Which S3 bucket naming rule `name` breaks, if any.
pub(crate) fn bucket_name_problem(name: &str) -> Option<&'static str> {
    let bytes = name.as_bytes();
    if !(3..=63).contains(&bytes.len()) {
        return Some("must be 3 to 63 characters long");
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
    {
        return Some("may contain only lower-case letters, digits, `.` and `-`");
    }
    let alnum = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    if !alnum(bytes.first()) || !alnum(bytes.last()) {
        return Some("must start and end with a letter or digit");
    }
    if name.contains("..") {
        return Some("must not contain two adjacent periods");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Some("must not be formatted as an IP address");
    }
    None
}

/// Why `prefix` cannot start an object key, if it cannot.
pub(crate) fn prefix_problem(prefix: &str) -> Option<&'static str> {
    if prefix.len() > MAX_PREFIX_LEN {
        return Some("is longer than 512 bytes");
    }
    if prefix.starts_with('/') {
        return Some("starts with `/`");
    }
    if prefix
        .split('/')
        .any(|segment| segment == ".." || segment == ".")
    {
        return Some("has a `.` or `..` segment");
    }
    if prefix.chars().any(char::is_control) {
        return Some("contains a control character");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> (Overrides, Vec<ConfigProblem>) {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        Overrides::from_env(|name| map.get(name).cloned())
    }

    const ATTRIBUTE: Defaults = Defaults {
        threshold: Some(655),
        bucket: Some("attr-bucket"),
        prefix: Some("attr"),
    };

    #[test]
    fn attribute_values_apply_when_env_is_silent() {
        let (overrides, problems) = env(&[]);
        assert!(problems.is_empty());
        let settings = overrides.settings(&ATTRIBUTE);
        assert!(settings.enabled);
        assert_eq!(settings.threshold, Threshold(655));
        assert_eq!(settings.bucket, Some("attr-bucket"));
        assert_eq!(settings.prefix, "attr");
    }

    #[test]
    fn built_in_defaults_apply_when_both_are_silent() {
        let (overrides, _) = env(&[]);
        let settings = overrides.settings(&Defaults::default());
        assert_eq!(settings.threshold, Threshold(0));
        assert_eq!(settings.bucket, None);
        assert_eq!(settings.prefix, "");
    }

    #[test]
    fn env_overrides_the_attribute() {
        let (overrides, problems) = env(&[
            (ENV_THRESHOLD, "65535"),
            (ENV_BUCKET, "env-bucket"),
            (ENV_PREFIX, "env/prefix"),
            (ENV_FORCE_PATH_STYLE, "true"),
            (ENV_OUTPUT_DIR, "/tmp/profiles"),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        let settings = overrides.settings(&ATTRIBUTE);
        assert_eq!(settings.threshold, Threshold(65535));
        assert_eq!(settings.bucket, Some("env-bucket"));
        assert_eq!(settings.prefix, "env/prefix");
        assert!(settings.force_path_style);
        assert_eq!(
            settings.output_dir,
            Some(std::path::Path::new("/tmp/profiles"))
        );
    }

    #[test]
    fn symbolize_defaults_on_and_false_asks_for_addresses() {
        let (overrides, _) = env(&[]);
        assert!(overrides.settings(&ATTRIBUTE).symbolize);
        let (overrides, problems) = env(&[(ENV_SYMBOLIZE, "false")]);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(!overrides.settings(&ATTRIBUTE).symbolize);
        let (overrides, problems) = env(&[(ENV_SYMBOLIZE, "names")]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            overrides.settings(&ATTRIBUTE).symbolize,
            "bad value ignored"
        );
    }

    #[test]
    fn kill_switch() {
        for off in ["false", "0", "FALSE", " off "] {
            let (overrides, problems) = env(&[(ENV_ENABLED, off)]);
            assert!(problems.is_empty());
            assert!(!overrides.settings(&ATTRIBUTE).enabled, "{off:?}");
        }
        let (overrides, _) = env(&[(ENV_ENABLED, "true")]);
        assert!(overrides.enabled);
    }

    #[test]
    fn bad_values_are_reported_and_ignored() {
        let (overrides, problems) = env(&[
            (ENV_THRESHOLD, "abc"),
            (ENV_ENABLED, "maybe"),
            (ENV_BUCKET, "My_Bucket"),
            (ENV_PREFIX, "/abs"),
            (ENV_FORCE_PATH_STYLE, "sure"),
        ]);
        let vars: Vec<&str> = problems.iter().map(|p| p.var).collect();
        assert_eq!(
            vars,
            [
                ENV_ENABLED,
                ENV_THRESHOLD,
                ENV_BUCKET,
                ENV_PREFIX,
                ENV_FORCE_PATH_STYLE
            ]
        );
        let settings = overrides.settings(&ATTRIBUTE);
        assert!(settings.enabled);
        assert_eq!(settings.threshold, Threshold(655));
        assert_eq!(settings.bucket, Some("attr-bucket"));
        assert_eq!(settings.prefix, "attr");
        assert!(!settings.force_path_style);
    }

    #[test]
    fn threshold_out_of_range_or_negative_is_ignored() {
        for bad in ["70000", "65536", "-1", "", " ", "6.5", "0x28f"] {
            let (overrides, problems) = env(&[(ENV_THRESHOLD, bad)]);
            assert_eq!(problems.len(), 1, "{bad:?}");
            assert!(problems[0].fix.contains("0 to 65535"));
            assert_eq!(overrides.threshold, None, "{bad:?}");
        }
        let (overrides, problems) = env(&[(ENV_THRESHOLD, " 6553 ")]);
        assert!(problems.is_empty());
        assert_eq!(overrides.threshold, Some(Threshold(6553)));
    }

    #[test]
    fn non_utf8_values_are_reported() {
        use std::os::unix::ffi::OsStringExt;
        let (overrides, problems) = Overrides::from_env(|name| {
            (name == ENV_THRESHOLD).then(|| OsString::from_vec(vec![0x36, 0xff]))
        });
        assert_eq!(problems.len(), 1);
        assert_eq!(overrides.threshold, None);
    }

    #[test]
    fn bucket_rules() {
        for ok in ["abc", "my-profiles", "a.b.c", "0123456789", &"a".repeat(63)] {
            assert_eq!(bucket_name_problem(ok), None, "{ok:?}");
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
            let problem = bucket_name_problem(name).unwrap_or_default();
            assert!(problem.contains(rule), "{name:?}: {problem:?}");
        }
    }

    #[test]
    fn prefix_rules() {
        for ok in ["", "profiles", "profiles/", "team/service"] {
            assert_eq!(prefix_problem(ok), None, "{ok:?}");
        }
        for bad in ["/abs", "a/../b", "..", "a\nb", &"p".repeat(513)] {
            assert!(prefix_problem(bad).is_some(), "{bad:?}");
        }
    }
}
