//! Reading and writing pprof files: gzipped (or plain) protobuf, decoded with
//! the `pprof` crate's prost types.
//!
//! Files in a bucket are not trusted. Inflating stops at [`MAX_PROFILE_BYTES`]
//! (a gzip bomb of a few KiB that unzips to gigabytes is refused, and memory
//! stays bounded), and a file that decodes but is not shaped like a profile
//! (no sample types, no empty string first) is refused too.

use std::fmt;
use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use pprof::protos::Profile;
use prost::Message;

/// The most bytes a profile may have, compressed or inflated. The library's
/// own profiles are well under a few MiB (its sample buffer is bounded);
/// 64 MiB leaves room for merged ones.
pub const MAX_PROFILE_BYTES: u64 = 64 * 1024 * 1024;

/// Why a file is not a profile we read.
#[derive(Debug)]
pub enum DecodeError {
    /// It starts like gzip but does not inflate.
    CorruptGzip(std::io::Error),
    /// It inflates past [`MAX_PROFILE_BYTES`].
    TooLarge,
    /// It is not a pprof protobuf.
    NotPprof(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::CorruptGzip(err) => write!(f, "corrupt gzip ({err})"),
            DecodeError::TooLarge => write!(
                f,
                "it inflates past {} MiB, far more than any profile (a gzip bomb?); refused",
                MAX_PROFILE_BYTES / (1024 * 1024)
            ),
            DecodeError::NotPprof(why) => write!(f, "not a pprof file ({why})"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Inflates (if gzipped) and decodes a profile, reading at most
/// [`MAX_PROFILE_BYTES`] of inflated data.
///
/// # Errors
/// [`DecodeError`] when the bytes are not a readable profile.
pub fn decode(bytes: &[u8]) -> Result<Profile, DecodeError> {
    let inflated;
    let raw: &[u8] = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(bytes)
            .take(MAX_PROFILE_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(DecodeError::CorruptGzip)?;
        if out.len() as u64 > MAX_PROFILE_BYTES {
            return Err(DecodeError::TooLarge);
        }
        inflated = out;
        &inflated
    } else if bytes.len() as u64 > MAX_PROFILE_BYTES {
        return Err(DecodeError::TooLarge);
    } else {
        bytes
    };
    let profile = Profile::decode(raw).map_err(|e| DecodeError::NotPprof(e.to_string()))?;
    if profile.string_table.first().map(String::as_str) != Some("") {
        return Err(DecodeError::NotPprof(
            "its string table does not start with the empty string".into(),
        ));
    }
    if profile.sample_type.is_empty() {
        return Err(DecodeError::NotPprof("it has no sample types".into()));
    }
    Ok(profile)
}

/// Encodes and gzips a profile, as `go tool pprof` writes them.
///
/// # Errors
/// Only if compressing into memory fails.
pub fn encode(profile: &Profile) -> std::io::Result<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&profile.encode_to_vec())?;
    gz.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pprof::protos::ValueType;

    fn small() -> Profile {
        Profile {
            string_table: vec![String::new(), "cpu".into(), "nanoseconds".into()],
            sample_type: vec![ValueType { ty: 1, unit: 2 }],
            ..Profile::default()
        }
    }

    #[test]
    fn round_trip_gzipped_and_plain() {
        let profile = small();
        let gz = encode(&profile).unwrap();
        assert_eq!(decode(&gz).unwrap(), profile);
        assert_eq!(decode(&profile.encode_to_vec()).unwrap(), profile);
    }

    #[test]
    fn a_gzip_bomb_is_refused() {
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        let zeros = vec![0_u8; 1 << 20];
        for _ in 0..=(MAX_PROFILE_BYTES >> 20) {
            gz.write_all(&zeros).unwrap();
        }
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 200 * 1024, "{} bytes", bomb.len());
        assert!(matches!(decode(&bomb), Err(DecodeError::TooLarge)));
    }

    #[test]
    fn text_and_corrupt_gzip_are_refused() {
        assert!(matches!(
            decode(b"hello, not a profile"),
            Err(DecodeError::NotPprof(_))
        ));
        assert!(matches!(decode(b""), Err(DecodeError::NotPprof(_))));
        let mut gz = encode(&small()).unwrap();
        gz.truncate(gz.len() / 2);
        assert!(matches!(decode(&gz), Err(DecodeError::CorruptGzip(_))));
    }
}
