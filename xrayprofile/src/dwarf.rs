//! Names, files, lines and inlined frames for a batch of code addresses in
//! one ELF file, reading only what those addresses need, within a memory
//! budget.
//!
//! - `.debug_aranges`, streamed, maps each address to its compilation unit;
//! - each unit that holds an address is read (its `.debug_info` bytes, its
//!   abbreviations, its line program) once for all its addresses, its DIEs
//!   walked for the functions and inlined calls holding them, its line
//!   program run once; strings are read where referenced; all of it is
//!   dropped before the next unit;
//! - the symbol table, streamed, names what the DWARF does not (no debug
//!   info, a unit past the budget, or a line-tables-only short name where
//!   the symbol gives the full path).
//!
//! The file is read with `pread`, never mapped: what the process holds is the
//! buffers of one unit at a time, which [`Budget`] bounds. A unit that would
//! take it past its limit is not read; its addresses keep symbol-table names
//! and [`Cut`] says how many.
//!
//! Between calls the caller keeps an [`Index`] per file: where the
//! `.debug_aranges` sets and blocks of symbols are and what addresses they
//! span, and per unit read, where its outermost functions and line
//! sequences are. With it a later batch reads only the sets, symbols,
//! function subtrees and sequences that can hold its addresses, not whole
//! tables. It follows the units read, and [`Index::trim`] bounds it.
//!
//! Separate debug files (`.gnu_debuglink`, `/usr/lib/debug/.build-id`) are
//! not followed: a shared library gets the DWARF it carries itself, if any,
//! else its symbol table (`.symtab`, or `.dynsym` when stripped).

mod aranges;
mod elf;
mod sequences;
mod symtab;
mod unit;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The longest string (name, path) read from the file; longer ones are cut.
const MAX_NAME: u64 = 4096;

/// How many bytes of file data and parsed tables the reader may hold at once.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    limit: u64,
    held: u64,
    peak: u64,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub(crate) fn new(limit: u64) -> Budget {
        Budget {
            limit,
            held: 0,
            peak: 0,
        }
    }

    /// Takes `bytes` from the budget; `false` (and nothing taken) if that
    /// would go past the limit.
    fn reserve(&mut self, bytes: u64) -> bool {
        let held = self.held.saturating_add(bytes);
        if held > self.limit {
            return false;
        }
        self.held = held;
        self.peak = self.peak.max(held);
        true
    }

    fn release(&mut self, bytes: u64) {
        self.held = self.held.saturating_sub(bytes);
    }

    /// The most the reader held at once, in bytes.
    pub(crate) fn peak(&self) -> u64 {
        self.peak
    }

    /// The limit, in bytes.
    #[cfg(test)]
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }
}

/// One frame at an address: a function, or a function inlined into it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Frame {
    /// Its name, demangled without the hash (empty if unknown).
    pub(crate) function: String,
    /// Its name as written in the file (mangled, if it is).
    pub(crate) system_name: String,
    /// Its source file (empty if unknown).
    pub(crate) file: String,
    /// Its line in `file` (0 if unknown).
    pub(crate) line: u32,
}

/// What the budget left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cut {
    /// Compilation units not read.
    pub(crate) units: usize,
    /// Addresses in them, named from the symbol table only.
    pub(crate) addresses: usize,
    /// The most one of them would have needed, in bytes.
    pub(crate) needed: u64,
}

/// The frames of a batch of addresses.
#[derive(Debug, Default)]
pub(crate) struct Symbolized {
    /// Per address, in the order given: innermost frame first, as pprof's
    /// `Location.line` wants them; empty when nothing names the address.
    pub(crate) frames: Vec<Vec<Frame>>,
    /// Per address, in the order given: whether its frames are all the file
    /// says (not cut by the budget, nothing failed reading), and so may be
    /// kept for later profiles.
    pub(crate) complete: Vec<bool>,
    /// Units left out for the budget.
    pub(crate) cut: Cut,
    /// The first thing that went wrong reading the file, if anything did.
    pub(crate) problem: Option<String>,
}

/// Where things are in one file, from earlier reads of it: what makes a
/// later read cheap. It must be used only with the file it was built from.
#[derive(Debug, Default)]
pub(crate) struct Index {
    aranges: Option<aranges::Spans>,
    symbols: Option<symtab::Blocks>,
    /// Per unit read, by its `.debug_info` offset: what it left, and when it
    /// was last used ([`Index::clock`]).
    units: HashMap<u64, (unit::Known, u64)>,
    clock: u64,
}

impl Index {
    /// The bytes it holds (its tables' capacity, not the hash table's
    /// slack, which [`Index::UNIT_OVERHEAD`] covers per unit).
    pub(crate) fn cost(&self) -> u64 {
        let units = self.units.values().fold(0_u64, |sum, (known, _)| {
            sum.saturating_add(known.cost())
                .saturating_add(Self::UNIT_OVERHEAD)
        });
        self.aranges
            .as_ref()
            .map_or(0, aranges::Spans::cost)
            .saturating_add(self.symbols.as_ref().map_or(0, symtab::Blocks::cost))
            .saturating_add(units)
            .saturating_add(size_of::<Index>() as u64)
    }

    /// Bytes counted per unit besides its tables: its key, used time and
    /// slot in the hash table, with spare capacity, and allocator headers.
    const UNIT_OVERHEAD: u64 = 96;

    /// Drops what it holds, least recently used units first, then the
    /// symbol blocks and the aranges spans, until it holds at most `cap`
    /// bytes.
    pub(crate) fn trim(&mut self, cap: u64) {
        if self.cost() <= cap {
            return;
        }
        let mut by_age: Vec<(u64, u64)> = self
            .units
            .iter()
            .map(|(offset, (_, used))| (*used, *offset))
            .collect();
        by_age.sort_unstable();
        let mut held = self.cost();
        for (_, offset) in by_age {
            if held <= cap {
                return;
            }
            if let Some((known, _)) = self.units.remove(&offset) {
                held = held.saturating_sub(known.cost().saturating_add(Self::UNIT_OVERHEAD));
            }
        }
        if self.cost() > cap {
            self.symbols = None;
        }
        if self.cost() > cap {
            self.aranges = None;
        }
    }
}

/// The frames of `addresses` (file-relative: as the ELF file's own virtual
/// addresses, the runtime address minus the load bias) in the file at
/// `path`, holding at most `budget`'s limit at once. `index` is what earlier
/// calls on the same file left (or a new one); this call adds to it.
pub(crate) fn symbolize(
    path: &Path,
    addresses: &[u64],
    budget: &mut Budget,
    index: &mut Index,
) -> Symbolized {
    let mut out = Symbolized {
        frames: vec![Vec::new(); addresses.len()],
        complete: vec![false; addresses.len()],
        ..Symbolized::default()
    };
    let elf = match elf::Elf::open(path) {
        Ok(elf) => elf,
        Err(e) => {
            out.problem = Some(format!("cannot read {}: {e}", path.display()));
            return out;
        }
    };
    // Sorted and distinct, each with the positions it came from.
    let mut positions: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, &address) in addresses.iter().enumerate() {
        positions.entry(address).or_default().push(i);
    }
    let sorted: Vec<u64> = positions.keys().copied().collect();
    let mut found: Vec<unit::Found> = Vec::new();
    found.resize_with(sorted.len(), unit::Found::default);
    let mut complete = vec![true; sorted.len()];

    let dwarf = elf.sections.debug_info.usable()
        && elf.sections.debug_abbrev.usable()
        && elf.sections.debug_line.usable();
    if dwarf {
        read_units(
            &elf,
            &sorted,
            &mut found,
            &mut complete,
            budget,
            index,
            &mut out,
        );
    } else if elf.sections.debug_info.compressed {
        out.problem = Some(format!(
            "{}: compressed debug sections are not read; named from the symbol table",
            path.display()
        ));
    }
    if !name_from_symbols(&elf, &sorted, &mut found, &mut index.symbols, &mut out) {
        complete.fill(false);
    }

    for ((found, complete), (_, at)) in found.into_iter().zip(complete).zip(positions) {
        for i in at {
            if let Some(slot) = out.frames.get_mut(i) {
                slot.clone_from(&found.frames);
            }
            if let Some(slot) = out.complete.get_mut(i) {
                *slot = complete;
            }
        }
    }
    out
}

/// Fills `found` from the DWARF units that hold `sorted`'s addresses;
/// clears `complete` where a unit was not read.
fn read_units(
    elf: &elf::Elf,
    sorted: &[u64],
    found: &mut [unit::Found],
    complete: &mut [bool],
    budget: &mut Budget,
    index: &mut Index,
    out: &mut Symbolized,
) {
    let (units, starts) = match aranges::units_of(elf, sorted, &mut index.aranges) {
        Ok(found) => found,
        Err(e) => {
            out.problem
                .get_or_insert_with(|| format!("reading .debug_aranges: {e}"));
            complete.fill(false);
            return;
        }
    };
    // Unit offset → indices into `sorted` (ascending, so addresses stay sorted).
    let mut by_unit: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, unit) in units.iter().enumerate() {
        if let Some(unit) = unit {
            by_unit.entry(*unit).or_default().push(i);
        }
    }
    for (offset, indices) in by_unit {
        let addresses: Vec<u64> = indices
            .iter()
            .filter_map(|&i| sorted.get(i).copied())
            .collect();
        index.clock += 1;
        let (known, used) = index.units.entry(offset).or_default();
        *used = index.clock;
        let result = unit::frames(elf, offset, &addresses, &starts, budget, known);
        if result.is_err() {
            for &i in &indices {
                if let Some(slot) = complete.get_mut(i) {
                    *slot = false;
                }
            }
        }
        match result {
            Ok(frames) => {
                for (i, frames) in indices.into_iter().zip(frames) {
                    if let Some(slot) = found.get_mut(i) {
                        *slot = frames;
                    }
                }
            }
            Err(unit::Skipped::Budget { needed }) => {
                out.cut.units += 1;
                out.cut.addresses += addresses.len();
                out.cut.needed = out.cut.needed.max(needed);
            }
            Err(unit::Skipped::Io(e)) => {
                out.problem
                    .get_or_insert_with(|| format!("reading the unit at {offset:#x}: {e}"));
            }
            Err(unit::Skipped::Dwarf(e)) => {
                out.problem
                    .get_or_insert_with(|| format!("parsing the unit at {offset:#x}: {e}"));
            }
        }
    }
}

/// Names from the symbol table: for addresses without frames, and for a
/// function the DWARF names only by its short name (`"line-tables-only"`)
/// where the symbol starting at the same address has the full path, as GNU
/// `addr2line` does. `false` if the symbol table could not be read.
fn name_from_symbols(
    elf: &elf::Elf,
    sorted: &[u64],
    found: &mut [unit::Found],
    blocks: &mut Option<symtab::Blocks>,
    out: &mut Symbolized,
) -> bool {
    let wanted: Vec<usize> = found
        .iter()
        .enumerate()
        .filter(|(_, f)| f.frames.is_empty() || !f.outer_is_linkage)
        .map(|(i, _)| i)
        .collect();
    if wanted.is_empty() {
        return true;
    }
    let addresses: Vec<u64> = wanted
        .iter()
        .filter_map(|&i| sorted.get(i).copied())
        .collect();
    let (covering, strings) = match symtab::covering(elf, &addresses, blocks) {
        Ok(found) => found,
        Err(e) => {
            out.problem
                .get_or_insert_with(|| format!("reading the symbol table: {e}"));
            return false;
        }
    };
    let mut read_all = true;
    for (i, covering) in wanted.into_iter().zip(covering) {
        let (Some(covering), Some(found)) = (covering, found.get_mut(i)) else {
            continue;
        };
        if found.outer_low.is_some_and(|low| low != covering.start) {
            continue;
        }
        let Ok(raw) = symtab::name(elf, strings, covering) else {
            read_all = false;
            continue;
        };
        let function = demangle(&raw);
        match found.frames.last_mut() {
            Some(outer) => {
                outer.function = function;
                outer.system_name = raw;
            }
            None => found.frames.push(Frame {
                function,
                system_name: raw,
                ..Frame::default()
            }),
        }
    }
    read_all
}

/// The LEB128 number at `at` in `bytes` (signed ones have the same
/// framing: this skips them), `at` moved past it; `None` if `bytes` ends
/// first.
fn uleb(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0_u64;
    let mut shift = 0_u32;
    loop {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
        shift = shift.saturating_add(7);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
}

/// The unsigned `n`-byte (at most 8) integer at `at` in `bytes`.
fn uint(bytes: &[u8], at: usize, n: usize, endian: gimli::RunTimeEndian) -> Option<u64> {
    let bytes = bytes.get(at..at.checked_add(n)?)?;
    let fold = |acc: u64, &b: &u8| (acc << 8) | u64::from(b);
    Some(if endian == gimli::RunTimeEndian::Big {
        bytes.iter().fold(0, fold)
    } else {
        bytes.iter().rev().fold(0, fold)
    })
}

/// A linkage name demangled without its hash; other names as they are.
fn demangle(raw: &str) -> String {
    match rustc_demangle::try_demangle(raw) {
        Ok(name) => format!("{name:#}"),
        Err(_) => raw.to_owned(),
    }
}

#[cfg(test)]
// A skipped test says why on stderr.
#[allow(clippy::print_stderr)]
mod tests {
    use super::{Budget, Frame, Index, symbolize};
    use findshlibs::{SharedLibrary, TargetSharedLibrary};
    use std::path::PathBuf;
    use std::process::Command;

    /// The running test binary and its load bias.
    fn this_binary() -> (PathBuf, u64) {
        let mut bias = 0;
        let mut first = true;
        TargetSharedLibrary::each(|library| {
            if first {
                bias = library.virtual_memory_bias().0 as u64;
                first = false;
            }
        });
        (std::env::current_exe().unwrap(), bias)
    }

    /// Code addresses as a profile holds them: return addresses minus 1 of
    /// the current stack (test harness, std, this crate), and addresses inside
    /// a few functions of std and of this crate.
    #[inline(never)]
    fn sampled_addresses() -> Vec<u64> {
        let mut addresses = Vec::new();
        backtrace::trace(|frame| {
            if let Some(address) = (frame.ip() as u64).checked_sub(1) {
                addresses.push(address);
            }
            true
        });
        let functions: [usize; 6] = [
            symbolize as *const () as usize,
            Budget::new as *const () as usize,
            crate::trace::TraceRoot::parse as *const () as usize,
            std::fs::read::<&str> as *const () as usize,
            String::from_utf8_lossy as *const () as usize,
            <Vec<u8> as Clone>::clone as *const () as usize,
        ];
        for f in functions {
            addresses.push(f as u64);
        }
        addresses
    }

    /// `addr2line -a -f -i -C -e binary addresses…`, per address.
    fn gnu_addr2line(binary: &std::path::Path, addresses: &[u64]) -> Option<Vec<Vec<Frame>>> {
        let output = Command::new("addr2line")
            .args(["-a", "-f", "-i", "-C", "-e"])
            .arg(binary)
            .args(addresses.iter().map(|a| format!("{a:#x}")))
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let mut out: Vec<Vec<Frame>> = Vec::new();
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            if line.starts_with("0x") {
                out.push(Vec::new());
                continue;
            }
            let location = lines.next().unwrap_or_default();
            let (file, line_no) = location.rsplit_once(':').unwrap_or((location, "0"));
            let line_no = line_no.split(' ').next().unwrap_or("0");
            out.last_mut().unwrap().push(Frame {
                function: line.to_owned(),
                system_name: String::new(),
                file: if file == "??" {
                    String::new()
                } else {
                    file.to_owned()
                },
                line: line_no.parse().unwrap_or(0),
            });
        }
        Some(out)
    }

    /// GNU `addr2line` (binutils 2.40) gives the symbol table's name to the
    /// innermost frame, not the outermost, when the DWARF names functions by
    /// their short `DW_AT_name` only (`"line-tables-only"`); the outermost
    /// keeps the short name. We put the symbol's name on the function it
    /// names. Undo that swap in `theirs`, after checking it is one.
    fn undo_gnu_swap(ours: &[Frame], theirs: &mut [Frame]) {
        let (Some(our_inner), Some(our_outer)) = (ours.first(), ours.last()) else {
            return;
        };
        if theirs.len() < 2 || theirs[0].function != our_outer.function {
            return;
        }
        theirs[0].function = our_inner.function.clone();
        theirs.last_mut().unwrap().function = our_outer.function.clone();
    }

    /// `addr2line` is installed by `.ci/run` (binutils); a test that needs
    /// it is skipped without it, except where `XRAYPROFILE_REQUIRE_GO` says
    /// CI's tools must be there.
    fn gnu_addr2line_or_skip(
        binary: &std::path::Path,
        addresses: &[u64],
    ) -> Option<Vec<Vec<Frame>>> {
        let theirs = gnu_addr2line(binary, addresses);
        if theirs.is_none() {
            assert!(
                std::env::var_os("XRAYPROFILE_REQUIRE_GO").is_none(),
                "addr2line (binutils) is missing but XRAYPROFILE_REQUIRE_GO is set; .ci/run installs it"
            );
            eprintln!("skipped: addr2line (binutils) is not installed; .ci/run installs it");
        }
        theirs
    }

    fn in_binary(addresses: Vec<u64>, bias: u64) -> Vec<u64> {
        addresses
            .into_iter()
            .filter_map(|a| a.checked_sub(bias))
            .filter(|&a| a < 1 << 40)
            .collect()
    }

    #[test]
    fn frames_match_gnu_addr2line() {
        let (binary, bias) = this_binary();
        let addresses = in_binary(sampled_addresses(), bias);
        let mut budget = Budget::new(64 << 20);
        let ours = symbolize(&binary, &addresses, &mut budget, &mut Index::default());
        let Some(theirs) = gnu_addr2line_or_skip(&binary, &addresses) else {
            return;
        };
        assert_eq!(ours.problem, None);
        assert_eq!(ours.cut, super::Cut::default());
        assert_eq!(theirs.len(), addresses.len());
        let mut inlined = 0;
        for ((address, ours), mut theirs) in addresses.iter().zip(&ours.frames).zip(theirs) {
            undo_gnu_swap(ours, &mut theirs);
            let ours: Vec<(&str, &str, u32)> = ours
                .iter()
                .map(|f| (f.function.as_str(), f.file.as_str(), f.line))
                .collect();
            let theirs: Vec<(&str, &str, u32)> = theirs
                .iter()
                .map(|f| (f.function.as_str(), f.file.as_str(), f.line))
                .collect();
            assert_eq!(ours, theirs, "frames at {address:#x}");
            inlined += usize::from(ours.len() > 1);
        }
        assert!(inlined > 0, "some addresses have inlined frames");
        assert!(budget.peak() > 0 && budget.peak() <= budget.limit());
    }

    /// Addresses inside every `step`th function of `binary`, from `nm`
    /// (binutils, which `.ci/run` installs with `addr2line`).
    fn spread_addresses(binary: &std::path::Path, step: usize) -> Option<Vec<u64>> {
        let output = Command::new("nm")
            .args(["-S", "--defined-only"])
            .arg(binary)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let mut addresses: Vec<u64> = text
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let [start, size, "t" | "T", _] = fields[..] else {
                    return None;
                };
                let start = u64::from_str_radix(start, 16).ok()?;
                let size = u64::from_str_radix(size, 16).ok()?;
                Some(start + size / 2)
            })
            .step_by(step)
            .collect();
        addresses.sort_unstable();
        addresses.dedup();
        Some(addresses)
    }

    /// Functions nested at different depths (namespaces in `"limited"`
    /// DWARF) read in one walk: each address gets the frames it gets alone.
    #[test]
    fn a_batch_gives_each_address_the_frames_it_gets_alone() {
        let (binary, _) = this_binary();
        let Some(addresses) = spread_addresses(&binary, 40) else {
            assert!(
                std::env::var_os("XRAYPROFILE_REQUIRE_GO").is_none(),
                "nm (binutils) is missing but XRAYPROFILE_REQUIRE_GO is set; .ci/run installs it"
            );
            eprintln!("skipped: nm (binutils) is not installed; .ci/run installs it");
            return;
        };
        let addresses: Vec<u64> = addresses.into_iter().take(400).collect();
        let batch = symbolize(
            &binary,
            &addresses,
            &mut Budget::new(64 << 20),
            &mut Index::default(),
        );
        let with_lines = batch
            .frames
            .iter()
            .filter(|f| f.first().is_some_and(|f| f.line > 0))
            .count();
        assert!(with_lines > 100, "{with_lines} of {}", addresses.len());
        // Read alone with what earlier reads left (the units, aranges and
        // symbols they indexed), and alone from scratch: the same frames.
        let mut index = Index::default();
        for (address, frames) in addresses.iter().zip(&batch.frames) {
            let indexed = symbolize(&binary, &[*address], &mut Budget::new(64 << 20), &mut index);
            assert_eq!(&indexed.frames[0], frames, "{address:#x}, indexed");
            assert_eq!(indexed.problem, None);
        }
        for (address, frames) in addresses.iter().zip(&batch.frames).step_by(7) {
            let alone = symbolize(
                &binary,
                &[*address],
                &mut Budget::new(64 << 20),
                &mut Index::default(),
            );
            assert_eq!(&alone.frames[0], frames, "{address:#x}");
        }
        assert!(
            index.units.len() > 10,
            "{} units indexed",
            index.units.len()
        );
        assert!(index.units.values().any(|(known, _)| known.cost() > 1024));
        assert!(index.aranges.is_some() && index.symbols.is_some());
    }

    #[test]
    fn past_the_budget_addresses_keep_symbol_names() {
        let (binary, bias) = this_binary();
        let addresses = in_binary(sampled_addresses(), bias);
        let mut full = Budget::new(64 << 20);
        let named = symbolize(&binary, &addresses, &mut full, &mut Index::default());
        // Less than any unit with its line program needs.
        let mut tiny = Budget::new(2 * 1024);
        let cut = symbolize(&binary, &addresses, &mut tiny, &mut Index::default());
        assert!(
            tiny.peak() <= tiny.limit(),
            "held {} of {}",
            tiny.peak(),
            tiny.limit()
        );
        assert!(cut.cut.units > 0 && cut.cut.addresses > 0, "{:?}", cut.cut);
        assert!(cut.cut.needed > tiny.limit());
        // Cut frames are never kept for later profiles; full ones may be.
        assert!(named.complete.iter().all(|&c| c), "{:?}", named.complete);
        assert!(
            cut.complete.iter().filter(|&&c| !c).count() >= cut.cut.addresses,
            "{:?}",
            cut.complete
        );
        let mut symbol_named = 0;
        for ((address, cut), named) in addresses.iter().zip(&cut.frames).zip(&named.frames) {
            // No lines and no inlined frames: the symbol covering the address.
            assert!(cut.len() <= 1, "{address:#x}: {cut:?}");
            if let Some(frame) = cut.first() {
                assert_eq!((frame.file.as_str(), frame.line), ("", 0), "{address:#x}");
                assert_eq!(
                    Some(&frame.function),
                    named.last().map(|f| &f.function),
                    "{address:#x}: the outermost function's name"
                );
                symbol_named += 1;
            }
        }
        assert!(
            symbol_named * 2 > addresses.len(),
            "{symbol_named} of {}",
            addresses.len()
        );
        // A budget that fits one unit at a time reads them all.
        let mut enough = Budget::new(full.peak());
        let again = symbolize(&binary, &addresses, &mut enough, &mut Index::default());
        assert_eq!(again.cut, super::Cut::default());
        assert_eq!(again.frames, named.frames);
        // Each address's frames are the same whatever else is in its batch
        // (what keeping them per address relies on).
        for (address, named) in addresses.iter().zip(&named.frames).step_by(3) {
            let alone = symbolize(
                &binary,
                &[*address],
                &mut Budget::new(64 << 20),
                &mut Index::default(),
            );
            assert_eq!(&alone.frames[0], named, "{address:#x}");
        }
    }

    #[test]
    fn shared_libraries_are_named_from_their_symbol_table() {
        let mut libc = None;
        TargetSharedLibrary::each(|library| {
            let name = library.name().to_string_lossy().into_owned();
            if name.contains("libc.so") {
                libc = Some((PathBuf::from(name), library.virtual_memory_bias().0 as u64));
            }
        });
        let Some((path, bias)) = libc else {
            eprintln!("skipped: not linked against a shared glibc");
            return;
        };
        let getpid = libc::getpid as *const () as u64;
        let mut budget = Budget::new(1 << 20);
        let out = symbolize(&path, &[getpid - bias], &mut budget, &mut Index::default());
        let names: Vec<&str> = out.frames[0].iter().map(|f| f.function.as_str()).collect();
        assert!(names.iter().any(|n| n.contains("getpid")), "{names:?}");
        assert!(budget.peak() <= budget.limit());
    }
}
