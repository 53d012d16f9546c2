//! Function names from the ELF symbol table, for addresses the DWARF does
//! not name: streamed through a fixed buffer, never loaded whole (a 100 MB
//! binary's `.symtab` and `.strtab` are tens of MB).

use std::io;

use object::elf::{STT_FUNC, STT_GNU_IFUNC, Sym64};
use object::read::elf::Sym as _;
use object::{Endianness, pod};

use super::MAX_NAME;
use super::elf::{Elf, Section};

/// Symbols read per `pread`: 2,730 × 24 B = 64 KiB.
const CHUNK_SYMBOLS: usize = 2730;

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
/// do, from `.symtab` or else `.dynsym`. One pass over the table.
///
/// # Errors
/// If the file cannot be read.
pub(super) fn covering(
    elf: &Elf,
    addresses: &[u64],
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
    let chunk = entry * CHUNK_SYMBOLS as u64;
    let mut offset = 0;
    while offset < table.size && !addresses.is_empty() {
        let bytes = elf.read(table, offset, chunk)?;
        offset = offset.saturating_add(chunk);
        let count = bytes.len() / size_of::<Sym64<Endianness>>();
        let Ok((symbols, _)) = pod::slice_from_bytes::<Sym64<Endianness>>(&bytes, count) else {
            break;
        };
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
    }
    Ok((found, strings))
}

/// The symbol's name, as written (mangled).
///
/// # Errors
/// If the file cannot be read.
pub(super) fn name(elf: &Elf, strings: Section, covering: Covering) -> io::Result<String> {
    let bytes = elf.string(strings, covering.name, MAX_NAME)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
