//! Profiles in local files and directories. There is no object metadata
//! here, so each file is read and its comments give its [`ProfileInfo`].

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{Entry, Location};
use crate::console;
use crate::error::{CliError, CliResult};
use crate::info::ProfileInfo;
use crate::profile_file::{self, MAX_PROFILE_BYTES};

/// Every readable profile under `paths` (files as given, directories
/// searched recursively, hidden entries skipped).
///
/// # Errors
/// When a path given does not exist.
pub(super) fn list(paths: &[PathBuf]) -> CliResult<Vec<Entry>> {
    let mut entries = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut files = Vec::new();
            walk(path, &mut files);
            files.sort();
            for file in files {
                let key = file
                    .strip_prefix(path)
                    .unwrap_or(&file)
                    .to_string_lossy()
                    .into_owned();
                entries.extend(entry(&file, key));
            }
        } else if path.is_file() {
            entries.extend(entry(path, path.to_string_lossy().into_owned()));
        } else {
            return Err(CliError::new(format!(
                "`{}` does not exist; give profile files or directories",
                path.display()
            )));
        }
    }
    Ok(entries)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(read) = std::fs::read_dir(dir) else {
        console::warn(&format!(
            "cannot read directory `{}`; skipped",
            dir.display()
        ));
        return;
    };
    for item in read.flatten() {
        if item.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = item.path();
        match item.file_type() {
            Ok(t) if t.is_dir() => walk(&path, files),
            Ok(t) if t.is_file() => files.push(path),
            _ => {}
        }
    }
}

/// Reads `file` to describe it; `None` (with a warning) if it is no profile.
fn entry(file: &Path, key: String) -> Option<Entry> {
    let bytes = read(file)?;
    let profile = match profile_file::decode(&bytes) {
        Ok(profile) => profile,
        Err(err) => {
            console::warn(&format!("skipped `{}`: {err}", file.display()));
            return None;
        }
    };
    let written = std::fs::metadata(file)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    Some(Entry {
        key,
        location: Location::File(file.to_owned()),
        size: bytes.len() as u64,
        etag: None,
        written,
        info: ProfileInfo::from_profile(&profile),
    })
}

/// The file's bytes; `None` (with a warning) if unreadable or too large.
fn read(file: &Path) -> Option<Vec<u8>> {
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    if size > MAX_PROFILE_BYTES {
        console::warn(&format!(
            "skipped `{}`: {size} bytes is more than any profile ({} MiB at most)",
            file.display(),
            MAX_PROFILE_BYTES >> 20
        ));
        return None;
    }
    match std::fs::read(file) {
        Ok(bytes) => Some(bytes),
        Err(err) => {
            console::warn(&format!("skipped `{}`: {err}", file.display()));
            None
        }
    }
}

/// Reads each entry's file and hands its bytes on; unreadable ones are
/// skipped with a warning.
pub(super) fn read_all(
    entries: &[Entry],
    mut consume: impl FnMut(&Entry, Vec<u8>) -> CliResult<()>,
) -> CliResult<()> {
    for entry in entries {
        if let Location::File(path) = &entry.location
            && let Some(bytes) = read(path)
        {
            consume(entry, bytes)?;
        }
    }
    Ok(())
}
