//! Function names from the ELF symbol table, for addresses the DWARF does
//! not name: streamed through a fixed buffer, never loaded whole (a 100 MB
//! binary's `.symtab` and `.strtab` are tens of MB).
//!
//! The first pass over a file's table leaves [`Blocks`]: per block of
//! [`BLOCK_SYMBOLS`] symbols, the lowest and highest address its functions
//! cover. A linker writes a unit's local symbols together, so most blocks
//! span under 1 % of the code (a 104 MB binary: 27,688 functions, median
//! block 0.8 %); later passes read only the blocks that may hold an address.

use std::io;

use object::elf::{STT_FUNC, STT_GNU_IFUNC, Sym64};
use object::read::elf::Sym as _;
use object::{Endianness, pod};

use super::MAX_NAME;
use super::elf::{Elf, Section};

/// Symbols read per `pread`: 2,560 × 24 B = 60 KiB.
const CHUNK_SYMBOLS: usize = 10 * BLOCK_SYMBOLS;

/// Symbols per block of [`Blocks`] (6 KiB of the table).
const BLOCK_SYMBOLS: usize = 256;

/// Per block of [`BLOCK_SYMBOLS`] symbols, in table order, the lowest start
/// and highest end of its function symbols (16 bytes a block).
#[derive(Debug, Default)]
pub(super) struct Blocks {
    spans: Vec<(u64, u64)>,
}

impl Blocks {
    /// The bytes it holds.
    pub(super) fn cost(&self) -> u64 {
        (self.spans.capacity() * size_of::<(u64, u64)>()) as u64
    }
}

/// The function symbol that covers an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Covering {
    /// Its start address.
    pub(super) start: u64,
    /// Its name's offset in the string table.
    name: u64,
}

/// For each of `addresses` (sorted), the function symbol whose
/// `[value, value + size)` holds it, the innermost (highest start) if several
/// do, from `.symtab` or else `.dynsym`. One pass over the table, or with
/// `blocks` from an earlier pass over the same file, over the blocks that
/// may hold an address; without, `blocks` is filled.
///
/// # Errors
/// If the file cannot be read.
pub(super) fn covering(
    elf: &Elf,
    addresses: &[u64],
    blocks: &mut Option<Blocks>,
) -> io::Result<(Vec<Option<Covering>>, Section)> {
    let (table, strings) = if elf.sections.symtab.usable() {
        (elf.sections.symtab, elf.sections.strtab)
    } else {
        (elf.sections.dynsym, elf.sections.dynstr)
    };
    let mut found: Vec<Option<Covering>> = vec![None; addresses.len()];
    let endian = Endianness::Little;
    let endian = if elf.endian == gimli::RunTimeEndian::Big {
        Endianness::Big
    } else {
        endian
    };
    let entry = size_of::<Sym64<Endianness>>() as u64;
    if addresses.is_empty() {
        return Ok((found, strings));
    }
    if let Some(known) = blocks {
        let block = entry * BLOCK_SYMBOLS as u64;
        for (i, &(low, high)) in known.spans.iter().enumerate() {
            let first = addresses.partition_point(|&a| a < low);
            if addresses.get(first).is_none_or(|&a| a >= high) {
                continue;
            }
            let bytes = elf.read(table, (i as u64).saturating_mul(block), block)?;
            let count = bytes.len() / size_of::<Sym64<Endianness>>();
            let Ok((symbols, _)) = pod::slice_from_bytes::<Sym64<Endianness>>(&bytes, count) else {
                break;
            };
            scan(symbols, endian, addresses, &mut found);
        }
        return Ok((found, strings));
    }
    let mut spans = Vec::new();
    let chunk = entry * CHUNK_SYMBOLS as u64;
    let mut offset = 0;
    while offset < table.size {
        let bytes = elf.read(table, offset, chunk)?;
        offset = offset.saturating_add(chunk);
        let count = bytes.len() / size_of::<Sym64<Endianness>>();
        let Ok((symbols, _)) = pod::slice_from_bytes::<Sym64<Endianness>>(&bytes, count) else {
            break;
        };
        for block in symbols.chunks(BLOCK_SYMBOLS) {
            spans.push(scan(block, endian, addresses, &mut found));
        }
    }
    spans.shrink_to_fit();
    *blocks = Some(Blocks { spans });
    Ok((found, strings))
}

/// Gives each of `addresses` (sorted) the innermost of `symbols`' functions
/// that covers it, unless `found` has one starting as high; returns the
/// lowest start and highest end of those functions (`(u64::MAX, 0)` if
/// none).
fn scan(
    symbols: &[Sym64<Endianness>],
    endian: Endianness,
    addresses: &[u64],
    found: &mut [Option<Covering>],
) -> (u64, u64) {
    let (mut low, mut high) = (u64::MAX, 0);
    for symbol in symbols {
        let kind = symbol.st_type();
        let start = symbol.st_value(endian);
        let size = symbol.st_size(endian);
        if !(kind == STT_FUNC || kind == STT_GNU_IFUNC)
            || symbol.st_shndx(endian) == object::elf::SHN_UNDEF
            || start == 0
            || size == 0
        {
            continue;
        }
        let end = start.saturating_add(size);
        low = low.min(start);
        high = high.max(end);
        let first = addresses.partition_point(|&a| a < start);
        for (&address, slot) in addresses.iter().zip(found.iter_mut()).skip(first) {
            if address >= end {
                break;
            }
            if slot.is_none_or(|c| c.start < start) {
                *slot = Some(Covering {
                    start,
                    name: u64::from(symbol.st_name(endian)),
                });
            }
        }
    }
    (low, high)
}

/// The symbol's name, as written (mangled).
///
/// # Errors
/// If the file cannot be read.
pub(super) fn name(elf: &Elf, strings: Section, covering: Covering) -> io::Result<String> {
    let bytes = elf.string(strings, covering.name, MAX_NAME)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
