//! `xrayprofile fetch -o DIR`: downloads the selection as
//! `DIR/{trace root}/{request id}.pprof`, a few at a time. A file already
//! there with the same size (and, for S3, the same MD5 as the object's
//! ETag) is skipped, so an interrupted fetch resumes where it stopped.

use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use crate::args::Select;
use crate::console;
use crate::error::{CliError, CliResult};
use crate::source::{Entry, Source};

/// Fetches the selection into `output`.
///
/// # Errors
/// The source cannot be read, nothing is selected, or a file cannot be
/// written.
pub(crate) async fn run(select: &Select, output: &Path) -> CliResult<()> {
    let source = Source::open(&[], select.dir.as_ref(), &select.s3()).await?;
    let entries = source.select_some(&select.filter.filter()).await?;
    let mut wanted = Vec::new();
    let mut present = 0_usize;
    for entry in entries {
        let Some(path) = destination(output, &entry) else {
            console::warn(&format!(
                "skipped `{}`: its key is not `{{trace root}}/{{request id}}.pprof` and it has no metadata naming them",
                entry.key
            ));
            continue;
        };
        if already_there(&path, &entry) {
            present += 1;
        } else {
            wanted.push(entry);
        }
    }
    let mut written = 0_usize;
    source
        .read_all(&wanted, select.jobs, |entry, bytes| {
            let path = destination(output, entry).unwrap_or_else(|| output.join("unnamed.pprof"));
            write(&path, &bytes, entry.written)?;
            written += 1;
            Ok(())
        })
        .await?;
    console::note(&format!(
        "fetched {written} profiles into {}; {present} already there",
        output.display()
    ));
    Ok(())
}

/// `output/{trace root}/{request id}.pprof`, if both are safe path
/// segments (keys and metadata come from the bucket: not trusted).
fn destination(output: &Path, entry: &Entry) -> Option<PathBuf> {
    let safe = |s: &str| {
        (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let trace = entry.info.trace_id.as_deref().filter(|t| safe(t))?;
    let request = entry.info.request_id.as_deref().filter(|r| safe(r))?;
    Some(output.join(trace).join(format!("{request}.pprof")))
}

/// Whether `path` already holds this entry: same size, and the same MD5 as
/// a single-part upload's ETag.
fn already_there(path: &Path, entry: &Entry) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if meta.len() != entry.size {
        return false;
    }
    let Some(etag) = entry.etag.as_deref().map(|e| e.trim_matches('"')) else {
        return true;
    };
    if etag.len() != 32 || !etag.bytes().all(|b| b.is_ascii_hexdigit()) {
        // A multipart ETag is not an MD5 of the content; the size matched.
        return true;
    }
    std::fs::read(path).is_ok_and(|bytes| {
        let digest = Md5::digest(&bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        hex.eq_ignore_ascii_case(etag)
    })
}

/// Writes through a temporary name, so a fetch cut short never leaves a
/// partial file that looks complete; the file's mtime is when the profile
/// was written, so `list --dir` shows the same times as S3.
fn write(path: &Path, bytes: &[u8], written: std::time::SystemTime) -> CliResult<()> {
    let fail = |e: std::io::Error| {
        CliError::new(format!(
            "cannot write `{}`: {e}; check that the output directory is writable",
            path.display()
        ))
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    let partial = path.with_extension("pprof.partial");
    std::fs::write(&partial, bytes).map_err(fail)?;
    std::fs::File::options()
        .write(true)
        .open(&partial)
        .and_then(|f| f.set_modified(written))
        .map_err(fail)?;
    std::fs::rename(&partial, path).map_err(fail)
}
