//! The attribute's arguments: `threshold = <u16>`, `bucket = "<name>"`,
//! `prefix = "<key prefix>"`, all optional, in any order, each at most once.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Ident, Lit, LitStr, Meta, Token};

use crate::diag::Diag;

const EXPECTED: &str = "expected one of `threshold`, `bucket`, `prefix`";

/// The parsed arguments; `None` where the attribute is silent.
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) threshold: Option<(u16, Span)>,
    pub(crate) bucket: Option<LitStr>,
    pub(crate) prefix: Option<LitStr>,
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
        for meta in raw.0 {
            let (name, value) = match meta {
                Meta::NameValue(nv) => (nv.path, nv.value),
                Meta::Path(path) => {
                    let fix = path.get_ident().map_or_else(
                        || format!("arguments are written `name = value`; {EXPECTED}"),
                        |ident| format!("`{ident}` needs a value; write `{ident} = ...`"),
                    );
                    diag.error(&path, fix);
                    continue;
                }
                Meta::List(list) => {
                    diag.error(
                        &list,
                        format!("arguments are written `name = value`; {EXPECTED}"),
                    );
                    continue;
                }
            };
            let Some(ident) = name.get_ident().cloned() else {
                diag.error(&name, format!("unknown argument; {EXPECTED}"));
                continue;
            };
            if let Some(first) = seen.iter().find(|s| **s == ident) {
                diag.error(&ident, format!("`{first}` is given twice; keep one"));
                continue;
            }
            seen.push(ident.clone());
            if ident == "threshold" {
                args.threshold = threshold(&value, diag);
            } else if ident == "bucket" {
                args.bucket = string(&ident, &value, diag).filter(|lit| check_bucket(lit, diag));
            } else if ident == "prefix" {
                args.prefix = string(&ident, &value, diag).filter(|lit| check_prefix(lit, diag));
            } else {
                diag.error(&ident, format!("unknown argument `{ident}`; {EXPECTED}"));
            }
        }
        args
    }
}

fn threshold(value: &Expr, diag: &mut Diag) -> Option<(u16, Span)> {
    const RANGE: &str = "`threshold` must be 0..=65535 (it is compared with the trace ID's last 4 hex digits); 655 profiles about 1 % of invocations";
    let Expr::Lit(ExprLit {
        lit: Lit::Int(int), ..
    }) = value
    else {
        diag.error(
            value,
            "`threshold` takes an integer literal; write `threshold = 655`",
        );
        return None;
    };
    if !matches!(int.suffix(), "" | "u16") {
        diag.error(
            int,
            format!(
                "`threshold` is a u16, not a `{}`; write it without a suffix",
                int.suffix()
            ),
        );
        return None;
    }
    match int.base10_parse::<u16>() {
        Ok(v) => Some((v, int.span())),
        Err(_) => {
            diag.error(int, RANGE);
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
            diag.error(
                value,
                format!("`{name}` takes a string literal; write `{name} = \"...\"`"),
            );
            None
        }
    }
}

fn check_bucket(lit: &LitStr, diag: &mut Diag) -> bool {
    let name = lit.value();
    let bytes = name.as_bytes();
    let alnum = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    let problem = if !(3..=63).contains(&bytes.len()) {
        Some("it must be 3 to 63 characters long")
    } else if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
    {
        Some("only lower-case letters, digits, `.` and `-` are allowed")
    } else if !alnum(bytes.first()) || !alnum(bytes.last()) {
        Some("it must start and end with a letter or digit")
    } else if name.contains("..") {
        Some("it must not contain two adjacent periods")
    } else if name.parse::<std::net::Ipv4Addr>().is_ok() {
        Some("it must not be formatted as an IP address")
    } else {
        None
    };
    if let Some(problem) = problem {
        diag.error(
            lit,
            format!("`bucket` is not a valid S3 bucket name: {problem}"),
        );
    }
    problem.is_none()
}

fn check_prefix(lit: &LitStr, diag: &mut Diag) -> bool {
    let prefix = lit.value();
    let problem = if prefix.len() > 512 {
        Some("it is longer than 512 bytes")
    } else if prefix.starts_with('/') {
        Some("it starts with `/`; S3 keys have no leading slash")
    } else if prefix.split('/').any(|s| s == ".." || s == ".") {
        Some("it has a `.` or `..` segment")
    } else if prefix.chars().any(char::is_control) {
        Some("it contains a control character")
    } else {
        None
    };
    if let Some(problem) = problem {
        diag.error(
            lit,
            format!("`prefix` cannot start an object key: {problem}"),
        );
    }
    problem.is_none()
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
        assert!(errors[0].contains("unknown argument `treshold`"));
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
        for bad in [
            "threshold = \"655\"",
            "threshold = N",
            "threshold = -1",
            "threshold = 1u32",
            "threshold = 1.5",
        ] {
            let (args, errors) = parse(bad);
            assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
            assert!(args.threshold.is_none());
        }
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
}
