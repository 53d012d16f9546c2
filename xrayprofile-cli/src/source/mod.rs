//! Where profiles come from: a local directory or files (what
//! `XRAYPROFILE_OUTPUT_DIR` writes, or what `xrayprofile fetch` saved), or an
//! S3 bucket. Both give [`Entry`]s with the same [`ProfileInfo`], so filters,
//! listing and reading work alike on both.

mod local;
mod s3;

use std::path::PathBuf;
use std::time::SystemTime;

use crate::error::{CliError, CliResult};
use crate::filter::Filter;
use crate::info::ProfileInfo;

pub(crate) use s3::{S3Options, S3Source};

/// One profile in a source.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The object key, or the path under the directory that was searched.
    pub(crate) key: String,
    /// Where to read it.
    pub(crate) location: Location,
    /// Its size in bytes, as stored.
    pub(crate) size: u64,
    /// The S3 ETag (quoted, as S3 gives it), for objects.
    pub(crate) etag: Option<String>,
    /// When it was written (S3 `LastModified`, or the file's mtime).
    pub(crate) written: SystemTime,
    /// Who produced it.
    pub(crate) info: ProfileInfo,
}

/// Where an [`Entry`] is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// A local file.
    File(PathBuf),
    /// An object in the source's bucket.
    Object(String),
}

/// A place to read profiles from.
#[derive(Debug)]
pub(crate) enum Source {
    /// Local files, and directories searched recursively.
    Local(Vec<PathBuf>),
    /// An S3 bucket and prefix.
    S3(S3Source),
}

impl Source {
    /// Local `paths` when any are given, else `dir` when given, else S3.
    ///
    /// # Errors
    /// When S3 is chosen and cannot be set up (no credentials, no region for
    /// the default bucket).
    pub(crate) async fn open(
        paths: &[PathBuf],
        dir: Option<&PathBuf>,
        s3: &S3Options,
    ) -> CliResult<Source> {
        if !paths.is_empty() {
            return Ok(Source::Local(paths.to_vec()));
        }
        if let Some(dir) = dir {
            if !dir.is_dir() {
                return Err(CliError::new(format!(
                    "`{}` is not a directory; give --dir the directory XRAYPROFILE_OUTPUT_DIR named (or that `xrayprofile fetch -o` wrote)",
                    dir.display()
                )));
            }
            return Ok(Source::Local(vec![dir.clone()]));
        }
        Ok(Source::S3(S3Source::connect(s3).await?))
    }

    /// The profiles `filter` accepts, newest first (then by key). Files that
    /// are not profiles are skipped with a warning. In S3, each object's
    /// metadata costs a `HeadObject`: it is read when `all_fields` asks for
    /// it or the filter needs it (the trace root and request ID come from
    /// the key).
    ///
    /// # Errors
    /// When the source cannot be listed.
    pub(crate) async fn select(&self, filter: &Filter, all_fields: bool) -> CliResult<Vec<Entry>> {
        let mut entries = match self {
            Source::Local(paths) => local::list(paths)?,
            Source::S3(s3) => {
                s3.list(filter, all_fields || filter.needs_metadata())
                    .await?
            }
        };
        entries.retain(|e| filter.accepts(&e.info, e.written));
        entries.sort_by(|a, b| b.written.cmp(&a.written).then_with(|| a.key.cmp(&b.key)));
        Ok(entries)
    }

    /// [`Source::select`], refusing an empty selection with a message that
    /// says what was searched.
    ///
    /// # Errors
    /// As [`Source::select`], and when nothing is selected.
    pub(crate) async fn select_some(&self, filter: &Filter) -> CliResult<Vec<Entry>> {
        let entries = self.select(filter, false).await?;
        if entries.is_empty() {
            return Err(CliError::new(format!(
                "no profiles {} in {}; widen the filters (`xrayprofile list` shows what there is)",
                if filter.is_set() {
                    "match the filters"
                } else {
                    "found"
                },
                self.describe()
            )));
        }
        Ok(entries)
    }

    /// Reads every entry, `jobs` at a time, and hands each one's bytes to
    /// `consume` as it arrives. An entry that cannot be read locally is
    /// skipped with a warning; an S3 error stops everything.
    ///
    /// # Errors
    /// An S3 error, or the first error `consume` returns.
    pub(crate) async fn read_all(
        &self,
        entries: &[Entry],
        jobs: usize,
        consume: impl FnMut(&Entry, Vec<u8>) -> CliResult<()>,
    ) -> CliResult<()> {
        match self {
            Source::Local(_) => local::read_all(entries, consume),
            Source::S3(s3) => s3.read_all(entries, jobs, consume).await,
        }
    }

    /// `s3://bucket/prefix` or the local paths, for messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Source::Local(paths) => paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            Source::S3(s3) => s3.describe(),
        }
    }
}

/// The trace root and request ID in a key shaped
/// `{prefix}{trace root}/{request id}.pprof`.
pub(crate) fn ids_from_key(key: &str) -> (Option<String>, Option<String>) {
    let mut parts = key.rsplit('/');
    let request = parts
        .next()
        .and_then(|file| file.strip_suffix(".pprof"))
        .filter(|r| !r.is_empty())
        .map(str::to_owned);
    let trace = parts
        .next()
        .filter(|t| t.starts_with("1-"))
        .map(str::to_owned);
    (trace, request)
}
