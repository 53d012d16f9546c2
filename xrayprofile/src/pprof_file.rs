//! The file we write: a gzipped pprof protobuf that says which invocation it
//! came from.
//!
//! The invocation's identity goes in twice: as profile comments, which
//! `go tool pprof -comments` prints, and as `trace_id` / `request_id` labels on
//! every sample, which survive merging the profiles of one trace
//! (`pprof -tagfocus trace_id=...`).

use std::collections::HashMap;
use std::sync::{Mutex, TryLockError};

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
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

/// Deflate's fastest level, as Go's `runtime/pprof` writes its profiles
/// (`gzip.BestSpeed`). On the symbolized profiles of a function the size
/// users run (13–28 KiB of protobuf) it takes 72 µs against the default
/// level's 210 µs, for 5.6 KiB instead of 4.6 KiB (50 profiles of the MI-S
/// bench, `docs/performance.md`): gzip was the largest single cost of
/// building such a profile.
const LEVEL: Compression = Compression::fast();

/// The gzip header `flate2::write::GzEncoder` writes at [`LEVEL`]: no
/// name, no time, "fastest" in the extra flags, unknown OS, so the file is
/// the same bytes `GzEncoder` would write.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255];

/// One deflate compressor for the process, reset before each profile.
/// A fresh one allocates ~240 KiB of tables (miniz_oxide's window, hash
/// chains and code buffer) whose pages the kernel faults in and zeroes
/// again for every ~1 KiB profile: 0.28 ms of CPU per address-level
/// profile on the 2-vCPU VM, against 0.08 ms reused (issue 18 in
/// docs/performance.md). The price: those ~240 KiB stay allocated once a
/// profile was built. Profiles are built one at a time, so it is never
/// contended; if it were, [`gzip`] uses a fresh compressor rather than
/// wait, and a lock poisoned by a panic mid-use is taken anyway: `reset`
/// makes the compressor whole again.
static COMPRESSOR: Mutex<Option<Compress>> = Mutex::new(None);

/// `protobuf`, gzipped, byte for byte what `GzEncoder` at [`LEVEL`]
/// writes. Should compressing fail (it cannot, into a `Vec` with room
/// reserved), the raw protobuf is returned, which `go tool pprof` reads as
/// well.
fn gzip(protobuf: Vec<u8>) -> Vec<u8> {
    let mut shared = match COMPRESSOR.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    };
    let mut own = None;
    let compressor = match shared.as_deref_mut() {
        Some(slot) => slot.get_or_insert_with(new_compressor),
        None => own.insert(new_compressor()),
    };
    compressor.reset();
    match gzip_with(compressor, &protobuf) {
        Some(gzipped) => gzipped,
        None => protobuf,
    }
}

fn new_compressor() -> Compress {
    Compress::new(LEVEL, false)
}

/// The gzip member of `input`: header, raw deflate stream from
/// `compressor` (freshly reset), CRC-32 and length. `None` if the deflate
/// stream did not end (compressing into reserved room cannot fail).
fn gzip_with(compressor: &mut Compress, input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(GZIP_HEADER.len() + input.len() + input.len() / 8 + 64);
    out.extend_from_slice(&GZIP_HEADER);
    // Each round either ends the stream or fills the room it was given;
    // the room doubles, so a handful of rounds is the most any input takes.
    for _ in 0..64 {
        let consumed = usize::try_from(compressor.total_in()).ok()?;
        let rest = input.get(consumed..)?;
        if out.capacity() == out.len() {
            out.reserve(out.len().max(64));
        }
        match compressor.compress_vec(rest, &mut out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => {
                let mut crc = Crc::new();
                crc.update(input);
                out.extend_from_slice(&crc.sum().to_le_bytes());
                // ISIZE: the input's length modulo 2^32, as gzip defines it.
                out.extend_from_slice(&(input.len() as u32).to_le_bytes());
                return Some(out);
            }
            Ok(Status::Ok | Status::BufError) => {}
            Err(_) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use flate2::write::GzEncoder;
    use pprof::protos::Sample;
    use std::io::{Read, Write};

    /// What `GzEncoder` at [`LEVEL`] makes of `input`: the bytes the files
    /// would have without the shared compressor.
    fn gz_encoder(input: &[u8]) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), LEVEL);
        gz.write_all(input).unwrap();
        gz.finish().unwrap()
    }

    /// Inputs of the sizes and kinds a profile has (~1 KiB of protobuf),
    /// and more: empty, repetitive, incompressible and larger than one
    /// deflate block.
    fn inputs() -> Vec<Vec<u8>> {
        let mut noise = Vec::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..300_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            noise.push(x as u8);
        }
        vec![
            Vec::new(),
            b"samples".repeat(150),
            noise[..1024].to_vec(),
            noise,
            (0..200_000_u32)
                .flat_map(|i| (i % 977).to_le_bytes())
                .collect(),
        ]
    }

    #[test]
    fn the_shared_compressor_writes_what_gz_encoder_writes_every_time() {
        // Twice over, in turn: a reset compressor keeps nothing of the
        // previous input.
        for round in 0..2 {
            for input in inputs() {
                let expected = gz_encoder(&input);
                let gzipped = gzip(input.clone());
                assert_eq!(gzipped, expected, "round {round}, {} bytes", input.len());
                let mut raw = Vec::new();
                GzDecoder::new(gzipped.as_slice())
                    .read_to_end(&mut raw)
                    .unwrap();
                assert_eq!(raw, input);
            }
        }
    }

    #[test]
    fn a_busy_or_poisoned_compressor_does_not_stop_gzip() {
        let input = b"location".repeat(100);
        let expected = gz_encoder(&input);
        {
            let _busy = COMPRESSOR.lock().unwrap_or_else(|p| p.into_inner());
            assert_eq!(gzip(input.clone()), expected, "busy: a fresh compressor");
        }
        let _ = std::thread::spawn(|| {
            let _held = COMPRESSOR.lock();
            panic!("poison the compressor's lock");
        })
        .join();
        assert_eq!(gzip(input.clone()), expected, "poisoned: reset and reused");
        assert_eq!(gzip(input), expected);
    }

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
