//! The attribute's arguments, all optional, in any order, each at most once:
//!
//! - `threshold = <u16 integer literal>` or `sample_rate = <float in (0, 1]>`;
//! - `bucket = "<S3 bucket name>"`;
//! - `prefix = "<key prefix>"`;
//! - `max_per_minute = <u32 integer literal>` (`0` = no cap);
//! - `mode = "wall"` (the default: wall-clock and CPU time) or `mode = "cpu"`;
//! - `symbolize = <bool literal>` (`false`: address-level profiles).
//!
//! Every value is checked here, at compile time, and every problem is reported
//! at the token that caused it. The rules themselves (argument names, bucket
//! and prefix rules, the `sample_rate` formula, mode names) are
//! `xrayprofile_rules`', which the runtime applies to the same settings.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ExprUnary, Ident, Lit, LitFloat, LitInt, LitStr, Meta, Token, UnOp};

use xrayprofile_rules::{ARGUMENTS, Mode};

use crate::diag::Diag;

const THRESHOLD_RANGE: &str = "`threshold` must be 0..=65535 (it is compared with the trace ID's last 4 hex digits); 655 profiles about 1 % of invocations";
const SAMPLE_RATE_RANGE: &str = "`sample_rate` must be greater than 0.0 and at most 1.0; 0.01 profiles about 1 % of invocations";

/// The parsed arguments; `None` where the attribute is silent.
#[derive(Default)]
pub(crate) struct Args {
    /// From `threshold`, or computed from `sample_rate`; the span is the literal's.
    pub(crate) threshold: Option<(u16, Span)>,
    pub(crate) bucket: Option<LitStr>,
    pub(crate) prefix: Option<LitStr>,
    pub(crate) max_per_minute: Option<(u32, Span)>,
    pub(crate) mode: Option<(Mode, Span)>,
    pub(crate) symbolize: Option<(bool, Span)>,
}

/// "expected one of `threshold`, `sample_rate`, ...": every argument name.
fn expected() -> String {
    let names: Vec<String> = ARGUMENTS.iter().map(|name| format!("`{name}`")).collect();
    format!("expected one of {}", names.join(", "))
}

/// The raw `name = value` list, before any argument is interpreted.
pub(crate) struct RawArgs(Punctuated<Meta, Token![,]>);

impl Parse for RawArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        Punctuated::parse_terminated(input).map(RawArgs)
    }
}

impl Args {
    /// Interprets every argument, recording each problem in `diag`.
    pub(crate) fn from_raw(raw: RawArgs, diag: &mut Diag) -> Args {
        let mut args = Args::default();
        let mut seen: Vec<Ident> = Vec::new();
        let mut rate_given: Option<Ident> = None;
        let mut threshold_given: Option<Ident> = None;
        for meta in raw.0 {
            let Some((ident, value)) = name_value(meta, diag) else {
                continue;
            };
            if seen.contains(&ident) {
                diag.error(&ident, format!("`{ident}` is given twice; keep one"));
                continue;
            }
            seen.push(ident.clone());
            if ident == "threshold" {
                threshold_given = Some(ident.clone());
                args.threshold = args.threshold.or(threshold(&value, diag));
            } else if ident == "sample_rate" {
                rate_given = Some(ident.clone());
                args.threshold = args.threshold.or(sample_rate(&value, diag));
            } else if ident == "bucket" {
                args.bucket = string(&ident, &value, diag).filter(|lit| {
                    check(
                        lit,
                        xrayprofile_rules::bucket_problem,
                        "`bucket` is not a valid S3 bucket name",
                        diag,
                    )
                });
            } else if ident == "max_per_minute" {
                args.max_per_minute = max_per_minute(&value, diag);
            } else if ident == "mode" {
                args.mode = mode(&value, diag);
            } else if ident == "symbolize" {
                args.symbolize = boolean(&ident, &value, diag);
            } else if ident == "prefix" {
                args.prefix = string(&ident, &value, diag).filter(|lit| {
                    check(
                        lit,
                        xrayprofile_rules::prefix_problem,
                        "`prefix` cannot start an object key",
                        diag,
                    )
                });
            } else {
                let hint = did_you_mean(&ident.to_string())
                    .map_or_else(String::new, |name| format!("did you mean `{name}`? "));
                diag.error(
                    &ident,
                    format!("unknown argument `{ident}`; {hint}{}", expected()),
                );
            }
        }
        if let (Some(_), Some(rate)) = (&threshold_given, &rate_given) {
            diag.error(rate, "`sample_rate` and `threshold` both set the share of invocations profiled; keep one");
            args.threshold = None;
        }
        args
    }
}

/// Splits one argument into its name and value, reporting every other form.
fn name_value(meta: Meta, diag: &mut Diag) -> Option<(Ident, Expr)> {
    let (path, value) = match meta {
        Meta::NameValue(nv) => (nv.path, nv.value),
        Meta::Path(path) => {
            let fix = path.get_ident().map_or_else(
                || format!("arguments are written `name = value`; {}", expected()),
                |ident| format!("`{ident}` needs a value; write `{ident} = ...`"),
            );
            diag.error(&path, fix);
            return None;
        }
        Meta::List(list) => {
            diag.error(
                &list,
                format!(
                    "arguments are written `name = value`, not `name(...)`; {}",
                    expected()
                ),
            );
            return None;
        }
    };
    match path.get_ident() {
        Some(ident) => Some((ident.clone(), value)),
        None => {
            diag.error(&path, format!("unknown argument; {}", expected()));
            None
        }
    }
}

fn threshold(value: &Expr, diag: &mut Diag) -> Option<(u16, Span)> {
    integer(
        &IntegerArg {
            name: "threshold",
            ty: "u16",
            example: "655",
            range: THRESHOLD_RANGE,
        },
        value,
        diag,
    )
}

fn max_per_minute(value: &Expr, diag: &mut Diag) -> Option<(u32, Span)> {
    integer(
        &IntegerArg {
            name: "max_per_minute",
            ty: "u32",
            example: "10",
            range: "`max_per_minute` must be 0..=4294967295 profiles per minute; 0 turns the cap off, 10 is the default",
        },
        value,
        diag,
    )
}

/// How an integer argument is named in its errors.
struct IntegerArg {
    name: &'static str,
    /// The Rust type it fits, and the only suffix accepted.
    ty: &'static str,
    example: &'static str,
    /// The message for a value outside the type, negative ones included.
    range: &'static str,
}

/// An integer literal that fits `T`, optionally suffixed with `arg.ty`.
fn integer<T>(arg: &IntegerArg, value: &Expr, diag: &mut Diag) -> Option<(T, Span)>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let int = match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => int,
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr,
            ..
        }) if matches!(
            &**expr,
            Expr::Lit(ExprLit {
                lit: Lit::Int(_),
                ..
            })
        ) =>
        {
            diag.error(value, arg.range);
            return None;
        }
        _ => {
            let IntegerArg { name, example, .. } = arg;
            diag.error(
                value,
                format!("`{name}` takes an integer literal; write `{name} = {example}` (a `const` cannot be read by the attribute)"),
            );
            return None;
        }
    };
    if !(int.suffix().is_empty() || int.suffix() == arg.ty) {
        diag.error(
            int,
            format!(
                "`{}` is a {}, not a `{}`; write it without the suffix",
                arg.name,
                arg.ty,
                int.suffix()
            ),
        );
        return None;
    }
    match int.base10_parse::<T>() {
        Ok(v) => Some((v, int.span())),
        Err(_) => {
            diag.error(int, arg.range);
            None
        }
    }
}

fn sample_rate(value: &Expr, diag: &mut Diag) -> Option<(u16, Span)> {
    let parsed = match value {
        Expr::Lit(ExprLit {
            lit: Lit::Float(float),
            ..
        }) => parse_float(float),
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => parse_int_as_rate(int),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_), ..
        }) => Err(SAMPLE_RATE_RANGE.to_owned()),
        _ => Err("`sample_rate` takes a float literal; write `sample_rate = 0.01`".to_owned()),
    };
    let rate = match parsed {
        Ok(rate) => rate,
        Err(message) => {
            diag.error(value, message);
            return None;
        }
    };
    let Some(threshold) = xrayprofile_rules::threshold_from_rate(rate) else {
        diag.error(value, SAMPLE_RATE_RANGE);
        return None;
    };
    Some((threshold, value.span()))
}

fn parse_float(float: &LitFloat) -> Result<f64, String> {
    if !matches!(float.suffix(), "" | "f64" | "f32") {
        return Err(format!(
            "`sample_rate` is a float, not a `{}`; write it without the suffix",
            float.suffix()
        ));
    }
    float
        .base10_parse::<f64>()
        .map_err(|_| SAMPLE_RATE_RANGE.to_owned())
}

/// `sample_rate = 1` reads naturally; accept integer literals 0 and 1 so the
/// range check can answer them.
fn parse_int_as_rate(int: &LitInt) -> Result<f64, String> {
    match int.base10_parse::<u8>() {
        Ok(v @ (0 | 1)) if int.suffix().is_empty() => Ok(f64::from(v)),
        _ => Err(SAMPLE_RATE_RANGE.to_owned()),
    }
}

fn mode(value: &Expr, diag: &mut Diag) -> Option<(Mode, Span)> {
    let Expr::Lit(ExprLit {
        lit: Lit::Str(lit), ..
    }) = value
    else {
        diag.error(
            value,
            "`mode` takes a string literal; write `mode = \"wall\"` or `mode = \"cpu\"`",
        );
        return None;
    };
    let value = lit.value();
    match xrayprofile_rules::mode(&value) {
        Some(mode) => Some((mode, lit.span())),
        None => {
            diag.error(
                lit,
                format!("unknown mode {value:?}; write `mode = \"wall\"` (where the time went, awaits included; the default) or `mode = \"cpu\"` (CPU time only)"),
            );
            None
        }
    }
}

fn boolean(name: &Ident, value: &Expr, diag: &mut Diag) -> Option<(bool, Span)> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(b), ..
        }) => Some((b.value, b.span)),
        _ => {
            diag.error(value, format!("`{name}` takes `true` or `false`; `{name} = false` writes addresses for offline symbolization of stripped binaries"));
            None
        }
    }
}

fn string(name: &Ident, value: &Expr, diag: &mut Diag) -> Option<LitStr> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Some(s.clone()),
        _ => {
            diag.error(value, format!("`{name}` takes a string literal; write `{name} = \"...\"` (a `const` cannot be read by the attribute)"));
            None
        }
    }
}

fn check(
    lit: &LitStr,
    rule: fn(&str) -> Option<&'static str>,
    what: &str,
    diag: &mut Diag,
) -> bool {
    match rule(&lit.value()) {
        Some(problem) => {
            diag.error(lit, format!("{what}: it {problem}"));
            false
        }
        None => true,
    }
}

/// The argument name closest to `unknown`, if it is a plausible typo.
fn did_you_mean(unknown: &str) -> Option<&'static str> {
    let lower = unknown.to_ascii_lowercase();
    ARGUMENTS
        .iter()
        .map(|name| (edit_distance(&lower, name), *name))
        .filter(|(distance, name)| *distance <= (name.len() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

/// Levenshtein distance, for "did you mean" only.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous
                .get(j)
                .map_or(usize::MAX, |d| d + usize::from(ca != *cb));
            let insert = current.get(j).map_or(usize::MAX, |d| d + 1);
            let delete = previous.get(j + 1).map_or(usize::MAX, |d| d + 1);
            current.push(substitute.min(insert).min(delete));
        }
        previous = current;
    }
    previous.last().copied().unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> (Args, Vec<String>) {
        let raw: RawArgs = syn::parse_str(src).unwrap();
        let mut diag = Diag::default();
        let args = Args::from_raw(raw, &mut diag);
        (args, diag.messages())
    }

    #[test]
    fn all_arguments() {
        let (args, errors) = parse(r#"threshold = 0x28F, bucket = "my-profiles", prefix = "p/""#);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(args.threshold.map(|t| t.0), Some(655));
        assert_eq!(
            args.bucket.map(|b| b.value()).as_deref(),
            Some("my-profiles")
        );
        assert_eq!(args.prefix.map(|p| p.value()).as_deref(), Some("p/"));
    }

    #[test]
    fn every_mistake_is_reported() {
        let (_, errors) = parse(
            r#"treshold = 1, threshold = 70000, bucket = "My_Bucket", prefix = 3, threshold = 1, bucket"#,
        );
        assert_eq!(errors.len(), 6, "{errors:?}");
        assert!(
            errors[0].contains("unknown argument `treshold`; did you mean `threshold`?"),
            "{errors:?}"
        );
        assert!(errors[1].contains("0..=65535"));
        assert!(errors[2].contains("lower-case"));
        assert!(errors[3].contains("string literal"));
        assert!(errors[4].contains("given twice"));
        assert!(errors[5].contains("needs a value"));
    }

    #[test]
    fn threshold_forms() {
        let (args, errors) = parse("threshold = 65_535u16");
        assert!(errors.is_empty());
        assert_eq!(args.threshold.map(|t| t.0), Some(65535));
        for (bad, message) in [
            ("threshold = \"655\"", "integer literal"),
            ("threshold = N", "integer literal"),
            ("threshold = -1", "0..=65535"),
            ("threshold = 65536", "0..=65535"),
            ("threshold = 1u32", "not a `u32`"),
            ("threshold = 1.5", "integer literal"),
        ] {
            let (args, errors) = parse(bad);
            assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
            assert!(errors[0].contains(message), "{bad}: {errors:?}");
            assert!(args.threshold.is_none());
        }
    }

    #[test]
    fn sample_rate_becomes_a_threshold() {
        for (rate, threshold) in [
            ("0.01", 655),
            ("0.1", 6553),
            ("1.0", 65535),
            ("1", 65535),
            ("0.5", 32767),
            ("1e-5", 0),
        ] {
            let (args, errors) = parse(&format!("sample_rate = {rate}"));
            assert!(errors.is_empty(), "{rate}: {errors:?}");
            assert_eq!(args.threshold.map(|t| t.0), Some(threshold), "{rate}");
        }
        for bad in ["0.0", "0", "1.5", "-0.1", "\"0.1\"", "RATE", "2"] {
            let (args, errors) = parse(&format!("sample_rate = {bad}"));
            assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
            assert!(args.threshold.is_none());
        }
        let (_, errors) = parse("threshold = 655, sample_rate = 0.01");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("keep one"));
    }

    #[test]
    fn max_per_minute_forms() {
        let (args, errors) = parse("max_per_minute = 0");
        assert!(errors.is_empty());
        assert_eq!(args.max_per_minute.map(|m| m.0), Some(0));
        for bad in [
            "max_per_minute = -1",
            "max_per_minute = \"10\"",
            "max_per_minute = 5000000000",
            "max_per_minute = 1u8",
        ] {
            let (args, errors) = parse(bad);
            assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
            assert!(args.max_per_minute.is_none());
        }
        assert_eq!(did_you_mean("max_per_min"), Some("max_per_minute"));
    }

    #[test]
    fn did_you_mean_close_names_only() {
        assert_eq!(did_you_mean("treshold"), Some("threshold"));
        assert_eq!(did_you_mean("Threshold"), Some("threshold"));
        assert_eq!(did_you_mean("bukcet"), Some("bucket"));
        assert_eq!(did_you_mean("sample_rte"), Some("sample_rate"));
        assert_eq!(did_you_mean("prefx"), Some("prefix"));
        assert_eq!(did_you_mean("region"), None);
        assert_eq!(did_you_mean("x"), None);
    }

    #[test]
    fn bucket_and_prefix_rules() {
        for (src, message) in [
            (r#"bucket = "ab""#, "3 to 63"),
            (r#"bucket = "-ab""#, "start and end"),
            (r#"bucket = "10.0.0.1""#, "IP address"),
            (r#"prefix = "/p""#, "leading slash"),
            (r#"prefix = "a/../b""#, "`..` segment"),
        ] {
            let (_, errors) = parse(src);
            assert_eq!(errors.len(), 1, "{src}");
            assert!(errors[0].contains(message), "{src}: {errors:?}");
        }
    }

    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../xrayprofile-rules/tests/same_verdict/table.rs"
    ));

    /// The attribute accepts exactly the values the runtime accepts from
    /// `XRAYPROFILE_*` and `ProfileLayer` (the same table is fed to
    /// `xrayprofile`'s `layer.rs` tests).
    #[test]
    fn the_attribute_gives_the_runtimes_verdicts() {
        for &(argument, value, accepted) in SAME_VERDICT {
            let src = if argument == "sample_rate" {
                format!("{argument} = {value}")
            } else {
                format!("{argument} = {value:?}")
            };
            let (args, errors) = parse(&src);
            assert_eq!(errors.is_empty(), accepted, "{src}: {errors:?}");
            let kept = match argument {
                "bucket" => args.bucket.is_some(),
                "prefix" => args.prefix.is_some(),
                "mode" => args.mode.is_some(),
                "sample_rate" => args.threshold.is_some(),
                other => panic!("no compile-time check for `{other}` in the table"),
            };
            assert_eq!(kept, accepted, "{src}");
        }
    }
}
