//! Reading a selection of profiles into one merged profile, as every
//! reporting command (`merge`, `top`, `flamegraph`, `diff`) does.

use std::path::PathBuf;

use pprof::protos::Profile;

use crate::args::Select;
use crate::console;
use crate::error::{CliError, CliResult};
use crate::filter::Filter;
use crate::merge::Merger;
use crate::profile_file;
use crate::source::Source;

/// A selection read and merged.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The merged profile.
    pub(crate) profile: Profile,
    /// How many profiles went into it.
    pub(crate) count: usize,
}

/// Opens the source `select` and `files` name, selects with `filter`, and
/// merges what it reads. Files that are not profiles are skipped with a
/// warning.
///
/// # Errors
/// The source cannot be opened or listed, nothing is selected, nothing
/// selected is a profile, or the profiles' sample types differ.
pub(crate) async fn load(select: &Select, files: &[PathBuf], filter: &Filter) -> CliResult<Loaded> {
    let source = Source::open(files, select.dir.as_ref(), &select.s3()).await?;
    let entries = source.select_some(filter).await?;
    let mut merger = Merger::new();
    source
        .read_all(&entries, select.jobs, |entry, bytes| {
            match profile_file::decode(&bytes) {
                Ok(profile) => merger.add(&entry.key, &profile)?,
                Err(err) => console::warn(&format!("skipped `{}`: {err}", entry.key)),
            }
            Ok(())
        })
        .await?;
    let count = merger.count();
    let profile = merger.finish().ok_or_else(|| {
        CliError::new(format!(
            "none of the {} selected files in {} is a readable profile (see the warnings above)",
            entries.len(),
            source.describe()
        ))
    })?;
    Ok(Loaded { profile, count })
}
