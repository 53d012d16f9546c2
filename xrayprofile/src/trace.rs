//! The X-Ray trace header and its validated `Root` field.
//!
//! The header comes from whoever called the function (API Gateway and ALB
//! accept `X-Amzn-Trace-Id` from clients), so parsing is total: it never
//! indexes or slices untrusted input, and only a root that matches the X-Ray
//! format exactly is accepted. That validated root is what the sampling key and
//! the S3 object key are built from.

use std::fmt;

/// Length of `1-` + 8 hex + `-` + 24 hex.
const ROOT_LEN: usize = 35;

/// The root's shape: `x` is a hex digit, anything else is itself.
const TEMPLATE: &[u8; ROOT_LEN] = b"1-xxxxxxxx-xxxxxxxxxxxxxxxxxxxxxxxx";

/// A validated X-Ray root trace ID, `1-<8 hex digits>-<24 hex digits>`.
///
/// Stored inline so that reading it costs no allocation on the unsampled path.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TraceRoot([u8; ROOT_LEN]);

/// Why a trace header yields no usable root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TraceError {
    /// The header has no `Root=` field.
    MissingRoot,
    /// The `Root=` field is not `1-<8 hex>-<24 hex>`.
    MalformedRoot,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TraceError::MissingRoot => "the trace header has no `Root=` field",
            TraceError::MalformedRoot => {
                "the trace header's `Root=` is not `1-<8 hex digits>-<24 hex digits>`"
            }
        })
    }
}

impl TraceRoot {
    /// Finds and validates the `Root=` field of a header such as
    /// `Root=1-5759e988-bd862e3fe1be46a9942701F0;Parent=53995c3f42cd8ad8;Sampled=1`.
    ///
    /// Fields may come in any order and surrounding whitespace is ignored. If
    /// `Root=` appears more than once the first one decides, as in the X-Ray SDKs.
    // Inlined (with `parse_bytes` and `sample_key`): called out of line, the
    // 35-byte root went back through memory and its copy stalled on store
    // forwarding in `plan` (perf, P1 in docs/performance.md).
    #[inline]
    pub(crate) fn from_header(header: &str) -> Result<TraceRoot, TraceError> {
        // Bytes and ASCII whitespace, not `str::split`/`trim`: this runs on
        // every invocation, and the char-pattern searchers were most of the
        // unsampled path's cost (perf, P1 in docs/performance.md). A root is
        // ASCII, so nothing a Unicode-aware trim would accept can validate.
        let header = header.as_bytes();
        // Lambda and the X-Ray SDKs put `Root=` first: take it without
        // scanning the other fields (the same result the general path gives).
        // A well-formed root is exactly ROOT_LEN bytes, so look at the byte
        // after it instead of scanning for `;`; anything else (whitespace,
        // junk) takes the general path.
        if let Some(value) = header.strip_prefix(b"Root=")
            && let Some((root, rest)) = value.split_at_checked(ROOT_LEN)
            && (rest.is_empty() || rest.first() == Some(&b';'))
        {
            return TraceRoot::parse_bytes(root);
        }
        let value = header
            .split(|b| *b == b';')
            .filter_map(|field| {
                let mut parts = field.splitn(2, |b| *b == b'=');
                Some((parts.next()?.trim_ascii(), parts.next()?.trim_ascii()))
            })
            .find(|(key, _)| *key == b"Root")
            .map(|(_, value)| value)
            .ok_or(TraceError::MissingRoot)?;
        TraceRoot::parse_bytes(value)
    }

    /// Validates a bare root such as `1-5759e988-bd862e3fe1be46a9942701F0`.
    #[cfg(test)]
    pub(crate) fn parse(value: &str) -> Result<TraceRoot, TraceError> {
        TraceRoot::parse_bytes(value.as_bytes())
    }

    #[inline]
    fn parse_bytes(value: &[u8]) -> Result<TraceRoot, TraceError> {
        let bytes: [u8; ROOT_LEN] = value.try_into().map_err(|_| TraceError::MalformedRoot)?;
        // Every byte is checked against the template without early exit
        // (`fold` with `&`, not `all`): branch-free, so the compiler
        // vectorizes it; this runs on every invocation.
        let well_formed = bytes
            .iter()
            .zip(TEMPLATE.iter())
            .fold(true, |ok, (b, expected)| {
                ok & match expected {
                    b'x' => b.is_ascii_hexdigit(),
                    other => b == other,
                }
            });
        if well_formed {
            Ok(TraceRoot(bytes))
        } else {
            Err(TraceError::MalformedRoot)
        }
    }

    /// The last four hex digits as a number: the sampling key shared with the
    /// Go original, so every function on one trace makes the same decision.
    #[inline]
    pub(crate) fn sample_key(&self) -> u16 {
        self.0[ROOT_LEN - 4..]
            .iter()
            .fold(0u16, |key, b| (key << 4) | u16::from(hex_value(*b)))
    }

    /// The root as text; only ASCII hex digits, `1` and `-`, so it is safe in
    /// an object key.
    pub(crate) fn as_str(&self) -> &str {
        // Validated as ASCII in `parse`, so this never takes the fallback.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

impl fmt::Display for TraceRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TraceRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceRoot({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "1-5759e988-bd862e3fe1be46a9942701F0";

    #[test]
    fn parses_the_documented_header() {
        let root =
            TraceRoot::from_header(&format!("Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=1"))
                .unwrap();
        assert_eq!(root.as_str(), ROOT);
        assert_eq!(root.sample_key(), 0x01F0);
    }

    #[test]
    fn fields_in_any_order_with_lineage_and_spaces() {
        let header = format!(
            "Lineage=a87bd80c:1|68fd508a:5;Parent=53995c3f42cd8ad8; Root={ROOT} ;Sampled=0"
        );
        assert_eq!(TraceRoot::from_header(&header).unwrap().as_str(), ROOT);
    }

    #[test]
    fn leading_root_fast_path_agrees_with_the_general_parse() {
        for header in [
            format!("Root={ROOT}"),
            format!("Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=1"),
            format!("Root={ROOT} ;Sampled=1"),
            format!("Root= {ROOT};Sampled=1"),
            format!("Root={ROOT}\t"),
        ] {
            assert_eq!(
                TraceRoot::from_header(&header).unwrap().as_str(),
                ROOT,
                "{header:?}"
            );
        }
        for header in [
            format!("Root={ROOT}0"),
            format!("Root={ROOT}0;Sampled=1"),
            format!("Root={}", &ROOT[..34]),
        ] {
            assert_eq!(
                TraceRoot::from_header(&header),
                Err(TraceError::MalformedRoot),
                "{header:?}"
            );
        }
    }

    #[test]
    fn first_root_wins() {
        let header = format!("Root={ROOT};Root=1-00000000-000000000000000000000000");
        assert_eq!(TraceRoot::from_header(&header).unwrap().as_str(), ROOT);
    }

    #[test]
    fn upper_and_lower_case_hex_give_the_same_key() {
        let lower = TraceRoot::parse("1-5759e988-bd862e3fe1be46a9942701f0").unwrap();
        let upper = TraceRoot::parse("1-5759E988-BD862E3FE1BE46A9942701F0").unwrap();
        assert_eq!(lower.sample_key(), upper.sample_key());
        assert_eq!(
            TraceRoot::parse("1-00000000-00000000000000000000ffff")
                .unwrap()
                .sample_key(),
            65535
        );
    }

    #[test]
    fn missing_root_is_an_error() {
        for header in [
            "",
            ";",
            "Parent=53995c3f42cd8ad8;Sampled=1",
            "Root",
            "Rooted=1",
            "=;=;=",
        ] {
            assert_eq!(
                TraceRoot::from_header(header),
                Err(TraceError::MissingRoot),
                "{header:?}"
            );
        }
    }

    #[test]
    fn malformed_roots_are_errors_not_panics() {
        let bad = [
            "Root=",
            "Root=1",
            "Root=1-5759e988-bd862e3fe1be46a9942701F", // truncated
            "Root=1-5759e988-bd862e3fe1be46a9942701F00", // too long
            "Root=1-5759e988-bd862e3fe1be46a9942701G0", // not hex
            "Root=2-5759e988-bd862e3fe1be46a9942701F0", // wrong version
            "Root=1_5759e988-bd862e3fe1be46a9942701F0",
            "Root=1-5759e988_bd862e3fe1be46a9942701F0",
            "Root=1-5759e98/-bd862e3fe1be46a9942701F0",
            "Root=1-5759e988-bd862e3fe1be46a99427/../0",
            "Root=1-5759e988-bd862e3fe1be46a99427é1F", // multibyte, 35 bytes
        ];
        for header in bad {
            assert_eq!(
                TraceRoot::from_header(header),
                Err(TraceError::MalformedRoot),
                "{header:?}"
            );
        }
    }

    /// Property tests over generated headers: parsing is total, and whatever
    /// it accepts is a well-formed root that is safe in an object key.
    mod fuzz {
        use super::*;
        use crate::object_key::{ObjectKey, RequestId};
        use crate::untrusted::truncate_for_log;
        use proptest::prelude::*;

        const VALID: &str = "1-5759e988-bd862e3fe1be46a9942701f0";

        /// What a well-formed root is, written independently of `parse`
        /// (over chars, not bytes) so the two can disagree if either is wrong.
        fn reference_is_root(text: &str) -> bool {
            let chars: Vec<char> = text.chars().collect();
            chars.len() == 35
                && chars.iter().enumerate().all(|(i, c)| match i {
                    0 => *c == '1',
                    1 | 10 => *c == '-',
                    _ => c.is_ascii_hexdigit(),
                })
        }

        /// A valid root with one edit: a character replaced, inserted or
        /// removed, or the root cut short, using the characters an attacker
        /// would try in a key.
        fn near_valid_root() -> impl Strategy<Value = String> {
            let nasty = prop::sample::select(vec![
                '/', '.', '\0', '\n', '\r', '\u{7f}', '\u{202e}', 'é', 'g', 'G', '-', ' ', '%',
                ';', '=', '0', 'f', 'F',
            ]);
            (0usize..36, nasty, 0u8..4).prop_map(|(at, c, op)| {
                let mut chars: Vec<char> = VALID.chars().collect();
                let at = at.min(chars.len());
                match op {
                    0 if at < chars.len() => chars[at] = c,
                    1 => chars.insert(at, c),
                    2 if at < chars.len() => {
                        chars.remove(at);
                    }
                    _ => chars.truncate(at),
                }
                chars.into_iter().collect()
            })
        }

        fn header() -> impl Strategy<Value = String> {
            prop_oneof![
                // Random bytes, as a lossy string (what a proxy might pass on).
                4 => prop::collection::vec(any::<u8>(), 0..256)
                    .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
                // Arbitrary unicode.
                3 => any::<String>(),
                // Runs of separators.
                2 => "[;= \t]{0,64}",
                // `Root=` repeated, with junk and valid roots among them.
                3 => prop::collection::vec(
                    prop_oneof![
                        Just(format!("Root={VALID}")),
                        "Root=[^;]{0,40}",
                        near_valid_root().prop_map(|r| format!("Root={r}")),
                        "[A-Za-z]{1,8}=[^;]{0,16}",
                    ],
                    1..8,
                )
                .prop_map(|fields| fields.join(";")),
                // Near-valid roots in an otherwise normal header.
                6 => near_valid_root()
                    .prop_map(|r| format!("Root={r};Parent=53995c3f42cd8ad8;Sampled=1")),
                // Huge: up to 1 MiB of a repeated fragment.
                1 => ("(Root=|;|=|[ -~]){1,8}", 1usize..131_072)
                    .prop_map(|(fragment, n)| fragment.repeat(n).chars().take(1 << 20).collect()),
            ]
        }

        fn assert_key_safe(root: &TraceRoot) {
            assert!(reference_is_root(root.as_str()), "{root:?}");
            let id = RequestId::parse("8476a536-e9f4-11e8-9739-2dfe598c3fcd").unwrap();
            let key = ObjectKey::new("profiles", root, &id);
            let key = key.as_str();
            assert!(!key.contains(".."), "{key:?}");
            assert!(!key.chars().any(char::is_control), "{key:?}");
            let segments: Vec<&str> = key.split('/').collect();
            assert_eq!(segments.len(), 3, "{key:?}");
            assert_eq!(segments[1], root.as_str());
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(10_000))]

            #[test]
            fn any_header_parses_without_panic_to_a_key_safe_root(header in header()) {
                if let Ok(root) = TraceRoot::from_header(&header) {
                    assert_key_safe(&root);
                }
                prop_assert!(truncate_for_log(&header).chars().count() <= 128);
            }

            #[test]
            fn a_near_valid_root_is_accepted_exactly_when_it_is_valid(root in near_valid_root()) {
                let header = format!("Parent=53995c3f42cd8ad8;Root={root};Sampled=1");
                let parsed = TraceRoot::from_header(&header);
                // A `;` the edit added ends the field there.
                let field = root.split(';').next().unwrap_or_default();
                prop_assert_eq!(parsed.is_ok(), reference_is_root(field.trim()), "{:?}", root);
                if let Ok(parsed) = parsed {
                    assert_key_safe(&parsed);
                }
            }
        }

        #[test]
        fn one_mebibyte_headers_are_refused_quickly_and_whole() {
            let huge = [
                "Root=".repeat(1 << 18),
                ";".repeat(1 << 20),
                "=".repeat(1 << 20),
                format!("Root={}", "1".repeat(1 << 20)),
                format!("{};Root={VALID}", "a=b;".repeat(1 << 18)),
                "é".repeat(1 << 19),
            ];
            for header in &huge {
                let parsed = TraceRoot::from_header(header);
                if header.ends_with(VALID) {
                    assert_eq!(parsed.map(|r| r.as_str().to_owned()), Ok(VALID.to_owned()));
                } else {
                    assert!(parsed.is_err(), "{}", truncate_for_log(header));
                }
            }
        }
    }
}
