//! Turns raw code addresses into a pprof profile's tables: locations with
//! function names, files and lines, or addresses with exact-segment mappings
//! and GNU build IDs for offline symbolization.
//!
//! Names are resolved once per profile, for all its distinct addresses at
//! once: grouped by the loaded object that holds them, each answered from
//! the frames earlier profiles resolved ([`resolved`], at most
//! [`resolved::RESOLVED_CAP`] bytes for the process) or else by
//! [`crate::dwarf`], which reads that object's file for just the units those
//! addresses need, within one [`SYMBOLIZE_BUDGET`] for the whole profile,
//! guided by what earlier reads of the file indexed ([`indexes`], at most
//! [`indexes::INDEX_CAP`] bytes for the process). No background thread: the
//! cost of a profile follows its new addresses, not the size of the binary.
//!
//! It knows nothing of samples or waits: the report (`report.rs`)
//! decides what the stacks mean and asks here for their locations.

mod indexes;
mod resolved;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use findshlibs::{Segment, SharedLibrary, SharedLibraryId, TargetSharedLibrary};
use pprof::protos::{Function, Line, Location, Mapping, Profile, ValueType};

use crate::dwarf::{self, Budget, Frame};
use crate::sampler;
use indexes::Indexes;
use resolved::{FileId, Resolved};

/// The frames resolved so far in this process, shared by every profile.
static RESOLVED: LazyLock<Mutex<Resolved>> =
    LazyLock::new(|| Mutex::new(Resolved::new(resolved::RESOLVED_CAP)));

/// What earlier reads of each object file left, shared by every profile.
static INDEXES: LazyLock<Mutex<Indexes>> =
    LazyLock::new(|| Mutex::new(Indexes::new(indexes::INDEX_CAP)));

/// The most file data and parsed DWARF the symbolizer holds at once, for
/// one profile, all objects together. The largest compilation unit of a
/// 104 MB AWS-SDK function (aws-lc's `bcm.c`, 1.2 MB of `.debug_info`)
/// needs 2.4 MiB with its line program and abbreviations; past the budget a
/// unit is not read and its addresses keep symbol-table names
/// (docs/performance.md, issue 14).
pub(crate) const SYMBOLIZE_BUDGET: u64 = 4 * 1024 * 1024;

/// What a location says about its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detail {
    /// Function names, files and lines, resolved in process.
    Names,
    /// Addresses only, with exact-segment mappings and GNU build IDs, for
    /// `pprof` to symbolize later from the unstripped binary.
    Addresses,
}

/// A profile's tables, each entry interned once.
pub(crate) struct Tables {
    detail: Detail,
    /// What symbolizing may hold at once ([`SYMBOLIZE_BUDGET`]).
    budget: u64,
    /// Frames kept between profiles ([`RESOLVED`]).
    resolved: &'static Mutex<Resolved>,
    mappings: Vec<Mapping>,
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    locations: Vec<Location>,
    location_ids: HashMap<u64, u64>,
    functions: Vec<Function>,
    function_ids: HashMap<(i64, i64), u64>,
}

impl Default for Tables {
    fn default() -> Tables {
        Tables {
            detail: Detail::Names,
            budget: SYMBOLIZE_BUDGET,
            resolved: &RESOLVED,
            mappings: Vec::new(),
            strings: Vec::new(),
            string_ids: HashMap::new(),
            locations: Vec::new(),
            location_ids: HashMap::new(),
            functions: Vec::new(),
            function_ids: HashMap::new(),
        }
    }
}

impl Tables {
    /// An empty profile's tables: the empty string first, as pprof requires,
    /// and the mappings when locations will be addresses.
    pub(crate) fn new(detail: Detail) -> Tables {
        let mut builder = Tables {
            detail,
            ..Tables::default()
        };
        builder.string("");
        if detail == Detail::Addresses {
            builder.load_mappings();
        }
        builder
    }

    /// These tables with a symbolization budget of `bytes` and a cache of
    /// their own (a test's answers never reach another's).
    #[cfg(test)]
    fn with_budget(self, bytes: u64) -> Tables {
        Tables {
            budget: bytes,
            resolved: Box::leak(Box::new(Mutex::new(Resolved::new(resolved::RESOLVED_CAP)))),
            ..self
        }
    }

    /// These tables with `resolved` as the cache of frames kept between
    /// profiles.
    #[cfg(test)]
    fn with_resolved(self, resolved: &'static Mutex<Resolved>) -> Tables {
        Tables { resolved, ..self }
    }

    /// A sample or period type, its names interned.
    pub(crate) fn value_type(&mut self, ty: &str, unit: &str) -> ValueType {
        ValueType {
            ty: self.string(ty),
            unit: self.string(unit),
        }
    }

    /// `profile` with these tables filled in; in [`Detail::Names`], every
    /// code location named first, and a comment added when the memory
    /// budget left frames unnamed.
    pub(crate) fn into_profile(mut self, mut profile: Profile) -> Profile {
        if self.detail == Detail::Names
            && let Some(comment) = self.resolve_names()
        {
            let comment = self.string(&comment);
            profile.comment.push(comment);
        }
        Profile {
            location: self.locations,
            function: self.functions,
            mapping: self.mappings,
            string_table: self.strings,
            ..profile
        }
    }

    /// One mapping per executable `PT_LOAD` segment of every loaded object,
    /// exactly as the segment is (not page-aligned: `go tool pprof` computes
    /// a wrong load bias from page-aligned ones), the main program first.
    fn load_mappings(&mut self) {
        static KEPT: Kept<Vec<MappedCode>> = Mutex::new(None);
        for (start, limit, offset, name, build_id) in kept(&KEPT, mapped_code).iter() {
            let id = u64::try_from(self.mappings.len())
                .unwrap_or(u64::MAX)
                .saturating_add(1);
            let filename = self.string(name);
            let build_id = self.string(build_id);
            self.mappings.push(Mapping {
                id,
                memory_start: *start,
                memory_limit: *limit,
                file_offset: *offset,
                filename,
                build_id,
                ..Mapping::default()
            });
        }
    }

    /// The locations of `stack`, leaf first. Callers' addresses are return
    /// addresses, looked up at `addr - 1` so the line is the call's; the leaf
    /// is the exact PC when `leaf_is_pc`.
    pub(crate) fn stack(&mut self, stack: &[u64], leaf_is_pc: bool) -> Vec<u64> {
        stack
            .iter()
            .enumerate()
            .map(|(depth, &addr)| {
                let code = if depth == 0 && leaf_is_pc {
                    addr
                } else {
                    addr.saturating_sub(1)
                };
                self.location(code)
            })
            .collect()
    }

    /// A location that names something other than code, such as the root
    /// of the invocation future.
    pub(crate) fn synthetic(&mut self, name: &str) -> u64 {
        let function_id = self.function(name, name, "");
        let id = u64::try_from(self.locations.len())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        self.locations.push(Location {
            id,
            line: vec![Line {
                function_id,
                line: 0,
            }],
            ..Location::default()
        });
        id
    }

    fn mapping_of(&self, code: u64) -> u64 {
        self.mappings
            .iter()
            .find(|m| (m.memory_start..m.memory_limit).contains(&code))
            .map_or(0, |m| m.id)
    }

    /// The index of `text` in the string table, added if new.
    pub(crate) fn string(&mut self, text: &str) -> i64 {
        if let Some(&id) = self.string_ids.get(text) {
            return id;
        }
        let id = i64::try_from(self.strings.len()).unwrap_or(0);
        self.strings.push(text.to_owned());
        self.string_ids.insert(text.to_owned(), id);
        id
    }

    fn location(&mut self, code: u64) -> u64 {
        if let Some(&id) = self.location_ids.get(&code) {
            return id;
        }
        let id = u64::try_from(self.locations.len())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        // Names are filled in for all locations at once, in `into_profile`.
        self.locations.push(Location {
            id,
            mapping_id: match self.detail {
                Detail::Addresses => self.mapping_of(code),
                Detail::Names => 0,
            },
            address: code,
            ..Location::default()
        });
        self.location_ids.insert(code, id);
        id
    }

    /// Names every code location: the distinct addresses grouped by the
    /// object that holds them, each object read once ([`dwarf::symbolize`]),
    /// inlined frames innermost first as pprof wants them. Returns the
    /// comment that says what the budget left out, if it left anything.
    fn resolve_names(&mut self) -> Option<String> {
        static KEPT: Kept<Vec<LoadedObject>> = Mutex::new(None);
        let objects = kept(&KEPT, loaded_objects);
        // Object index → (file-relative address, location index).
        let mut wanted: HashMap<usize, Vec<(u64, usize)>> = HashMap::new();
        for (i, location) in self.locations.iter().enumerate() {
            if location.address == 0 {
                continue; // synthetic
            }
            if let Some((object, svma)) = objects
                .iter()
                .enumerate()
                .find_map(|(o, object)| object.file_address(location.address).map(|a| (o, a)))
            {
                wanted.entry(object).or_default().push((svma, i));
            }
        }
        let mut budget = Budget::new(self.budget);
        let mut cut = dwarf::Cut::default();
        let mut problems: Vec<String> = Vec::new();
        let mut order: Vec<usize> = wanted.keys().copied().collect();
        // The main program first: its frames matter most if the budget runs out.
        order.sort_unstable();
        for object_index in order {
            let (Some(object), Some(entries)) =
                (objects.get(object_index), wanted.get(&object_index))
            else {
                continue;
            };
            let addresses: Vec<u64> = entries.iter().map(|(a, _)| *a).collect();
            let found = self.frames_of(object, &addresses, &mut budget);
            cut.units += found.cut.units;
            cut.addresses += found.cut.addresses;
            cut.needed = cut.needed.max(found.cut.needed);
            problems.extend(found.problem);
            for ((_, i), frames) in entries.iter().zip(found.frames) {
                let line = frames
                    .into_iter()
                    // A frame nothing names (no DWARF name, no symbol) is
                    // left out, as backtrace-rs did.
                    .filter(|frame| !frame.function.is_empty())
                    .map(|frame| Line {
                        function_id: self.function(
                            &xrayprofile_rules::readable_name(&frame.function),
                            &frame.system_name,
                            &frame.file,
                        ),
                        line: i64::from(frame.line),
                    })
                    .collect();
                if let Some(location) = self.locations.get_mut(*i) {
                    location.line = line;
                }
            }
        }
        tracing::debug!(
            locations = self.locations.len(),
            held_kib = budget.peak().div_ceil(1024),
            kept_kib = self
                .resolved
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .held()
                .div_ceil(1024),
            "symbolized the profile's addresses"
        );
        if let Some(problem) = problems.first() {
            tracing::debug!(problem = %problem, "symbolization: part of the debug info could not be read; those frames keep symbol-table names");
        }
        (cut.units > 0).then(|| {
            tracing::warn!(
                units = cut.units,
                addresses = cut.addresses,
                budget_bytes = self.budget,
                needed_bytes = cut.needed,
                "profile symbolized in part: {} compilation units did not fit the symbolizer's memory budget, so {} addresses have function names from the symbol table only (no lines or inlined frames); handler unaffected. For full detail set XRAYPROFILE_SYMBOLIZE=false and symbolize offline",
                cut.units,
                cut.addresses,
            );
            format!(
                "symbolize: {} addresses in {} compilation units past the {} KiB budget (one needed {} KiB) have symbol-table names only, no lines or inlined frames",
                cut.addresses,
                cut.units,
                self.budget / 1024,
                cut.needed.div_ceil(1024)
            )
        })
    }

    /// The frames of `addresses` (file-relative) in `object`: those kept
    /// from earlier profiles while its file is unchanged, the others read
    /// ([`dwarf::symbolize`]) and kept if complete.
    fn frames_of(
        &self,
        object: &LoadedObject,
        addresses: &[u64],
        budget: &mut Budget,
    ) -> dwarf::Symbolized {
        let lock = || self.resolved.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(id) = FileId::of(&object.path) else {
            // Unreadable: dwarf::symbolize says why.
            return dwarf::symbolize(
                &object.path,
                addresses,
                budget,
                &mut dwarf::Index::default(),
            );
        };
        let mut kept = lock().lookup(&object.path, id, addresses);
        let missing: Vec<u64> = addresses
            .iter()
            .zip(&kept)
            .filter(|(_, kept)| kept.is_none())
            .map(|(a, _)| *a)
            .collect();
        if missing.is_empty() {
            return dwarf::Symbolized {
                frames: kept.into_iter().map(Option::unwrap_or_default).collect(),
                ..dwarf::Symbolized::default()
            };
        }
        let indexes = || INDEXES.lock().unwrap_or_else(PoisonError::into_inner);
        let mut index = indexes().take(&object.path, id);
        let read = dwarf::symbolize(&object.path, &missing, budget, &mut index);
        indexes().put(&object.path, id, index);
        {
            let mut cache = lock();
            for ((address, frames), complete) in
                missing.iter().zip(&read.frames).zip(&read.complete)
            {
                if *complete {
                    cache.insert(&object.path, id, *address, frames);
                }
            }
        }
        let mut fresh = read.frames.into_iter();
        let frames: Vec<Vec<Frame>> = kept
            .iter_mut()
            .map(|kept| kept.take().or_else(|| fresh.next()).unwrap_or_default())
            .collect();
        dwarf::Symbolized {
            frames,
            complete: Vec::new(),
            cut: read.cut,
            problem: read.problem,
        }
    }

    fn function(&mut self, name: &str, system_name: &str, file: &str) -> u64 {
        let name = self.string(name);
        let file = self.string(file);
        if let Some(&id) = self.function_ids.get(&(name, file)) {
            return id;
        }
        let system_name = self.string(system_name);
        let id = u64::try_from(self.functions.len())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        self.functions.push(Function {
            id,
            name,
            system_name,
            filename: file,
            ..Function::default()
        });
        self.function_ids.insert((name, file), id);
        id
    }
}

/// A loaded object (the program or a shared library) as the symbolizer
/// needs it: its file, its load bias and where its code is mapped.
struct LoadedObject {
    path: PathBuf,
    bias: u64,
    code: Vec<(u64, u64)>,
}

impl LoadedObject {
    /// `address` as the object file's own virtual address, if the object's
    /// code holds it.
    fn file_address(&self, address: u64) -> Option<u64> {
        self.code
            .iter()
            .any(|(start, end)| (*start..*end).contains(&address))
            .then(|| address.wrapping_sub(self.bias))
    }
}

/// What was read of the loaded objects, with the loader generation it was
/// read in ([`sampler::loader_generation`]).
type Kept<T> = Mutex<Option<((u64, u64), Arc<T>)>>;

/// `read()`'s answer, read again only when the loader has loaded or
/// unloaded an object since: reading `/proc/self/maps` and every object's
/// headers per profile cost 0.18–0.21 ms of each address-level profile
/// (`docs/performance.md`, MI-S), for an answer that does not change once
/// a function has started.
fn kept<T>(cell: &Kept<T>, read: impl FnOnce() -> T) -> Arc<T> {
    let Some(generation) = sampler::loader_generation() else {
        return Arc::new(read());
    };
    let mut kept = cell.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((at, value)) = kept.as_ref()
        && *at == generation
    {
        return Arc::clone(value);
    }
    let value = Arc::new(read());
    *kept = Some((generation, Arc::clone(&value)));
    value
}

/// One executable segment of a loaded object, as a pprof mapping wants it:
/// start, limit, file offset, file name, build ID.
type MappedCode = (u64, u64, u64, String, String);

/// One entry per executable `PT_LOAD` segment of every loaded object, the
/// main program first.
fn mapped_code() -> Vec<MappedCode> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let main_program = std::env::current_exe()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut found: Vec<MappedCode> = Vec::new();
    TargetSharedLibrary::each(|library| {
        let name = library.name().to_string_lossy().into_owned();
        let name = if name.is_empty() && found.is_empty() {
            main_program.clone()
        } else {
            name
        };
        let build_id = match library.id() {
            Some(SharedLibraryId::GnuBuildId(bytes)) => {
                bytes.iter().map(|b| format!("{b:02x}")).collect()
            }
            _ => String::new(),
        };
        for segment in library.segments().filter(|s| s.is_code()) {
            let start = segment.actual_virtual_memory_address(library).0 as u64;
            let limit = start.saturating_add(segment.len() as u64);
            let Some(offset) = file_offset(&maps, start) else {
                continue;
            };
            found.push((start, limit, offset, name.clone(), build_id.clone()));
        }
    });
    found
}

/// Every loaded object with code, the main program first (findshlibs names
/// it with an empty string; its path is `/proc/self/exe`'s target).
fn loaded_objects() -> Vec<LoadedObject> {
    let main_program = std::env::current_exe().unwrap_or_default();
    let mut objects = Vec::new();
    TargetSharedLibrary::each(|library| {
        let name = library.name();
        let path = if name.is_empty() && objects.is_empty() {
            main_program.clone()
        } else {
            PathBuf::from(name)
        };
        let code = library
            .segments()
            .filter(|s| s.is_code())
            .map(|s| {
                let start = s.actual_virtual_memory_address(library).0 as u64;
                (start, start.saturating_add(s.len() as u64))
            })
            .collect();
        objects.push(LoadedObject {
            path,
            bias: library.virtual_memory_bias().0 as u64,
            code,
        });
    });
    objects
}

/// The file offset of the byte mapped at `address`, from `/proc/self/maps`
/// (`start-end perms offset dev inode path`).
fn file_offset(maps: &str, address: u64) -> Option<u64> {
    maps.lines().find_map(|line| {
        let mut fields = line.split_ascii_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let start = u64::from_str_radix(start, 16).ok()?;
        let end = u64::from_str_radix(end, 16).ok()?;
        let offset = u64::from_str_radix(fields.nth(1)?, 16).ok()?;
        (start..end)
            .contains(&address)
            .then(|| offset.saturating_add(address - start))
    })
}

#[cfg(test)]
mod tests {
    use super::resolved::{RESOLVED_CAP, Resolved};
    use super::{Detail, SYMBOLIZE_BUDGET, Tables};
    use pprof::protos::Profile;
    use std::sync::Mutex;

    /// What was read of the loaded objects is read once while no object is
    /// loaded or unloaded.
    #[test]
    fn the_loaded_objects_are_read_once_per_loader_generation() {
        static KEPT: super::Kept<u32> = Mutex::new(None);
        let reads = std::cell::Cell::new(0_u32);
        let read = || {
            reads.set(reads.get() + 1);
            reads.get()
        };
        let first = super::kept(&KEPT, read);
        let second = super::kept(&KEPT, read);
        assert!(std::sync::Arc::ptr_eq(&first, &second));
        assert_eq!(reads.get(), 1);
        // A generation that no longer matches is read again.
        KEPT.lock().unwrap().as_mut().unwrap().0.0 -= 1;
        let third = super::kept(&KEPT, read);
        assert_eq!((*third, reads.get()), (2, 2));
    }

    #[inline(never)]
    fn a_named_function() -> u64 {
        std::hint::black_box(7)
    }

    /// The names, files and lines of the one location of `profile`.
    fn frames(profile: &Profile) -> Vec<(String, String, i64)> {
        let text = |i: i64| profile.string_table[usize::try_from(i).unwrap()].clone();
        profile.location[0]
            .line
            .iter()
            .map(|line| {
                let f = &profile.function[usize::try_from(line.function_id).unwrap() - 1];
                (text(f.name), text(f.filename), line.line)
            })
            .collect()
    }

    #[test]
    fn locations_get_names_files_and_lines() {
        let mut tables = Tables::new(Detail::Names);
        let ids = tables.stack(&[a_named_function as *const () as u64], true);
        let profile = tables.into_profile(Profile::default());
        assert_eq!(ids, [1]);
        let frames = frames(&profile);
        let (name, file, line) = &frames[0];
        assert!(
            name.ends_with("symbolize::tests::a_named_function"),
            "{frames:?}"
        );
        assert!(file.ends_with("src/symbolize.rs"), "{frames:?}");
        assert!(*line > 0);
        assert!(profile.comment.is_empty(), "nothing was cut");
    }

    /// Every location's frames: (name, system name, file, line), innermost
    /// first.
    fn all_frames(profile: &Profile) -> Vec<Vec<(String, String, String, i64)>> {
        let text = |i: i64| profile.string_table[usize::try_from(i).unwrap()].clone();
        profile
            .location
            .iter()
            .map(|location| {
                location
                    .line
                    .iter()
                    .map(|line| {
                        let f = &profile.function[usize::try_from(line.function_id).unwrap() - 1];
                        (
                            text(f.name),
                            text(f.system_name),
                            text(f.filename),
                            line.line,
                        )
                    })
                    .collect()
            })
            .collect()
    }

    /// The current stack's return addresses and a function's address.
    #[inline(never)]
    fn some_code() -> Vec<u64> {
        let mut stack = vec![a_named_function as *const () as u64];
        backtrace::trace(|frame| {
            stack.push(frame.ip() as u64);
            true
        });
        stack
    }

    #[test]
    fn frames_kept_between_profiles_are_the_frames_read_afresh() {
        let stack = some_code();
        let profile_of = |resolved: &'static Mutex<Resolved>| {
            let mut tables = Tables::new(Detail::Names)
                .with_budget(SYMBOLIZE_BUDGET)
                .with_resolved(resolved);
            tables.stack(&stack, true);
            all_frames(&tables.into_profile(Profile::default()))
        };
        let kept: &'static Mutex<Resolved> =
            Box::leak(Box::new(Mutex::new(Resolved::new(RESOLVED_CAP))));
        let first = profile_of(kept);
        let held = kept.lock().unwrap().held();
        assert!(held > 0, "the first profile's frames are kept");
        assert!(
            first.iter().filter(|frames| !frames.is_empty()).count() * 2 > stack.len(),
            "{first:?}"
        );
        assert!(
            first.iter().any(|frames| frames.len() > 1),
            "inlined frames"
        );
        // All from the cache now: nothing new is kept, the frames are equal.
        let second = profile_of(kept);
        assert_eq!(kept.lock().unwrap().held(), held);
        assert_eq!(second, first);
        // And equal to what a process that kept nothing reads.
        let fresh: &'static Mutex<Resolved> =
            Box::leak(Box::new(Mutex::new(Resolved::new(RESOLVED_CAP))));
        assert_eq!(profile_of(fresh), first);
    }

    #[test]
    fn past_the_budget_locations_keep_symbol_names_and_the_profile_says_so() {
        let mut tables = Tables::new(Detail::Names).with_budget(1024);
        tables.stack(&[a_named_function as *const () as u64], true);
        let profile = tables.into_profile(Profile::default());
        let frames = frames(&profile);
        assert_eq!(frames.len(), 1, "{frames:?}");
        let (name, file, line) = &frames[0];
        assert!(
            name.ends_with("symbolize::tests::a_named_function"),
            "{frames:?}"
        );
        assert_eq!((file.as_str(), *line), ("", 0), "no line past the budget");
        let comments: Vec<&String> = profile
            .comment
            .iter()
            .map(|&i| &profile.string_table[usize::try_from(i).unwrap()])
            .collect();
        assert_eq!(comments.len(), 1, "{comments:?}");
        assert!(
            comments[0].contains("past the 1 KiB budget")
                && comments[0].contains("symbol-table names only"),
            "{comments:?}"
        );
    }
}
