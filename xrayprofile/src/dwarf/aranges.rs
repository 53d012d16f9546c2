//! Which compilation unit holds each address, from `.debug_aranges`: read in
//! fixed-size chunks, one pass, kept only as one unit offset per address.

use std::io;

use gimli::DebugAranges;

use super::elf::Elf;

/// Bytes per read; a set larger than this is read whole on its own.
const CHUNK: u64 = 64 * 1024;

/// For each of `addresses` (sorted), the `.debug_info` offset of the unit
/// whose address ranges hold it, if `.debug_aranges` lists one; and the
/// offsets of all the units it lists, sorted.
///
/// # Errors
/// If the file cannot be read.
pub(super) fn units_of(elf: &Elf, addresses: &[u64]) -> io::Result<(Vec<Option<u64>>, Vec<u64>)> {
    let section = elf.sections.debug_aranges;
    let mut units: Vec<Option<u64>> = vec![None; addresses.len()];
    let mut starts = Vec::new();
    if !section.usable() || addresses.is_empty() {
        return Ok((units, starts));
    }
    let mut offset = 0_u64;
    let mut chunk = CHUNK;
    while offset < section.size {
        let bytes = elf.read(section, offset, chunk)?;
        let whole = offset.saturating_add(chunk) >= section.size;
        let aranges = DebugAranges::new(&bytes, elf.endian);
        let mut headers = aranges.headers();
        let mut consumed = 0_u64;
        loop {
            let header = match headers.next() {
                Ok(Some(header)) => header,
                Ok(None) => break,
                // A set cut by the chunk's end: read again from its start.
                Err(_) => break,
            };
            let set_end = (header.offset().0 as u64)
                .saturating_add(u64::from(header.encoding().format.initial_length_size()))
                .saturating_add(header.length() as u64);
            if set_end > bytes.len() as u64 {
                break;
            }
            let unit = header.debug_info_offset().0 as u64;
            starts.push(unit);
            let mut entries = header.entries();
            while let Ok(Some(entry)) = entries.next() {
                let range = entry.range();
                assign(addresses, &mut units, range.begin, range.end, unit);
            }
            consumed = set_end;
        }
        if consumed == 0 {
            if whole {
                // Malformed from here on: the rest is not mapped.
                break;
            }
            chunk = chunk.saturating_mul(2);
            continue;
        }
        offset = offset.saturating_add(consumed);
        chunk = CHUNK;
    }
    starts.sort_unstable();
    starts.dedup();
    Ok((units, starts))
}

/// Gives `unit` to the addresses in `[begin, end)` (the first range listed
/// for an address wins).
fn assign(addresses: &[u64], units: &mut [Option<u64>], begin: u64, end: u64, unit: u64) {
    // Ranges at 0 are code the linker dropped.
    if begin == 0 || begin >= end {
        return;
    }
    let first = addresses.partition_point(|&a| a < begin);
    for (address, slot) in addresses.iter().zip(units.iter_mut()).skip(first) {
        if *address >= end {
            break;
        }
        slot.get_or_insert(unit);
    }
}
