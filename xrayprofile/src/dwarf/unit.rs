//! One compilation unit, read for a sorted batch of its addresses: its DIEs
//! (which function, and which functions inlined into it, hold each address),
//! its line program run once for all of them, strings read where referenced.
//! Everything read is dropped when [`frames`] returns but a [`Known`]: where
//! the unit's functions and line sequences are, so that a later batch in
//! the same unit walks only the functions and runs only the sequences that
//! can hold its addresses.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::rc::Rc;

use gimli::constants as dw;
use gimli::{
    AttributeValue, DebugAbbrev, DebugAbbrevOffset, DebugAddr, DebugAddrBase, DebugInfo, DebugLine,
    DebugLineOffset, DebugRanges, DebugRngLists, DebuggingInformationEntry, EndianSlice,
    RangeLists, RangeListsOffset, RunTimeEndian, UnitHeader, UnitOffset,
};

use super::elf::{Elf, Section};
use super::{Budget, Frame, MAX_NAME, sequences, uint, uleb};

type Slice<'a> = EndianSlice<'a, RunTimeEndian>;

/// First read of an abbreviation table; doubled until it parses.
const ABBREV_WINDOW: u64 = 4 * 1024;
/// Bytes of range lists read at once, kept while the unit is read.
const RANGES_CHUNK: u64 = 64 * 1024;
/// Unit headers walked to find the unit a reference lands in.
const MAX_HEADER_STEPS: u32 = 256;
/// Bytes read at a DIE of another unit (one DIE's attributes).
const DIE_WINDOW: u64 = 512;
/// How far `dw::DW_AT_abstract_origin`/`dw::DW_AT_specification` chains are followed.
const NAME_DEPTH: u8 = 4;
/// Parsed abbreviations and line-program headers take about this many
/// times their bytes on the heap.
const PARSED_FACTOR: u64 = 4;

/// Why a unit gave no frames.
#[derive(Debug)]
pub(super) enum Skipped {
    /// Reading it would have taken the budget past its limit; `needed` bytes.
    Budget { needed: u64 },
    /// The file could not be read.
    Io(io::Error),
    /// The unit's DWARF is malformed or uses forms the reader does not.
    Dwarf(gimli::Error),
}

impl From<io::Error> for Skipped {
    fn from(e: io::Error) -> Skipped {
        Skipped::Io(e)
    }
}

impl From<gimli::Error> for Skipped {
    fn from(e: gimli::Error) -> Skipped {
        Skipped::Dwarf(e)
    }
}

/// A function, or a function inlined into it, holding an address.
#[derive(Debug, Clone, Copy)]
struct Scope {
    die: UnitOffset<usize>,
    /// Where the next (inner) scope was inlined, if it is.
    call_file: u64,
    call_line: u32,
    /// The scope's lowest address (to match it with a symbol).
    low: u64,
}

/// A DIE of this unit, or of another one by its `.debug_info` offset.
#[derive(Debug, Clone, Copy)]
enum Die {
    Local(UnitOffset<usize>),
    Foreign(u64),
}

/// What a DIE's own attributes say about its name.
enum Named {
    Found(Name),
    /// Its `DW_AT_name`, if any, and the DIE to look at next.
    Short(Option<String>, Option<Die>),
}

/// What the reader needs of another unit's header.
struct ForeignHeader {
    encoding: gimli::Encoding,
    abbrev_offset: u64,
    header_size: usize,
    /// The unit's length, its length field included.
    total: u64,
}

impl ForeignHeader {
    /// Parses the first bytes of a unit (DWARF 2-5, compile units).
    fn parse(bytes: &[u8], endian: RunTimeEndian) -> Option<ForeignHeader> {
        let word = |at: usize, n: usize| uint(bytes, at, n, endian);
        let (format, length, at) = match word(0, 4)? {
            0xffff_ffff => (gimli::Format::Dwarf64, word(4, 8)?, 12),
            length => (gimli::Format::Dwarf32, length, 4),
        };
        let offset_size = usize::from(format.word_size());
        let version = u16::try_from(word(at, 2)?).ok()?;
        let (address_size, abbrev_offset, header_size) = if version >= 5 {
            // unit_type, address_size, debug_abbrev_offset
            (
                word(at + 3, 1)?,
                word(at + 4, offset_size)?,
                at + 4 + offset_size,
            )
        } else {
            // debug_abbrev_offset, address_size
            (
                word(at + 2 + offset_size, 1)?,
                word(at + 2, offset_size)?,
                at + 3 + offset_size,
            )
        };
        Some(ForeignHeader {
            encoding: gimli::Encoding {
                format,
                version,
                address_size: u8::try_from(address_size).ok()?,
            },
            abbrev_offset,
            header_size,
            total: length.saturating_add(at as u64),
        })
    }
}

/// A function's name as the DWARF gives it.
#[derive(Debug, Clone)]
pub(super) struct Name {
    /// The linkage name (mangled) or else the plain `dw::DW_AT_name`.
    pub(super) raw: String,
    /// Whether `raw` is a linkage name (full path) rather than a short name.
    pub(super) linkage: bool,
}

/// What a unit says about one address, innermost frame first.
#[derive(Debug, Default)]
pub(super) struct Found {
    pub(super) frames: Vec<Frame>,
    /// Whether the outermost frame's name is a linkage name.
    pub(super) outer_is_linkage: bool,
    /// The outermost function's lowest address; `None` when no function
    /// DIE holds the address (line rows only).
    pub(super) outer_low: Option<u64>,
}

/// A function DIE with code that no other function DIE with code encloses:
/// where a walk for an address in `[low, high)` starts.
#[derive(Debug, Clone, Copy)]
struct Outermost {
    low: u64,
    high: u64,
    die: usize,
}

/// What a first read of a unit leaves for the next ones: its outermost
/// functions (24 bytes each; std's largest unit has about 3,000 with code)
/// and its line program's sequences.
#[derive(Debug, Default)]
pub(super) struct Known {
    functions: Option<Vec<Outermost>>,
    sequences: Option<Vec<sequences::Sequence>>,
}

impl Known {
    /// The bytes it holds.
    pub(super) fn cost(&self) -> u64 {
        let functions = self
            .functions
            .as_ref()
            .map_or(0, |f| f.capacity() * size_of::<Outermost>());
        let sequences = self
            .sequences
            .as_ref()
            .map_or(0, |s| s.capacity() * size_of::<sequences::Sequence>());
        (size_of::<Known>() + functions + sequences) as u64
    }
}

/// The bytes of one unit and what its DIEs refer to.
struct Unit<'a> {
    elf: &'a Elf,
    header: UnitHeader<Slice<'a>>,
    abbrevs: gimli::Abbreviations,
    str_offsets_base: u64,
    addr_base: u64,
    rnglists_base: u64,
    base_address: u64,
    /// This unit's `.debug_info` offset (its header, parsed from a buffer of
    /// its own, says 0).
    start: u64,
    /// Every unit's `.debug_info` offset, sorted: where a reference into
    /// another unit (`DW_FORM_ref_addr`, cross-unit inlining) lands.
    starts: &'a [u64],
    /// Abbreviation tables of the other units such references reached, by
    /// their unit's offset, and what they count against the budget.
    foreign: HashMap<u64, Rc<gimli::Abbreviations>>,
    foreign_cost: u64,
    /// The last [`RANGES_CHUNK`] of range lists read, and where it starts.
    ranges_chunk: RefCell<Option<(u64, Vec<u8>)>>,
}

/// Reads `len` bytes of `section` at `offset`, doubling the read from
/// `first` until `parse` stops running out of input. Each window is counted
/// in `budget` (times `factor`) while it is parsed; returns the value and
/// the window's length.
fn windowed<T>(
    elf: &Elf,
    section: Section,
    offset: u64,
    first: u64,
    budget: &mut Budget,
    factor: u64,
    mut parse: impl FnMut(&[u8]) -> gimli::Result<T>,
) -> Result<(T, u64), Skipped> {
    let mut len = first;
    loop {
        let needed = len.saturating_mul(factor);
        if !budget.reserve(needed) {
            return Err(Skipped::Budget { needed });
        }
        let bytes = elf.read(section, offset, len);
        let result = bytes.map(|bytes| (bytes.len() as u64, parse(&bytes)));
        budget.release(needed);
        match result? {
            (read, Ok(value)) => return Ok((value, read)),
            (read, Err(gimli::Error::UnexpectedEof(_))) if read == len => {
                len = len.saturating_mul(2);
            }
            (_, Err(e)) => return Err(e.into()),
        }
    }
}

/// The abbreviation table at the start of `window`. gimli takes a table cut
/// short at an entry's end for a whole one (it forgives a missing
/// terminator), so the terminator is looked for first: without it the
/// window is too short.
fn abbreviations(window: &[u8], endian: RunTimeEndian) -> gimli::Result<gimli::Abbreviations> {
    let Some(len) = abbrev_table_len(window) else {
        return Err(gimli::Error::UnexpectedEof(gimli::ReaderOffsetId(0)));
    };
    let table = window.get(..len).unwrap_or(window);
    DebugAbbrev::new(table, endian).abbreviations(DebugAbbrevOffset(0))
}

/// The length of the abbreviation table at the start of `bytes`, up to and
/// including its terminating 0 code; `None` if `bytes` ends first.
fn abbrev_table_len(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    let uleb = |at: &mut usize| uleb(bytes, at);
    loop {
        if uleb(&mut at)? == 0 {
            return Some(at);
        }
        uleb(&mut at)?; // tag
        at += 1; // children
        loop {
            let name = uleb(&mut at)?;
            let form = uleb(&mut at)?;
            if form == u64::from(dw::DW_FORM_implicit_const.0) {
                uleb(&mut at)?; // its value (SLEB128 has the same byte framing)
            }
            if name == 0 && form == 0 {
                break;
            }
        }
    }
}

/// The length of the initial-length-prefixed record at `offset`.
fn record_len(elf: &Elf, section: Section, offset: u64) -> Result<u64, Skipped> {
    let prefix = elf.read(section, offset, 12)?;
    let word = |at: usize, n: usize| uint(&prefix, at, n, elf.endian);
    match word(0, 4) {
        Some(0xffff_ffff) => Ok(word(4, 8).unwrap_or(0).saturating_add(12)),
        Some(len) => Ok(len.saturating_add(4)),
        None => Err(Skipped::Dwarf(gimli::Error::UnexpectedEof(
            gimli::ReaderOffsetId(0),
        ))),
    }
}

/// The frames of `addresses` (sorted, all in the unit at `offset`), in the
/// same order; an address the unit does not cover gets none.
///
/// `known` is what an earlier read of this unit left, or is filled.
pub(super) fn frames(
    elf: &Elf,
    offset: u64,
    addresses: &[u64],
    starts: &[u64],
    budget: &mut Budget,
    known: &mut Known,
) -> Result<Vec<Found>, Skipped> {
    let sections = &elf.sections;
    let length = record_len(elf, sections.debug_info, offset)?;
    if !budget.reserve(length) {
        return Err(Skipped::Budget { needed: length });
    }
    let result = elf
        .read(sections.debug_info, offset, length)
        .map_err(Skipped::from)
        .and_then(|bytes| read_unit(elf, offset, &bytes, addresses, starts, budget, known));
    budget.release(length);
    result
}

fn read_unit<'a>(
    elf: &'a Elf,
    offset: u64,
    bytes: &'a [u8],
    addresses: &[u64],
    starts: &'a [u64],
    budget: &mut Budget,
    known: &mut Known,
) -> Result<Vec<Found>, Skipped> {
    let header = DebugInfo::new(bytes, elf.endian)
        .units()
        .next()?
        .ok_or(Skipped::Dwarf(gimli::Error::UnexpectedEof(
            gimli::ReaderOffsetId(0),
        )))?;
    let abbrev_offset = header.debug_abbrev_offset().0 as u64;
    let (abbrevs, window) = windowed(
        elf,
        elf.sections.debug_abbrev,
        abbrev_offset,
        ABBREV_WINDOW,
        budget,
        PARSED_FACTOR,
        |window| abbreviations(window, elf.endian),
    )?;
    // The parsed abbreviations outlive their window, and a chunk of range
    // lists is kept: both count until the unit is done.
    let abbrev_cost = window
        .saturating_mul(PARSED_FACTOR)
        .saturating_add(RANGES_CHUNK);
    if !budget.reserve(abbrev_cost) {
        return Err(Skipped::Budget {
            needed: abbrev_cost,
        });
    }
    let mut unit = Unit {
        elf,
        header,
        abbrevs,
        str_offsets_base: 0,
        addr_base: 0,
        rnglists_base: 0,
        base_address: 0,
        start: offset,
        starts,
        foreign: HashMap::new(),
        foreign_cost: 0,
        ranges_chunk: RefCell::new(None),
    };
    let result = unit.frames(addresses, budget, known);
    budget.release(abbrev_cost.saturating_add(unit.foreign_cost));
    result
}

impl<'a> Unit<'a> {
    fn frames(
        &mut self,
        addresses: &[u64],
        budget: &mut Budget,
        known: &mut Known,
    ) -> Result<Vec<Found>, Skipped> {
        let mut chains: Vec<Vec<Scope>> = vec![Vec::new(); addresses.len()];
        let mut stmt_list = None;
        let mut comp_dir: Option<Vec<u8>> = None;
        let mut comp_name: Option<Vec<u8>> = None;
        {
            // Raw entries: most DIEs (types, variables, lexical blocks) are
            // skipped without building their attribute lists.
            let mut raw = self.header.entries_raw(&self.abbrevs, None)?;
            let Some(root) = raw.read_abbreviation()? else {
                return Ok(Vec::new());
            };
            let mut root_attrs = Vec::with_capacity(root.attributes().len());
            for spec in root.attributes() {
                root_attrs.push(raw.read_attribute(*spec)?);
            }
            for attr in &root_attrs {
                match (attr.name(), attr.value()) {
                    (dw::DW_AT_str_offsets_base, AttributeValue::DebugStrOffsetsBase(b)) => {
                        self.str_offsets_base = b.0 as u64;
                    }
                    (dw::DW_AT_addr_base, AttributeValue::DebugAddrBase(b)) => {
                        self.addr_base = b.0 as u64;
                    }
                    (dw::DW_AT_rnglists_base, AttributeValue::DebugRngListsBase(b)) => {
                        self.rnglists_base = b.0 as u64;
                    }
                    _ => {}
                }
            }
            for attr in &root_attrs {
                match (attr.name(), attr.value()) {
                    (dw::DW_AT_low_pc, value) => {
                        self.base_address = self.address(value).unwrap_or(0);
                    }
                    (dw::DW_AT_stmt_list, AttributeValue::DebugLineRef(o)) => stmt_list = Some(o.0),
                    (dw::DW_AT_comp_dir, value) => comp_dir = self.string(value),
                    (dw::DW_AT_name, value) => comp_name = self.string(value),
                    _ => {}
                }
            }
            match &known.functions {
                Some(functions) => {
                    // Each outermost function that may hold an address, in
                    // DIE order (a later one holding it wins, as in a walk
                    // of the whole unit).
                    for function in functions {
                        let first = addresses.partition_point(|&a| a < function.low);
                        if addresses.get(first).is_none_or(|&a| a >= function.high) {
                            continue;
                        }
                        let mut raw = self
                            .header
                            .entries_raw(&self.abbrevs, Some(UnitOffset(function.die)))?;
                        self.walk(&mut raw, addresses, &mut chains, true, None)?;
                    }
                }
                None => {
                    let mut outermost = Vec::new();
                    self.walk(
                        &mut raw,
                        addresses,
                        &mut chains,
                        false,
                        Some(&mut outermost),
                    )?;
                    outermost.shrink_to_fit();
                    known.functions = Some(outermost);
                }
            }
        }
        let lines = match stmt_list {
            Some(offset) => self.lines(
                offset as u64,
                addresses,
                &chains,
                (comp_dir.as_deref(), comp_name.as_deref()),
                budget,
                &mut known.sequences,
            )?,
            None => Lines::default(),
        };
        let mut names: HashMap<UnitOffset<usize>, Option<Name>> = HashMap::new();
        let mut found = Vec::with_capacity(addresses.len());
        for (i, chain) in chains.iter().enumerate() {
            let mut frames = Vec::with_capacity(chain.len());
            let (mut file, mut line) = lines.at.get(i).cloned().unwrap_or_default();
            for scope in chain.iter().rev() {
                let name = match names.get(&scope.die) {
                    Some(name) => name.clone(),
                    None => {
                        let name = self.name(Die::Local(scope.die), NAME_DEPTH, budget);
                        names.insert(scope.die, name.clone());
                        name
                    }
                };
                let (function, system_name) = match &name {
                    Some(name) => (super::demangle(&name.raw), name.raw.clone()),
                    None => (String::new(), String::new()),
                };
                frames.push(Frame {
                    function,
                    system_name,
                    file: std::mem::take(&mut file),
                    line,
                });
                // The caller's location is where this scope was inlined.
                file = lines
                    .files
                    .get(&scope.call_file)
                    .cloned()
                    .unwrap_or_default();
                line = scope.call_line;
            }
            let outer = chain.first();
            let outer_is_linkage = outer
                .and_then(|s| names.get(&s.die))
                .and_then(Option::as_ref)
                .is_some_and(|n| n.linkage);
            if frames.is_empty() && (line != 0 || !file.is_empty()) {
                // Line rows but no function DIE (line tables of assembly).
                frames.push(Frame {
                    function: String::new(),
                    system_name: String::new(),
                    file,
                    line,
                });
            }
            found.push(Found {
                frames,
                outer_is_linkage,
                outer_low: outer.map(|s| s.low),
            });
        }
        Ok(found)
    }

    /// Walks DIEs from `raw` (the unit's root's children, or with `bounded`
    /// one function's subtree), pushing on `chains` the functions and
    /// inlined calls that hold each address; with `outermost`, lists there
    /// every function with code outside any other.
    fn walk(
        &self,
        raw: &mut gimli::EntriesRaw<'_, Slice<'a>>,
        addresses: &[u64],
        chains: &mut [Vec<Scope>],
        bounded: bool,
        mut outermost: Option<&mut Vec<Outermost>>,
    ) -> Result<(), Skipped> {
        let all: Vec<usize> = (0..addresses.len()).collect();
        // Scopes open at each depth, with the addresses they hold.
        let mut open: Vec<(isize, Vec<usize>)> = Vec::new();
        // Below a function holding none of the addresses, nothing can.
        let mut skip_below: Option<isize> = None;
        let mut first = true;
        while !raw.is_empty() {
            let depth = raw.next_depth();
            // A subtree ends at the next DIE at its root's depth.
            if bounded && !first && depth <= 0 {
                break;
            }
            first = false;
            let die = raw.next_offset();
            let Some(abbrev) = raw.read_abbreviation()? else {
                continue; // the end of a list of children
            };
            // Scopes end where any DIE at their depth or above starts,
            // whatever its tag: a function nested deeper in namespaces
            // after one that held an address is not inside it.
            while open.last().is_some_and(|(d, _)| *d >= depth) {
                open.pop();
            }
            let tag = abbrev.tag();
            // A function whose abbreviation has no address attribute (an
            // abstract instance or a declaration: most of std's, whose
            // units list every generic they inline) holds no code: its
            // attributes are skipped unread, its children still walked.
            let function = (tag == dw::DW_TAG_subprogram || tag == dw::DW_TAG_inlined_subroutine)
                && abbrev
                    .attributes()
                    .iter()
                    .any(|spec| spec.name() == dw::DW_AT_low_pc || spec.name() == dw::DW_AT_ranges);
            let skipped = skip_below.is_some_and(|limit| depth > limit);
            if !skipped {
                skip_below = None;
            }
            if skipped || !function {
                raw.skip_attributes(abbrev.attributes())?;
                continue;
            }
            let (mut low, mut high, mut list) = (None, None, None);
            let (mut call_file, mut call_line) = (0, 0);
            for spec in abbrev.attributes() {
                let attr = raw.read_attribute(*spec)?;
                match attr.name() {
                    dw::DW_AT_low_pc => low = Some(attr.value()),
                    dw::DW_AT_high_pc => high = Some(attr.value()),
                    dw::DW_AT_ranges => list = Some(attr.value()),
                    dw::DW_AT_call_file => {
                        call_file = match attr.value() {
                            AttributeValue::FileIndex(index) => index,
                            value => value.udata_value().unwrap_or(0),
                        };
                    }
                    dw::DW_AT_call_line => {
                        call_line = attr
                            .udata_value()
                            .and_then(|l| u32::try_from(l).ok())
                            .unwrap_or(0);
                    }
                    _ => {}
                }
            }
            let candidates = open.last().map_or(&all[..], |(_, held)| &held[..]);
            let ranges = match self.ranges(low, high, list) {
                Ok(ranges) => ranges,
                // A range list the reader cannot follow (DWARF 5 forms
                // through `.debug_addr`): that function is not found
                // here, the symbol table names it.
                Err(Skipped::Dwarf(_)) => Vec::new(),
                Err(other) => return Err(other),
            };
            if ranges.is_empty() {
                // Code the linker dropped (its address is 0): what is
                // inlined into it went with it. Most of std's unit
                // (33,809 inlined calls, 10,973 functions) is this.
                skip_below = Some(depth);
                continue;
            }
            if open.is_empty()
                && let Some(list) = outermost.as_deref_mut()
            {
                list.push(Outermost {
                    low: ranges.iter().map(|(lo, _)| *lo).min().unwrap_or(0),
                    high: ranges.iter().map(|(_, hi)| *hi).max().unwrap_or(0),
                    die: die.0,
                });
            }
            let held: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|&i| {
                    addresses
                        .get(i)
                        .is_some_and(|a| ranges.iter().any(|(lo, hi)| lo <= a && a < hi))
                })
                .collect();
            if held.is_empty() {
                skip_below = Some(depth);
                continue;
            }
            if tag != dw::DW_TAG_inlined_subroutine {
                (call_file, call_line) = (0, 0);
            }
            let low = ranges.iter().map(|(lo, _)| *lo).min().unwrap_or(0);
            for &i in &held {
                if let Some(chain) = chains.get_mut(i) {
                    if tag == dw::DW_TAG_subprogram {
                        // A function's code never sits inside another's.
                        chain.clear();
                    }
                    chain.push(Scope {
                        die,
                        call_file,
                        call_line,
                        low,
                    });
                }
            }
            if abbrev.has_children() {
                open.push((depth, held));
            }
        }
        Ok(())
    }

    /// A DIE's name: its linkage name, else its `DW_AT_name`, else its
    /// abstract origin's or specification's, as `addr2line` looks it up.
    fn name(&mut self, die: Die, depth: u8, budget: &mut Budget) -> Option<Name> {
        let (short, next) = match die {
            Die::Local(offset) => {
                let entry = self.header.entry(&self.abbrevs, offset).ok()?;
                match self.name_attrs(&entry, None) {
                    Named::Found(name) => return Some(name),
                    Named::Short(short, next) => (short, next),
                }
            }
            Die::Foreign(offset) => match self.foreign_attrs(offset, budget)? {
                Named::Found(name) => return Some(name),
                Named::Short(short, next) => (short, next),
            },
        };
        if let Some(raw) = short {
            return Some(Name {
                raw,
                linkage: false,
            });
        }
        self.name(next?, depth.checked_sub(1)?, budget)
    }

    /// The name attributes of `entry`; `foreign_start` is its unit's offset
    /// when it is not this unit.
    fn name_attrs(
        &self,
        entry: &DebuggingInformationEntry<Slice<'_>>,
        foreign_start: Option<u64>,
    ) -> Named {
        let mut short = None;
        let mut next = None;
        for attr in entry.attrs() {
            match attr.name() {
                dw::DW_AT_linkage_name | dw::DW_AT_MIPS_linkage_name => {
                    if let Some(raw) = self.text(attr.value()) {
                        return Named::Found(Name { raw, linkage: true });
                    }
                }
                dw::DW_AT_name => short = self.text(attr.value()),
                dw::DW_AT_abstract_origin | dw::DW_AT_specification => {
                    next = match (attr.value(), foreign_start) {
                        (AttributeValue::UnitRef(o), None) => Some(Die::Local(o)),
                        (AttributeValue::UnitRef(o), Some(start)) => {
                            Some(Die::Foreign(start.saturating_add(o.0 as u64)))
                        }
                        (AttributeValue::DebugInfoRef(o), _) => {
                            let o = o.0 as u64;
                            match o.checked_sub(self.start) {
                                Some(local)
                                    if foreign_start.is_none()
                                        && local < self.header.length_including_self() as u64 =>
                                {
                                    Some(Die::Local(UnitOffset(local as usize)))
                                }
                                _ => Some(Die::Foreign(o)),
                            }
                        }
                        _ => None,
                    };
                }
                _ => {}
            }
        }
        Named::Short(short, next)
    }

    /// The name attributes of the DIE at `.debug_info` offset `offset` in
    /// another unit: that unit's header and abbreviations are read, and a
    /// window at the DIE, not the unit.
    fn foreign_attrs(&mut self, offset: u64, budget: &mut Budget) -> Option<Named> {
        let mut start = *self.starts.get(
            self.starts
                .partition_point(|&s| s <= offset)
                .checked_sub(1)?,
        )?;
        let elf = self.elf;
        let info = elf.sections.debug_info;
        // Units without code are not in `.debug_aranges`: walk the headers
        // from the closest one listed.
        let mut steps = 0;
        let foreign = loop {
            let head = elf.read(info, start, 24).ok()?;
            let foreign = ForeignHeader::parse(&head, elf.endian)?;
            let end = start.saturating_add(foreign.total);
            if offset < end {
                break foreign;
            }
            steps += 1;
            if steps > MAX_HEADER_STEPS || foreign.total == 0 {
                return None;
            }
            start = end;
        };
        let abbrevs = match self.foreign.get(&start) {
            Some(abbrevs) => abbrevs.clone(),
            None => {
                let (abbrevs, window) = windowed(
                    elf,
                    elf.sections.debug_abbrev,
                    foreign.abbrev_offset,
                    ABBREV_WINDOW,
                    budget,
                    PARSED_FACTOR,
                    |window| abbreviations(window, elf.endian),
                )
                .ok()?;
                let cost = window.saturating_mul(PARSED_FACTOR);
                if !budget.reserve(cost) {
                    return None;
                }
                self.foreign_cost = self.foreign_cost.saturating_add(cost);
                let abbrevs = Rc::new(abbrevs);
                self.foreign.insert(start, abbrevs.clone());
                abbrevs
            }
        };
        let window = elf.read(info, offset, DIE_WINDOW).ok()?;
        let header = UnitHeader::new(
            foreign.encoding,
            // `unit_length` excludes its own field; gimli derives the
            // header's size from it and the entries' length.
            (window.len().saturating_add(foreign.header_size))
                .saturating_sub(usize::from(foreign.encoding.format.initial_length_size())),
            gimli::UnitType::Compilation,
            DebugAbbrevOffset(foreign.abbrev_offset as usize),
            gimli::SectionId::DebugInfo,
            gimli::UnitSectionOffset(start as usize),
            EndianSlice::new(&window, elf.endian),
        );
        let entry = header
            .entry(&abbrevs, UnitOffset(header.header_size()))
            .ok()?;
        Some(self.name_attrs(&entry, Some(start)))
    }

    fn text(&self, value: AttributeValue<Slice<'_>>) -> Option<String> {
        self.string(value)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A string attribute's bytes, read from the file where it points.
    fn string(&self, value: AttributeValue<Slice<'_>>) -> Option<Vec<u8>> {
        let sections = &self.elf.sections;
        let (section, offset) = match value {
            AttributeValue::String(s) => return Some(s.slice().to_vec()),
            AttributeValue::DebugStrRef(o) => (sections.debug_str, o.0 as u64),
            AttributeValue::DebugLineStrRef(o) => (sections.debug_line_str, o.0 as u64),
            AttributeValue::DebugStrOffsetsIndex(i) => {
                let size = u64::from(self.header.format().word_size());
                let at = self
                    .str_offsets_base
                    .saturating_add((i.0 as u64).saturating_mul(size));
                let word = self.word(sections.debug_str_offsets, at, size)?;
                (sections.debug_str, word)
            }
            _ => return None,
        };
        self.elf.string(section, offset, MAX_NAME).ok()
    }

    /// An unsigned `size`-byte word of `section` at `offset`.
    fn word(&self, section: Section, offset: u64, size: u64) -> Option<u64> {
        let bytes = self.elf.read(section, offset, size).ok()?;
        uint(&bytes, 0, usize::try_from(size).ok()?, self.elf.endian)
    }

    fn address(&self, value: AttributeValue<Slice<'a>>) -> Option<u64> {
        match value {
            AttributeValue::Addr(a) => Some(a),
            AttributeValue::DebugAddrIndex(i) => {
                let size = u64::from(self.header.address_size());
                let at = self
                    .addr_base
                    .saturating_add((i.0 as u64).saturating_mul(size));
                self.word(self.elf.sections.debug_addr, at, size)
            }
            _ => None,
        }
    }

    /// The address ranges of a function or inlined call.
    fn ranges(
        &self,
        low: Option<AttributeValue<Slice<'a>>>,
        high: Option<AttributeValue<Slice<'a>>>,
        list: Option<AttributeValue<Slice<'a>>>,
    ) -> Result<Vec<(u64, u64)>, Skipped> {
        let low = low.and_then(|value| self.address(value));
        if let (Some(low), Some(high)) = (low, high) {
            let high = match high {
                AttributeValue::Udata(len) => low.saturating_add(len),
                value => self.address(value).unwrap_or(low),
            };
            // 0 is where the linker puts code it dropped.
            return Ok(if low != 0 && low < high {
                vec![(low, high)]
            } else {
                Vec::new()
            });
        }
        let encoding = self.header.encoding();
        let offset = match list {
            Some(AttributeValue::RangeListsRef(o)) => {
                if encoding.version >= 5 {
                    self.rnglists_base.saturating_add(o.0 as u64)
                } else {
                    o.0 as u64
                }
            }
            Some(AttributeValue::DebugRngListsIndex(i)) => {
                let size = u64::from(self.header.format().word_size());
                let at = self
                    .rnglists_base
                    .saturating_add((i.0 as u64).saturating_mul(size));
                let Some(relative) = self.word(self.elf.sections.debug_rnglists, at, size) else {
                    return Ok(Vec::new());
                };
                self.rnglists_base.saturating_add(relative)
            }
            _ => return Ok(Vec::new()),
        };
        let (section, v4) = if encoding.version >= 5 {
            (self.elf.sections.debug_rnglists, false)
        } else {
            (self.elf.sections.debug_ranges, true)
        };
        let endian = self.elf.endian;
        let base = self.base_address;
        let empty_addr = DebugAddr::from(EndianSlice::new(&[], endian));
        let parse = |window: &[u8]| -> gimli::Result<Vec<(u64, u64)>> {
            let slice = EndianSlice::new(window, endian);
            let empty = EndianSlice::new(&[], endian);
            let lists = if v4 {
                RangeLists::new(DebugRanges::from(slice), DebugRngLists::from(empty))
            } else {
                RangeLists::new(DebugRanges::from(empty), DebugRngLists::from(slice))
            };
            let mut iter = lists.ranges(
                RangeListsOffset(0),
                encoding,
                base,
                &empty_addr,
                DebugAddrBase(0),
            )?;
            let mut out = Vec::new();
            while let Some(range) = iter.next()? {
                if range.begin != 0 && range.begin < range.end {
                    out.push((range.begin, range.end));
                }
            }
            Ok(out)
        };
        // A unit's range lists sit together: one chunk read serves most of
        // them (thousands of small reads otherwise).
        let mut chunk = self.ranges_chunk.borrow_mut();
        loop {
            let cached = chunk.as_ref().and_then(|(start, bytes)| {
                let at = usize::try_from(offset.checked_sub(*start)?).ok()?;
                bytes.get(at..).filter(|rest| !rest.is_empty())
            });
            let Some(window) = cached else {
                *chunk = Some((offset, self.elf.read(section, offset, RANGES_CHUNK)?));
                let Some((_, bytes)) = chunk.as_ref() else {
                    return Ok(Vec::new());
                };
                return Ok(parse(bytes)?);
            };
            match parse(window) {
                // Cut by the chunk's end: read a chunk from this list on.
                Err(gimli::Error::UnexpectedEof(_)) => *chunk = None,
                result => return Ok(result?),
            }
        }
    }

    /// Runs the unit's line program once: the row covering each address,
    /// and the paths of the files the rows and the inlined calls name.
    fn lines(
        &self,
        offset: u64,
        addresses: &[u64],
        chains: &[Vec<Scope>],
        (comp_dir, comp_name): (Option<&[u8]>, Option<&[u8]>),
        budget: &mut Budget,
        known_sequences: &mut Option<Vec<sequences::Sequence>>,
    ) -> Result<Lines, Skipped> {
        let section = self.elf.sections.debug_line;
        let length = record_len(self.elf, section, offset)?;
        let needed = length.saturating_mul(2);
        if !budget.reserve(needed) {
            return Err(Skipped::Budget { needed });
        }
        let result = self
            .elf
            .read(section, offset, length)
            .map_err(Skipped::from)
            .and_then(|mut bytes| {
                sequences::keep_holding(
                    &mut bytes,
                    self.elf.endian,
                    self.header.address_size(),
                    addresses,
                    known_sequences,
                );
                self.run_lines(&bytes, addresses, chains, comp_dir, comp_name)
            });
        budget.release(needed);
        result
    }

    fn run_lines<'b>(
        &self,
        bytes: &'b [u8],
        addresses: &[u64],
        chains: &[Vec<Scope>],
        comp_dir: Option<&'b [u8]>,
        comp_name: Option<&'b [u8]>,
    ) -> Result<Lines, Skipped> {
        let endian = self.elf.endian;
        let program = DebugLine::new(bytes, endian).program(
            DebugLineOffset(0),
            self.header.address_size(),
            comp_dir.map(|d| EndianSlice::new(d, endian)),
            comp_name.map(|n| EndianSlice::new(n, endian)),
        )?;
        // (file index, line) per address.
        let mut at: Vec<Option<(u64, u32)>> = vec![None; addresses.len()];
        let mut rows = program.rows();
        let mut previous: Option<(u64, u64, u32)> = None;
        while let Some((_, row)) = rows.next_row()? {
            let address = row.address();
            if let Some((start, file, line)) = previous
                && start < address
            {
                let first = addresses.partition_point(|&a| a < start);
                for (&a, slot) in addresses.iter().zip(at.iter_mut()).skip(first) {
                    if a >= address {
                        break;
                    }
                    *slot = Some((file, line));
                }
            }
            previous = if row.end_sequence() {
                None
            } else {
                let line = row
                    .line()
                    .map_or(0, |l| u32::try_from(l.get()).unwrap_or(u32::MAX));
                Some((address, row.file_index(), line))
            };
        }
        let header = rows.header();
        let mut wanted: Vec<u64> = at.iter().flatten().map(|(f, _)| *f).collect();
        wanted.extend(chains.iter().flatten().map(|s| s.call_file));
        wanted.sort_unstable();
        wanted.dedup();
        let mut files = HashMap::new();
        for index in wanted {
            if let Some(path) = self.file_path(header, index, comp_dir) {
                files.insert(index, path);
            }
        }
        let at = at
            .into_iter()
            .map(|slot| {
                slot.map(|(file, line)| (files.get(&file).cloned().unwrap_or_default(), line))
                    .unwrap_or_default()
            })
            .collect();
        Ok(Lines { at, files })
    }

    /// A file's path as `addr2line` writes it: the compilation directory,
    /// the file's directory, its name; an absolute part replaces the rest.
    fn file_path(
        &self,
        header: &gimli::LineProgramHeader<Slice<'_>>,
        index: u64,
        comp_dir: Option<&[u8]>,
    ) -> Option<String> {
        let file = header.file(index)?;
        let mut path = comp_dir
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .unwrap_or_default();
        if file.directory_index() != 0
            && let Some(directory) = file.directory(header)
            && let Some(directory) = self.string(directory)
        {
            push_path(&mut path, &String::from_utf8_lossy(&directory));
        }
        let name = self.string(file.path_name())?;
        push_path(&mut path, &String::from_utf8_lossy(&name));
        Some(path)
    }
}

/// What the line program says for a unit's addresses.
#[derive(Debug, Default)]
struct Lines {
    /// (file, line) per address; empty and 0 when no row covers it.
    at: Vec<(String, u32)>,
    /// Paths by file index, for inlined calls' `dw::DW_AT_call_file`.
    files: HashMap<u64, String>,
}

fn push_path(path: &mut String, part: &str) {
    if part.starts_with('/') || path.is_empty() {
        *path = part.to_owned();
    } else {
        if !path.ends_with('/') {
            path.push('/');
        }
        path.push_str(part);
    }
}
