//! The name a profile is stored under: `{prefix}{trace root}/{request
//! id}.pprof`, built only from a validated trace root and request ID, so no
//! invocation can place an object (or a file) outside its prefix.

use std::fmt;

use crate::trace::TraceRoot;

/// `{prefix}{trace root}/{request id}.pprof`, built only from a validated root
/// and request ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectKey(String);

impl ObjectKey {
    /// Builds the key; a non-empty `prefix` gets a trailing `/` if it has none.
    pub(crate) fn new(prefix: &str, root: &TraceRoot, request_id: &RequestId<'_>) -> ObjectKey {
        let slash = xrayprofile_rules::prefix_separator(prefix);
        ObjectKey(format!("{prefix}{slash}{root}/{}.pprof", request_id.0))
    }

    /// The key as text.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Lambda request ID checked to be safe inside an object key and a path:
/// 1–128 ASCII letters, digits and `-` (Lambda's are UUIDs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestId<'a>(&'a str);

impl<'a> RequestId<'a> {
    /// Returns `None` if `id` could reach outside its place in the key.
    pub(crate) fn parse(id: &'a str) -> Option<RequestId<'a>> {
        let ok = (1..=128).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        ok.then_some(RequestId(id))
    }

    /// The ID as text.
    pub(crate) fn as_str(&self) -> &'a str {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> TraceRoot {
        TraceRoot::parse("1-5759e988-bd862e3fe1be46a9942701f0").unwrap()
    }

    #[test]
    fn key_layout_and_prefix_slash() {
        let id = RequestId::parse("8476a536-e9f4-11e8-9739-2dfe598c3fcd").unwrap();
        let cases = [
            (
                "",
                "1-5759e988-bd862e3fe1be46a9942701f0/8476a536-e9f4-11e8-9739-2dfe598c3fcd.pprof",
            ),
            (
                "profiles",
                "profiles/1-5759e988-bd862e3fe1be46a9942701f0/8476a536-e9f4-11e8-9739-2dfe598c3fcd.pprof",
            ),
            (
                "profiles/",
                "profiles/1-5759e988-bd862e3fe1be46a9942701f0/8476a536-e9f4-11e8-9739-2dfe598c3fcd.pprof",
            ),
            (
                "a/b",
                "a/b/1-5759e988-bd862e3fe1be46a9942701f0/8476a536-e9f4-11e8-9739-2dfe598c3fcd.pprof",
            ),
        ];
        for (prefix, expected) in cases {
            assert_eq!(
                ObjectKey::new(prefix, &root(), &id).as_str(),
                expected,
                "{prefix:?}"
            );
        }
    }

    #[test]
    fn request_ids_that_could_escape_the_key_are_refused() {
        for bad in ["", "../x", "a/b", "a b", "a\nb", "é", &"a".repeat(129)] {
            assert_eq!(RequestId::parse(bad), None, "{bad:?}");
        }
        assert!(RequestId::parse("8476a536-e9f4-11e8-9739-2dfe598c3fcd").is_some());
    }
}
