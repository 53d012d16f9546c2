//! Frames already resolved, kept between profiles: per object file, code
//! address → its frames, within a fixed byte cap.
//!
//! A handler's later invocations sample mostly the addresses its earlier ones
//! did; answering those from here leaves [`crate::dwarf`] only the new ones.
//! This keeps answers, a few hundred bytes per address, never what produced
//! them (units, line programs, DIEs): what it holds follows the distinct
//! addresses profiled, and [`Resolved`] evicts the least recently used past
//! its cap. An entry is served only while its file is the same one (device,
//! inode, size, modification time); a changed file drops that object's
//! entries.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::dwarf::Frame;

/// What the cache may hold, in bytes as [`cost`] counts them.
pub(crate) const RESOLVED_CAP: u64 = 512 * 1024;

/// Bytes counted per entry besides its frames: the key and the entry in the
/// hash table's slot, with its spare capacity (up to half empty after it
/// grows), and the allocator's header of the frames' vector.
const ENTRY_OVERHEAD: u64 = 128;

/// The allocator's header of each of a frame's three strings.
const STRING_HEADERS: u64 = 3 * 16;

/// What tells one version of a file from another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileId {
    /// The identity of the file at `path` now; `None` if it cannot be read.
    pub(crate) fn of(path: &Path) -> Option<FileId> {
        let meta = std::fs::metadata(path).ok()?;
        Some(FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        })
    }
}

struct Entry {
    frames: Vec<Frame>,
    cost: u64,
    /// When it was last served or stored ([`Resolved::clock`]).
    used: u64,
}

struct Object {
    id: FileId,
    entries: HashMap<u64, Entry>,
}

/// The cache: object file path → its resolved addresses.
pub(crate) struct Resolved {
    cap: u64,
    held: u64,
    clock: u64,
    objects: HashMap<PathBuf, Object>,
}

/// What an address's frames count against the cap.
fn cost(frames: &[Frame]) -> u64 {
    frames.iter().fold(ENTRY_OVERHEAD, |sum, frame| {
        let strings =
            frame.function.capacity() + frame.system_name.capacity() + frame.file.capacity();
        sum.saturating_add((size_of::<Frame>() + strings) as u64 + STRING_HEADERS)
    })
}

impl Resolved {
    /// An empty cache holding at most `cap` bytes.
    pub(crate) fn new(cap: u64) -> Resolved {
        Resolved {
            cap,
            held: 0,
            clock: 0,
            objects: HashMap::new(),
        }
    }

    /// What it holds, in bytes as counted against the cap.
    pub(crate) fn held(&self) -> u64 {
        self.held
    }

    /// Per address of `addresses` (file-relative, in the file at `path`
    /// whose identity is now `id`), its frames if held. Entries of an
    /// earlier version of the file are dropped.
    pub(crate) fn lookup(
        &mut self,
        path: &Path,
        id: FileId,
        addresses: &[u64],
    ) -> Vec<Option<Vec<Frame>>> {
        self.clock += 1;
        let clock = self.clock;
        let Some(object) = self.objects.get_mut(path) else {
            return vec![None; addresses.len()];
        };
        if object.id != id {
            let dropped: u64 = object.entries.values().map(|e| e.cost).sum();
            self.held = self.held.saturating_sub(dropped);
            self.objects.remove(path);
            return vec![None; addresses.len()];
        }
        addresses
            .iter()
            .map(|address| {
                object.entries.get_mut(address).map(|entry| {
                    entry.used = clock;
                    entry.frames.clone()
                })
            })
            .collect()
    }

    /// Keeps `frames` as the answer for `address` in the file at `path`
    /// (identity `id`), evicting the least recently used entries if the cap
    /// needs it. An answer larger than the whole cap is not kept.
    pub(crate) fn insert(&mut self, path: &Path, id: FileId, address: u64, frames: &[Frame]) {
        let cost = cost(frames);
        if cost > self.cap {
            return;
        }
        if self.held.saturating_add(cost) > self.cap {
            // Down to three quarters, so a full cache does not evict on
            // every insert.
            self.evict_to((self.cap / 4 * 3).min(self.cap - cost));
        }
        self.clock += 1;
        let object = self
            .objects
            .entry(path.to_owned())
            .or_insert_with(|| Object {
                id,
                entries: HashMap::new(),
            });
        if object.id != id {
            let dropped: u64 = object.entries.values().map(|e| e.cost).sum();
            self.held = self.held.saturating_sub(dropped);
            object.entries.clear();
            object.id = id;
        }
        let entry = Entry {
            frames: frames.to_vec(),
            cost,
            used: self.clock,
        };
        if let Some(old) = object.entries.insert(address, entry) {
            self.held = self.held.saturating_sub(old.cost);
        }
        self.held = self.held.saturating_add(cost);
    }

    /// Evicts the least recently used entries until at most `target` bytes
    /// are held.
    fn evict_to(&mut self, target: u64) {
        let mut by_age: Vec<(u64, PathBuf, u64)> = self
            .objects
            .iter()
            .flat_map(|(path, object)| {
                object
                    .entries
                    .iter()
                    .map(move |(address, entry)| (entry.used, path.clone(), *address))
            })
            .collect();
        by_age.sort_unstable_by_key(|(used, _, _)| *used);
        for (_, path, address) in by_age {
            if self.held <= target {
                break;
            }
            let Some(object) = self.objects.get_mut(&path) else {
                continue;
            };
            if let Some(entry) = object.entries.remove(&address) {
                self.held = self.held.saturating_sub(entry.cost);
            }
            if object.entries.is_empty() {
                self.objects.remove(&path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{FileId, Resolved, cost};
    use crate::dwarf::Frame;
    use std::path::Path;

    fn frames(name: &str) -> Vec<Frame> {
        vec![Frame {
            function: name.to_owned(),
            system_name: format!("_ZN{name}E"),
            file: "/src/lib.rs".to_owned(),
            line: 7,
        }]
    }

    fn this_file() -> (std::path::PathBuf, FileId) {
        let path = std::env::current_exe().unwrap();
        let id = FileId::of(&path).unwrap();
        (path, id)
    }

    #[test]
    fn serves_what_it_kept_and_nothing_else() {
        let (path, id) = this_file();
        let mut cache = Resolved::new(64 * 1024);
        cache.insert(&path, id, 0x10, &frames("a"));
        let got = cache.lookup(&path, id, &[0x10, 0x20]);
        assert_eq!(got, vec![Some(frames("a")), None]);
        assert_eq!(cache.held(), cost(&frames("a")));
        assert_eq!(
            cache.lookup(Path::new("/other"), id, &[0x10]),
            vec![None],
            "keyed by file"
        );
    }

    #[test]
    fn never_holds_more_than_its_cap_and_keeps_the_recently_used() {
        let (path, id) = this_file();
        let one = cost(&frames("function_0000"));
        let mut cache = Resolved::new(one * 10);
        for i in 0..100_u64 {
            cache.insert(&path, id, i, &frames(&format!("function_{i:04}")));
            assert!(cache.held() <= one * 10, "after {i}: {}", cache.held());
            // Address 0 is used all along: it survives every eviction.
            assert!(cache.lookup(&path, id, &[0])[0].is_some(), "after {i}");
        }
        let kept = cache
            .lookup(&path, id, &(0..100).collect::<Vec<_>>())
            .iter()
            .filter(|f| f.is_some())
            .count();
        assert!((5..=10).contains(&kept), "{kept}");
        assert!(cache.lookup(&path, id, &[99])[0].is_some(), "the newest");
        let mut tiny = Resolved::new(one - 1);
        tiny.insert(&path, id, 1, &frames("function_0001"));
        assert_eq!(
            (tiny.held(), tiny.lookup(&path, id, &[1])[0].clone()),
            (0, None)
        );
    }

    #[test]
    fn a_changed_file_is_not_served_stale_answers() {
        let path =
            std::env::temp_dir().join(format!("xrayprofile-resolved-test-{}", std::process::id()));
        std::fs::write(&path, b"first version").unwrap();
        let before = FileId::of(&path).unwrap();
        let mut cache = Resolved::new(64 * 1024);
        cache.insert(&path, before, 0x10, &frames("old"));
        // Another file in its place (a new inode and size, whatever the
        // clock's resolution).
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"the second version").unwrap();
        let after = FileId::of(&path).unwrap();
        assert_ne!(before, after);
        assert_eq!(cache.lookup(&path, after, &[0x10]), vec![None]);
        assert_eq!(cache.held(), 0, "the old version's entries are dropped");
        cache.insert(&path, after, 0x10, &frames("new"));
        assert_eq!(
            cache.lookup(&path, after, &[0x10]),
            vec![Some(frames("new"))]
        );
        std::fs::remove_file(&path).unwrap();
    }
}
