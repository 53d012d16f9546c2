//! The file we write: a gzipped pprof protobuf that says which invocation it
//! came from.
//!
//! The invocation's identity goes in twice: as profile comments, which
//! `go tool pprof -comments` prints, and as `trace_id` / `request_id` labels on
//! every sample, which survive merging the profiles of one trace
//! (`pprof -tagfocus trace_id=...`).

use std::collections::HashMap;
use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use pprof::protos::{Label, Message, Profile};

/// Who produced a profile; written into the file and the object metadata.
#[derive(Debug, Clone)]
pub(crate) struct Identity<'a> {
    pub(crate) trace_id: &'a str,
    pub(crate) request_id: &'a str,
    pub(crate) function_name: &'a str,
    pub(crate) function_version: &'a str,
    /// `ok` or `error`: what the handler returned.
    pub(crate) outcome: &'static str,
}

impl Identity<'_> {
    /// The object metadata stored beside the file: who produced it, how
    /// long it ran (`duration`) and its CPU samples.
    pub(crate) fn metadata(
        &self,
        duration: std::time::Duration,
        samples: i64,
    ) -> HashMap<&'static str, String> {
        HashMap::from([
            ("trace-id", self.trace_id.to_owned()),
            ("request-id", self.request_id.to_owned()),
            ("function-name", self.function_name.to_owned()),
            ("function-version", self.function_version.to_owned()),
            ("duration-ms", duration.as_millis().to_string()),
            ("samples", samples.to_string()),
            ("outcome", self.outcome.to_owned()),
        ])
    }
}

/// An encoded profile, ready to store.
#[derive(Debug)]
pub(crate) struct PprofFile {
    /// Gzipped protobuf, as `go tool pprof` reads it.
    pub(crate) gzipped: Vec<u8>,
    /// CPU samples in the profile.
    pub(crate) samples: i64,
}

/// Adds the identity to `profile` (which holds `samples` CPU samples) and
/// encodes it.
pub(crate) fn encode(mut profile: Profile, samples: i64, identity: &Identity<'_>) -> PprofFile {
    let mut intern = |text: &str| -> i64 {
        let index = profile
            .string_table
            .iter()
            .position(|s| s == text)
            .unwrap_or_else(|| {
                profile.string_table.push(text.to_owned());
                profile.string_table.len() - 1
            });
        i64::try_from(index).unwrap_or(0)
    };
    let comments = [
        intern(&format!("trace_id={}", identity.trace_id)),
        intern(&format!("request_id={}", identity.request_id)),
        intern(&format!(
            "function={}:{}",
            identity.function_name, identity.function_version
        )),
        intern(&format!("outcome={}", identity.outcome)),
    ];
    let labels = [
        Label {
            key: intern("trace_id"),
            str: intern(identity.trace_id),
            ..Label::default()
        },
        Label {
            key: intern("request_id"),
            str: intern(identity.request_id),
            ..Label::default()
        },
    ];
    profile.comment.extend(comments);
    for sample in &mut profile.sample {
        sample.label.extend(labels.iter().cloned());
    }

    PprofFile {
        gzipped: gzip(profile.encode_to_vec()),
        samples,
    }
}

/// `protobuf`, gzipped. flate2 reports only the errors of the writer it
/// wraps, and writing into a `Vec` cannot fail; should that ever change, the
/// raw protobuf is returned, which `go tool pprof` reads as well.
fn gzip(protobuf: Vec<u8>) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    match gz.write_all(&protobuf).and_then(|()| gz.finish()) {
        Ok(gzipped) => gzipped,
        Err(_) => protobuf,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use pprof::protos::Sample;
    use std::io::Read;

    #[test]
    fn identity_becomes_comments_and_labels() {
        let profile = Profile {
            string_table: vec![String::new(), "samples".into()],
            sample: vec![
                Sample {
                    value: vec![3, 30],
                    ..Sample::default()
                },
                Sample {
                    value: vec![2, 20],
                    ..Sample::default()
                },
            ],
            ..Profile::default()
        };
        let identity = Identity {
            trace_id: "1-5759e988-bd862e3fe1be46a9942701f0",
            request_id: "req-1",
            function_name: "fn",
            function_version: "$LATEST",
            outcome: "error",
        };
        let file = encode(profile, 5, &identity);

        let mut raw = Vec::new();
        GzDecoder::new(file.gzipped.as_slice())
            .read_to_end(&mut raw)
            .unwrap();
        let decoded = Profile::decode(raw.as_slice()).unwrap();
        let text = |i: i64| decoded.string_table[usize::try_from(i).unwrap()].as_str();
        let comments: Vec<&str> = decoded.comment.iter().map(|c| text(*c)).collect();
        assert_eq!(
            comments,
            [
                "trace_id=1-5759e988-bd862e3fe1be46a9942701f0",
                "request_id=req-1",
                "function=fn:$LATEST",
                "outcome=error"
            ]
        );
        for sample in &decoded.sample {
            let labels: Vec<(&str, &str)> = sample
                .label
                .iter()
                .map(|l| (text(l.key), text(l.str)))
                .collect();
            assert_eq!(
                labels,
                [("trace_id", identity.trace_id), ("request_id", "req-1")]
            );
        }
    }
}
