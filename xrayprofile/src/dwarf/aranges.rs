//! Which compilation unit holds each address, from `.debug_aranges`: read in
//! fixed-size chunks, one pass, kept only as one unit offset per address.
//!
//! The sets are parsed here rather than with gimli's iterators: a tuple that
//! holds none of the batch's addresses should cost a comparison, not an
//! iterator step with its error paths.
//!
//! The first read of a file streams every set (a 104 MB binary has 0.9 MB
//! of them, 4,460 units) and leaves a [`Spans`]: per set, where it is and the
//! lowest and highest address it covers. Later reads of the same file read
//! only the sets whose span holds an address of the batch.

use std::io;

use super::elf::Elf;
use super::uint;

/// Bytes per read; a set larger than this is read whole on its own.
const CHUNK: u64 = 64 * 1024;

/// One set of `.debug_aranges`, as [`Spans`] keeps it.
#[derive(Debug, Clone, Copy)]
struct Span {
    /// Its offset and length in the section.
    offset: u64,
    len: u64,
    /// The lowest address it covers, and the end of its highest range.
    low: u64,
    high: u64,
}

/// Where each set of a file's `.debug_aranges` is and what addresses it
/// spans, in section order, and the offsets of all the units they list,
/// sorted: 32 bytes per set and 8 per unit.
#[derive(Debug, Default)]
pub(super) struct Spans {
    sets: Vec<Span>,
    starts: Vec<u64>,
}

impl Spans {
    /// The bytes it holds.
    pub(super) fn cost(&self) -> u64 {
        (self.sets.capacity() * size_of::<Span>() + self.starts.capacity() * size_of::<u64>())
            as u64
    }
}

/// For each of `addresses` (sorted), the `.debug_info` offset of the unit
/// whose address ranges hold it, if `.debug_aranges` lists one; and the
/// offsets of all the units it lists, sorted. With `spans` from an earlier
/// read of the same file, only the sets that may hold an address are read;
/// without, the section is streamed and `spans` filled.
///
/// # Errors
/// If the file cannot be read.
pub(super) fn units_of(
    elf: &Elf,
    addresses: &[u64],
    spans: &mut Option<Spans>,
) -> io::Result<(Vec<Option<u64>>, Vec<u64>)> {
    let section = elf.sections.debug_aranges;
    let mut units: Vec<Option<u64>> = vec![None; addresses.len()];
    if !section.usable() || addresses.is_empty() {
        return Ok((units, Vec::new()));
    }
    if let Some(known) = spans {
        for span in &known.sets {
            let first = addresses.partition_point(|&a| a < span.low);
            if addresses.get(first).is_none_or(|&a| a >= span.high) {
                continue;
            }
            let bytes = elf.read(section, span.offset, span.len)?;
            sets(
                &bytes,
                elf.endian,
                addresses,
                &mut units,
                &mut Vec::new(),
                None,
            );
        }
        return Ok((units, known.starts.clone()));
    }
    let mut starts = Vec::new();
    let mut found = Vec::new();
    let mut offset = 0_u64;
    let mut chunk = CHUNK;
    while offset < section.size {
        let bytes = elf.read(section, offset, chunk)?;
        let whole = offset.saturating_add(chunk) >= section.size;
        let consumed = sets(
            &bytes,
            elf.endian,
            addresses,
            &mut units,
            &mut starts,
            Some((offset, &mut found)),
        );
        if consumed == 0 {
            if whole {
                // Malformed from here on: the rest is not mapped.
                break;
            }
            // A set longer than the chunk: read it whole.
            chunk = chunk.saturating_mul(2);
            continue;
        }
        offset = offset.saturating_add(consumed as u64);
        chunk = CHUNK;
    }
    starts.sort_unstable();
    starts.dedup();
    found.shrink_to_fit();
    starts.shrink_to_fit();
    *spans = Some(Spans {
        sets: found,
        starts: starts.clone(),
    });
    Ok((units, starts))
}

/// Reads the sets that lie whole in `bytes` (stopping at one cut by its end
/// or malformed), giving their units to `addresses` and listing them in
/// `starts`, and with `spans` (the section offset of `bytes`, and where to
/// put them) each set's [`Span`]; returns the bytes they took.
fn sets(
    bytes: &[u8],
    endian: gimli::RunTimeEndian,
    addresses: &[u64],
    units: &mut [Option<u64>],
    starts: &mut Vec<u64>,
    mut spans: Option<(u64, &mut Vec<Span>)>,
) -> usize {
    let (Some(&lowest), Some(&highest)) = (addresses.first(), addresses.last()) else {
        return 0;
    };
    let mut at = 0_usize;
    while let Some(length) = uint(bytes, at, 4, endian) {
        let (length, length_size, offset_size) = if length == 0xffff_ffff {
            let Some(length) = uint(bytes, at + 4, 8, endian) else {
                break;
            };
            (length, 12, 8)
        } else {
            (length, 4, 4)
        };
        let Some(end) = usize::try_from(length)
            .ok()
            .and_then(|length| at.checked_add(length_size)?.checked_add(length))
            .filter(|&end| end <= bytes.len())
        else {
            break; // cut by the chunk's end
        };
        let header = at + length_size;
        let version = uint(bytes, header, 2, endian);
        let unit = uint(bytes, header + 2, offset_size, endian);
        let address_size = uint(bytes, header + 2 + offset_size, 1, endian);
        let segment_size = uint(bytes, header + 3 + offset_size, 1, endian);
        // Versions 2 and 3 (seen in the wild) have this layout; segments
        // are not used on Linux.
        let (Some(2 | 3), Some(unit), Some(size @ (4 | 8)), Some(0)) =
            (version, unit, address_size, segment_size)
        else {
            break;
        };
        let size = size as usize;
        // Tuples start at a multiple of their size from the set's start.
        let header_len = length_size + 4 + offset_size;
        let mut tuple = at + header_len.next_multiple_of(2 * size);
        // At and past this an address is a tombstone (code dropped).
        let tombstone = if size == 8 {
            u64::MAX - 1
        } else {
            u64::from(u32::MAX - 1)
        };
        starts.push(unit);
        let (mut low, mut high) = (u64::MAX, 0);
        while tuple + 2 * size <= end {
            let (Some(begin), Some(len)) = (
                uint(bytes, tuple, size, endian),
                uint(bytes, tuple + size, size, endian),
            ) else {
                break;
            };
            tuple += 2 * size;
            if begin >= tombstone || (begin > highest && spans.is_none()) {
                continue;
            }
            let Some(range_end) = begin.checked_add(len).filter(|&e| e <= tombstone) else {
                if begin > highest {
                    continue; // past the batch: skipped, as when not indexing
                }
                break; // an overflowing range ends the set, as in gimli
            };
            if begin != 0 && begin < range_end {
                low = low.min(begin);
                high = high.max(range_end);
            }
            if range_end > lowest && begin <= highest {
                assign(addresses, units, begin, range_end, unit);
            }
        }
        if let Some((base, spans)) = spans.as_mut() {
            spans.push(Span {
                offset: base.saturating_add(at as u64),
                len: (end - at) as u64,
                low,
                high,
            });
        }
        at = end;
    }
    at
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
