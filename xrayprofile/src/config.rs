//! Where each setting comes from.
//!
//! Precedence, highest first (documented here and nowhere else in the code):
//!
//! 1. `XRAYPROFILE_*` environment variables, read once per process at the first
//!    invocation of any annotated handler;
//! 2. the arguments of `#[xrayprofile(...)]`;
//! 3. the built-in defaults: threshold 0, bucket `xrayprofile-{account}-{region}`,
//!    no prefix, at most 10 profiles a minute.
//!
//! An environment value that cannot be used is logged once, with the fix, and
//! ignored, so the attribute's value (or the default) applies instead. A bad
//! setting never fails an invocation.

use std::ffi::OsString;
use std::num::NonZeroU32;
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
/// Env var: the most profiles per minute per execution environment; `0` = no cap.
pub(crate) const ENV_MAX_PER_MINUTE: &str = "XRAYPROFILE_MAX_PER_MINUTE";
/// Env var: `false` writes address-level profiles (mappings and build IDs,
/// no names), symbolized later from the unstripped binary.
pub(crate) const ENV_SYMBOLIZE: &str = "XRAYPROFILE_SYMBOLIZE";
/// Env var: `wall` (wall-clock and CPU time in one profile) or `cpu`.
pub(crate) const ENV_MODE: &str = "XRAYPROFILE_MODE";
/// Set by Lambda; part of the default bucket name.
pub(crate) const ENV_REGION: &str = "AWS_REGION";

/// Every variable this module reads, for tests that set them all.
#[cfg(test)]
pub(crate) const ALL_VARS: [&str; 10] = [
    ENV_ENABLED,
    ENV_THRESHOLD,
    ENV_BUCKET,
    ENV_PREFIX,
    ENV_OUTPUT_DIR,
    ENV_FORCE_PATH_STYLE,
    ENV_MAX_PER_MINUTE,
    ENV_SYMBOLIZE,
    ENV_MODE,
    ENV_REGION,
];

/// The cap when neither the attribute nor the environment names one: enough
/// for a steady trickle of profiles, small enough that a caller forcing
/// sampling cannot make more than a few invocations a minute pay for uploads.
pub(crate) const DEFAULT_MAX_PER_MINUTE: u32 = 10;

/// The longest `XRAYPROFILE_OUTPUT_DIR` accepted: Linux's `PATH_MAX`, less
/// room for the key under it.
const MAX_OUTPUT_DIR_LEN: usize = 3_072;

/// What one `#[xrayprofile(...)]` attribute (or one `ProfileLayer`) wrote;
/// `None` where it was silent. The macro writes one per handler, as a
/// `static` struct literal with named fields.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Site {
    /// `threshold`, or the one `sample_rate` gave.
    pub threshold: Option<u16>,
    /// `bucket`, already checked.
    pub bucket: Option<&'static str>,
    /// `prefix`, already checked.
    pub prefix: Option<&'static str>,
    /// `max_per_minute`; `Some(0)` removes the cap.
    pub max_per_minute: Option<u32>,
    /// `mode`.
    pub mode: Option<Mode>,
    /// `symbolize`; `Some(false)` asks for address-level profiles.
    pub symbolize: Option<bool>,
}

/// What a profile measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Mode {
    /// Where the invocation's time went, awaits included: sample types
    /// `wall/nanoseconds` (the default view) and `cpu/nanoseconds`.
    #[default]
    Wall,
    /// CPU time only, as sampled at 99 Hz.
    Cpu,
}

impl Mode {
    /// The mode `value` names, by the rule the attribute uses too.
    fn parse(value: &str) -> Option<Mode> {
        xrayprofile_rules::mode(value).map(|mode| match mode {
            xrayprofile_rules::Mode::Wall => Mode::Wall,
            xrayprofile_rules::Mode::Cpu => Mode::Cpu,
        })
    }
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
    /// `0` = no cap.
    pub(crate) max_per_minute: Option<u32>,
    /// `false`: profiles carry addresses only, for offline symbolization.
    pub(crate) symbolize: Option<bool>,
    pub(crate) mode: Option<Mode>,
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
    /// `None`: no cap.
    pub(crate) max_per_minute: Option<NonZeroU32>,
    pub(crate) symbolize: bool,
    pub(crate) mode: Mode,
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
                    value = ?crate::untrusted::truncate_for_log(&problem.value),
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
    ///
    /// Every value is checked before use; one that is not valid UTF-8, empty,
    /// only whitespace or outside its variable's rules becomes a
    /// [`ConfigProblem`] and is ignored, so nothing the environment holds can
    /// make profiling (or the invocation) fail.
    pub(crate) fn from_env(
        var: impl Fn(&str) -> Option<OsString>,
    ) -> (Overrides, Vec<ConfigProblem>) {
        let mut problems = Vec::new();
        // Reads `name` and parses it once; a value `parse` refuses is a problem.
        fn read<T>(
            var: &impl Fn(&str) -> Option<OsString>,
            problems: &mut Vec<ConfigProblem>,
            name: &'static str,
            fix: &'static str,
            parse: impl Fn(&str) -> Option<T>,
        ) -> Option<T> {
            let raw = var(name)?;
            let parsed = raw
                .to_str()
                .filter(|text| !text.trim().is_empty())
                .and_then(parse);
            if parsed.is_none() {
                problems.push(ConfigProblem {
                    var: name,
                    value: raw.to_string_lossy().into_owned(),
                    fix,
                });
            }
            parsed
        }
        let text = |ok: fn(&str) -> Option<&'static str>| {
            move |v: &str| ok(v).is_none().then(|| v.to_owned())
        };

        let enabled = read(
            &var,
            &mut problems,
            ENV_ENABLED,
            "set it to `true` or `false` (or `1`/`0`)",
            parse_bool,
        )
        .unwrap_or(true);
        let threshold = read(
            &var,
            &mut problems,
            ENV_THRESHOLD,
            "set it to an integer from 0 to 65535 (655 profiles about 1 % of invocations)",
            parse_number::<u16>,
        )
        .map(Threshold);
        let bucket = read(
            &var,
            &mut problems,
            ENV_BUCKET,
            "set it to an S3 bucket name: 3-63 characters of a-z, 0-9, `.` and `-`, starting and ending with a letter or digit",
            text(bucket_problem),
        );
        let prefix = read(
            &var,
            &mut problems,
            ENV_PREFIX,
            "set it to a key prefix of at most 512 bytes with no leading `/`, no `..` segment, no control characters and no leading or trailing whitespace, or unset it",
            text(prefix_problem),
        );
        let force_path_style = read(
            &var,
            &mut problems,
            ENV_FORCE_PATH_STYLE,
            "set it to `true` or `false`",
            parse_bool,
        )
        .unwrap_or(false);
        let max_per_minute = read(
            &var,
            &mut problems,
            ENV_MAX_PER_MINUTE,
            "set it to a whole number of profiles per minute, at most 4294967295 (`0` removes the cap; the default is 10)",
            parse_number::<u32>,
        );
        let symbolize = read(
            &var,
            &mut problems,
            ENV_SYMBOLIZE,
            "set it to `true` (names in the profile) or `false` (addresses, mappings and build IDs, for stripped binaries)",
            parse_bool,
        );
        let mode = read(
            &var,
            &mut problems,
            ENV_MODE,
            "set it to `wall` (where the time went, awaits included; the default) or `cpu` (CPU time only)",
            Mode::parse,
        );
        let region = read(
            &var,
            &mut problems,
            ENV_REGION,
            "Lambda sets it to the function's region, such as `us-east-1`; without a valid region the default bucket name cannot be built, so set XRAYPROFILE_S3_BUCKET",
            text(region_problem),
        );
        // A directory is a path, not text: any bytes Linux accepts are fine.
        let output_dir = var(ENV_OUTPUT_DIR).and_then(|dir| {
            let usable = !dir.to_string_lossy().trim().is_empty() && dir.len() <= MAX_OUTPUT_DIR_LEN;
            if !usable {
                problems.push(ConfigProblem {
                    var: ENV_OUTPUT_DIR,
                    value: dir.to_string_lossy().into_owned(),
                    fix: "set it to a directory path of at most 3072 bytes, or unset it to write to S3",
                });
            }
            usable.then(|| PathBuf::from(dir))
        });

        let overrides = Overrides {
            enabled,
            threshold,
            bucket,
            prefix,
            output_dir,
            force_path_style,
            max_per_minute,
            symbolize,
            mode,
            region,
        };
        (overrides, problems)
    }

    /// Merges these overrides over one attribute's values.
    pub(crate) fn settings(&self, site: &Site) -> Settings<'_> {
        let threshold = self
            .threshold
            .unwrap_or(Threshold(site.threshold.unwrap_or(0)));
        let max_per_minute = self
            .max_per_minute
            .or(site.max_per_minute)
            .unwrap_or(DEFAULT_MAX_PER_MINUTE);
        Settings {
            enabled: self.enabled,
            threshold,
            bucket: self.bucket.as_deref().or(site.bucket),
            prefix: self.prefix.as_deref().or(site.prefix).unwrap_or(""),
            output_dir: self.output_dir.as_deref(),
            force_path_style: self.force_path_style,
            max_per_minute: NonZeroU32::new(max_per_minute),
            symbolize: self.symbolize.or(site.symbolize).unwrap_or(true),
            mode: self.mode.or(site.mode).unwrap_or_default(),
            region: self.region.as_deref(),
        }
    }
}

/// A whole number of at most 10 digits, surrounding whitespace allowed: a
/// longer value (thousands of zeros parse as 0) is a mistake, not a setting.
fn parse_number<T: std::str::FromStr>(value: &str) -> Option<T> {
    let digits = value.trim();
    (digits.len() <= 10).then(|| digits.parse().ok()).flatten()
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

pub(crate) use xrayprofile_rules::{bucket_problem, prefix_problem, threshold_from_rate};

/// Why `region` cannot be part of the default bucket name, if it cannot.
/// Every AWS region is lower-case letters, digits and `-`, starting with a
/// letter and ending with a digit (`us-east-1`, `us-gov-west-1`).
pub(crate) fn region_problem(region: &str) -> Option<&'static str> {
    let bytes = region.as_bytes();
    if !(1..=32).contains(&bytes.len()) {
        return Some("must be 1 to 32 characters long");
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
    {
        return Some("may contain only lower-case letters, digits and `-`");
    }
    if !bytes.first().is_some_and(u8::is_ascii_lowercase)
        || !bytes.last().is_some_and(u8::is_ascii_digit)
    {
        return Some("must start with a letter and end with a digit");
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

    const ATTRIBUTE: Site = Site {
        threshold: Some(655),
        bucket: Some("attr-bucket"),
        prefix: Some("attr"),
        max_per_minute: Some(20),
        mode: None,
        symbolize: None,
    };

    #[test]
    fn mode_defaults_to_wall_the_attribute_then_env_choose() {
        let (overrides, _) = env(&[]);
        assert_eq!(overrides.settings(&ATTRIBUTE).mode, Mode::Wall);
        let cpu = Site {
            mode: Some(Mode::Cpu),
            symbolize: Some(false),
            ..ATTRIBUTE
        };
        let settings = overrides.settings(&cpu);
        assert_eq!(settings.mode, Mode::Cpu);
        assert!(!settings.symbolize, "the attribute asks for addresses");
        let (overrides, problems) = env(&[(ENV_MODE, " Wall "), (ENV_SYMBOLIZE, "true")]);
        assert!(problems.is_empty(), "{problems:?}");
        let settings = overrides.settings(&cpu);
        assert_eq!(settings.mode, Mode::Wall, "env beats the attribute");
        assert!(settings.symbolize);
        let (overrides, problems) = env(&[(ENV_MODE, "offcpu")]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].fix.contains("`wall`"), "{problems:?}");
        assert_eq!(
            overrides.settings(&cpu).mode,
            Mode::Cpu,
            "bad value ignored"
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
        let settings = overrides.settings(&Site::default());
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
    fn max_per_minute_precedence_default_and_zero() {
        let (overrides, _) = env(&[]);
        assert_eq!(
            overrides.settings(&Site::default()).max_per_minute,
            NonZeroU32::new(DEFAULT_MAX_PER_MINUTE)
        );
        assert_eq!(
            overrides.settings(&ATTRIBUTE).max_per_minute,
            NonZeroU32::new(20)
        );
        let (overrides, problems) = env(&[(ENV_MAX_PER_MINUTE, " 3 ")]);
        assert!(problems.is_empty());
        assert_eq!(
            overrides.settings(&ATTRIBUTE).max_per_minute,
            NonZeroU32::new(3)
        );
        let (overrides, _) = env(&[(ENV_MAX_PER_MINUTE, "0")]);
        assert_eq!(overrides.settings(&ATTRIBUTE).max_per_minute, None);
        let no_cap = Site {
            max_per_minute: Some(0),
            ..ATTRIBUTE
        };
        let (overrides, _) = env(&[]);
        assert_eq!(overrides.settings(&no_cap).max_per_minute, None);
        for bad in ["-1", "ten", "4294967296", "1e3", ""] {
            let (overrides, problems) = env(&[(ENV_MAX_PER_MINUTE, bad)]);
            assert_eq!(problems.len(), 1, "{bad:?}");
            assert_eq!(
                overrides.settings(&ATTRIBUTE).max_per_minute,
                NonZeroU32::new(20),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn region_rules() {
        for ok in ["us-east-1", "eu-central-2", "us-gov-west-1", "cn-north-1"] {
            assert_eq!(region_problem(ok), None, "{ok:?}");
        }
        for bad in [
            "",
            "US-EAST-1",
            "us-east-1/..",
            "-1",
            "us-east",
            &"a1".repeat(17),
        ] {
            assert!(region_problem(bad).is_some(), "{bad:?}");
        }
    }

    /// Property test: every variable, every kind of bad value, in any
    /// combination. Nothing panics, each bad value is one problem and is
    /// ignored, and whatever is kept passes its variable's rules.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;
        use std::os::unix::ffi::OsStringExt;

        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Class {
            Empty,
            Whitespace,
            Huge,
            Negative,
            NonUtf8,
            Random,
        }

        fn value() -> impl Strategy<Value = (Class, OsString)> {
            prop_oneof![
                Just((Class::Empty, OsString::new())),
                "[ \t\n\r]{1,8}".prop_map(|v| (Class::Whitespace, OsString::from(v))),
                ("[a-z0-9]{1,4}", 3_100usize..20_000)
                    .prop_map(|(v, n)| (Class::Huge, OsString::from(v.repeat(n)))),
                "-[0-9]{1,12}".prop_map(|v| (Class::Negative, OsString::from(v))),
                (
                    prop::collection::vec(0u8..0x80, 0..16),
                    0x80u8..=0xff,
                    any::<bool>()
                )
                    .prop_map(|(mut ascii, bad, front)| {
                        // One byte >= 0x80 among ASCII is a lone lead or
                        // continuation byte: never UTF-8.
                        if front {
                            ascii.insert(0, bad)
                        } else {
                            ascii.push(bad)
                        }
                        (Class::NonUtf8, OsString::from_vec(ascii))
                    }),
                any::<String>().prop_map(|v| (Class::Random, OsString::from(v))),
            ]
        }

        /// Whether `class` must be refused for `var`. Random values may be
        /// either; a directory path is any bytes, and `-5` is a fine prefix.
        fn must_refuse(var: &str, class: Class) -> bool {
            match class {
                Class::Empty | Class::Whitespace | Class::Huge => true,
                Class::NonUtf8 => var != ENV_OUTPUT_DIR,
                Class::Negative => var != ENV_OUTPUT_DIR && var != ENV_PREFIX,
                Class::Random => false,
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2_000))]

            #[test]
            fn bad_environment_values_are_reported_once_and_ignored(
                values in prop::collection::vec(prop::option::of(value()), ALL_VARS.len())
            ) {
                let set: HashMap<&str, (Class, OsString)> = ALL_VARS
                    .iter()
                    .zip(values)
                    .filter_map(|(var, value)| value.map(|v| (*var, v)))
                    .collect();
                let (overrides, problems) =
                    Overrides::from_env(|name| set.get(name).map(|(_, v)| v.clone()));
                for problem in &problems {
                    prop_assert!(set.contains_key(problem.var), "{:?}", problem);
                    prop_assert!(!problem.fix.is_empty(), "{:?}", problem);
                    prop_assert_eq!(problems.iter().filter(|p| p.var == problem.var).count(), 1);
                }
                let refused = |var: &str| problems.iter().any(|p| p.var == var);
                for (var, (class, _)) in &set {
                    if must_refuse(var, *class) {
                        prop_assert!(refused(var), "{} = {:?} was not reported", var, class);
                    }
                }
                // What was refused is not used; what was kept is valid.
                let settings = overrides.settings(&ATTRIBUTE);
                if refused(ENV_ENABLED) { prop_assert!(overrides.enabled); }
                if refused(ENV_FORCE_PATH_STYLE) { prop_assert!(!overrides.force_path_style); }
                if refused(ENV_THRESHOLD) { prop_assert_eq!(settings.threshold, Threshold(655)); }
                if refused(ENV_MAX_PER_MINUTE) {
                    prop_assert_eq!(settings.max_per_minute, NonZeroU32::new(20));
                }
                match &overrides.bucket {
                    Some(bucket) => prop_assert_eq!(bucket_problem(bucket), None),
                    None => prop_assert_eq!(settings.bucket, Some("attr-bucket")),
                }
                match &overrides.prefix {
                    Some(prefix) => prop_assert_eq!(prefix_problem(prefix), None),
                    None => prop_assert_eq!(settings.prefix, "attr"),
                }
                if let Some(region) = &overrides.region {
                    prop_assert_eq!(region_problem(region), None);
                }
                if let Some(dir) = &overrides.output_dir {
                    prop_assert!(dir.as_os_str().len() <= MAX_OUTPUT_DIR_LEN);
                }
            }
        }
    }
}
