//! Per object file, what earlier reads of it left ([`dwarf::Index`]: where
//! its `.debug_aranges` sets, symbol blocks, and the functions and line
//! sequences of the units read are), kept between profiles within a fixed
//! byte cap, so that a profile reaching code no earlier one did reads only
//! what can hold its new addresses.
//!
//! An index is served only while its file is the same one (device, inode,
//! size, modification time, as [`super::resolved`] checks); a changed file
//! gets a new one. Past the cap the least recently used units are dropped,
//! then whole files' indexes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::resolved::FileId;
use crate::dwarf;

/// What all the indexes together may hold, in bytes as
/// [`dwarf::Index::cost`] counts them. A 104 MB binary's aranges spans take
/// 0.18 MB, std's largest unit 0.11 MB (docs/performance.md, issue 14).
pub(crate) const INDEX_CAP: u64 = 1024 * 1024;

struct Kept {
    id: FileId,
    index: dwarf::Index,
    /// When it was last put back ([`Indexes::clock`]).
    used: u64,
}

/// The indexes: object file path → its index.
pub(crate) struct Indexes {
    cap: u64,
    clock: u64,
    files: HashMap<PathBuf, Kept>,
}

impl Indexes {
    /// No indexes, holding at most `cap` bytes.
    pub(crate) fn new(cap: u64) -> Indexes {
        Indexes {
            cap,
            clock: 0,
            files: HashMap::new(),
        }
    }

    /// What they hold, in bytes.
    pub(crate) fn held(&self) -> u64 {
        self.files
            .values()
            .fold(0, |sum, kept| sum.saturating_add(kept.index.cost()))
    }

    /// The index of the file at `path` (identity `id`), taken out while
    /// the file is read (another profile meanwhile reads without it); a new
    /// one if none is kept for this version of the file.
    pub(crate) fn take(&mut self, path: &Path, id: FileId) -> dwarf::Index {
        match self.files.remove(path) {
            Some(kept) if kept.id == id => kept.index,
            _ => dwarf::Index::default(),
        }
    }

    /// Keeps `index` for the file at `path` (identity `id`), trimmed so
    /// that all of them hold at most the cap: its least recently used units
    /// first, then the least recently used other files' indexes.
    pub(crate) fn put(&mut self, path: &Path, id: FileId, mut index: dwarf::Index) {
        index.trim(self.cap);
        let mut held = self.held().saturating_add(index.cost());
        if held > self.cap {
            let mut by_age: Vec<(u64, PathBuf)> = self
                .files
                .iter()
                .filter(|(other, _)| other.as_path() != path)
                .map(|(other, kept)| (kept.used, other.clone()))
                .collect();
            by_age.sort_unstable();
            for (_, other) in by_age {
                if held <= self.cap {
                    break;
                }
                if let Some(kept) = self.files.remove(&other) {
                    held = held.saturating_sub(kept.index.cost());
                }
            }
        }
        self.clock += 1;
        self.files.insert(
            path.to_owned(),
            Kept {
                id,
                index,
                used: self.clock,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::Indexes;
    use crate::dwarf::{self, Budget};
    use crate::symbolize::resolved::FileId;

    /// An index of the running test binary, built by reading a few of its
    /// functions' addresses.
    fn built(path: &std::path::Path) -> dwarf::Index {
        let mut index = dwarf::Index::default();
        let addresses = [
            dwarf::symbolize as *const () as u64,
            Indexes::new as *const () as u64,
        ];
        // Whatever the load bias, reading fills the aranges and symbols.
        dwarf::symbolize(path, &addresses, &mut Budget::new(64 << 20), &mut index);
        index
    }

    #[test]
    fn holds_at_most_its_cap_and_a_changed_file_gets_a_new_index() {
        let path = std::env::current_exe().unwrap();
        let id = FileId::of(&path).unwrap();
        let index = built(&path);
        let cost = index.cost();
        assert!(cost > 1024, "{cost}");
        let mut indexes = Indexes::new(1 << 20);
        indexes.put(&path, id, index);
        assert_eq!(indexes.held(), cost);
        assert_eq!(indexes.take(&path, id).cost(), cost, "served back");
        // Put back under a cap smaller than it: trimmed to the cap.
        let mut small = Indexes::new(cost / 2);
        small.put(&path, id, built(&path));
        assert!(small.held() <= cost / 2, "{} of {}", small.held(), cost / 2);
        // Another version of the file (another size): not served.
        indexes.put(&path, id, built(&path));
        let other = std::env::temp_dir().join(format!("xrayprofile-index-{}", std::process::id()));
        std::fs::write(&other, b"another file").unwrap();
        let changed = FileId::of(&other).unwrap();
        std::fs::remove_file(&other).unwrap();
        assert_ne!(changed, id);
        let fresh = indexes.take(&path, changed);
        assert_eq!(fresh.cost(), dwarf::Index::default().cost());
        assert_eq!(indexes.held(), 0, "the old version's index is dropped");
    }
}
