//! The sequences of a line program that can hold a batch's addresses: found
//! by scanning the opcodes for addresses only, the others cut out before
//! gimli runs the program.
//!
//! A unit's line program has one sequence per function section (std's
//! largest unit: 1,223 sequences, 41,465 rows) and a profile wants a few of
//! them. Running every row costs about 55 ns each; skipping an opcode costs
//! a byte or two of decoding. Sequences are independent (the state machine
//! restarts after each `DW_LNE_end_sequence`), so the program made of the
//! header and the kept sequences gives their rows exactly as the whole one
//! does.

use gimli::{DebugLine, DebugLineOffset, EndianSlice, RunTimeEndian};

use super::{uint, uleb};

/// The operand count of each standard opcode (1 = `DW_LNS_copy` …, 12 =
/// `DW_LNS_set_isa`) as DWARF 3-5 define them; a header that says otherwise
/// is left to gimli whole.
const STANDARD_LENGTHS: [u8; 12] = [0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 1];

/// What the scan needs of the header.
struct Encoding {
    opcode_base: u8,
    line_range: u8,
    min_inst: u64,
    address_size: u8,
    /// Operand counts of the standard opcodes, from the header.
    lengths: Vec<u8>,
    endian: RunTimeEndian,
}

/// Cuts out of `program` (one whole line program, its header included) the
/// sequences whose addresses cannot include any of `addresses`. Leaves it
/// whole when the scan cannot be sure (VLIW operation indices, a file
/// defined in the program, a header with non-standard opcode lengths,
/// malformed opcodes). `known` is the program's sequences from an earlier
/// call on the same program, or else is filled with them (32 bytes each;
/// std's largest unit has 1,223), so the opcodes are scanned once.
pub(super) fn keep_holding(
    program: &mut Vec<u8>,
    endian: RunTimeEndian,
    address_size: u8,
    addresses: &[u64],
    known: &mut Option<Vec<Sequence>>,
) {
    let Some((start, encoding)) = parse_header(program, endian, address_size) else {
        return;
    };
    if known.is_none() {
        let Some(opcodes) = program.get(start..) else {
            return;
        };
        let Some(mut sequences) = scan(opcodes, &encoding) else {
            return;
        };
        sequences.shrink_to_fit();
        *known = Some(sequences);
    }
    let Some(sequences) = known.as_ref() else {
        return;
    };
    let kept: Vec<(usize, usize)> = sequences
        .iter()
        .filter(|s| {
            let first = addresses.partition_point(|&a| a < s.low);
            addresses.get(first).is_some_and(|&a| a <= s.high)
        })
        .map(|s| (start + s.from, start + s.to))
        .collect();
    let mut end = start;
    for (from, to) in kept {
        program.copy_within(from..to, end);
        end += to - from;
    }
    if end == program.len() {
        return;
    }
    program.truncate(end);
    // The unit length excludes its own field (4 bytes, or 12 in 64-bit DWARF).
    let total = program.len() as u64;
    let big = endian == RunTimeEndian::Big;
    let (field, value) = if program.starts_with(&[0xff; 4]) {
        let value = total.saturating_sub(12);
        let bytes = if big {
            value.to_be_bytes()
        } else {
            value.to_le_bytes()
        };
        (4..12, bytes.to_vec())
    } else {
        let value = u32::try_from(total.saturating_sub(4)).unwrap_or(u32::MAX);
        let bytes = if big {
            value.to_be_bytes()
        } else {
            value.to_le_bytes()
        };
        (0..4, bytes.to_vec())
    };
    if let Some(field) = program.get_mut(field) {
        field.copy_from_slice(&value);
    }
}

/// Where the opcodes start, and what scanning them needs.
fn parse_header(
    program: &[u8],
    endian: RunTimeEndian,
    address_size: u8,
) -> Option<(usize, Encoding)> {
    let base = EndianSlice::new(program, endian);
    let parsed = DebugLine::new(program, endian)
        .program(DebugLineOffset(0), address_size, None, None)
        .ok()?;
    let header = parsed.header();
    if header.maximum_operations_per_instruction() != 1
        || header.line_range() == 0
        || header.opcode_base() == 0
    {
        return None;
    }
    let lengths: Vec<u8> = header.standard_opcode_lengths().slice().to_vec();
    if lengths
        .iter()
        .zip(STANDARD_LENGTHS)
        .any(|(&given, standard)| given != standard)
    {
        return None;
    }
    let start = header.raw_program_buf().offset_from(base);
    Some((
        start,
        Encoding {
            opcode_base: header.opcode_base(),
            line_range: header.line_range(),
            min_inst: u64::from(header.minimum_instruction_length()),
            address_size: header.address_size(),
            lengths,
            endian,
        },
    ))
}

/// One sequence: its bytes in the opcodes and the lowest and highest
/// addresses of its rows (only rows count: before its `DW_LNE_set_address`
/// a sequence's address is 0, which would make it reach every address).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Sequence {
    from: usize,
    to: usize,
    low: u64,
    high: u64,
}

/// The sequences of `opcodes`; `None` where the scan cannot follow them.
fn scan(opcodes: &[u8], encoding: &Encoding) -> Option<Vec<Sequence>> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut from = 0;
    let mut address = 0_u64;
    let (mut low, mut high) = (u64::MAX, 0_u64);
    let advance = |operations: u64| operations.wrapping_mul(encoding.min_inst);
    while at < opcodes.len() {
        let opcode = *opcodes.get(at)?;
        at += 1;
        match opcode {
            0 => {
                let len = usize::try_from(uleb(opcodes, &mut at)?).ok()?;
                let end = at.checked_add(len)?;
                match *opcodes.get(at)? {
                    // DW_LNE_end_sequence
                    1 => {
                        out.push(Sequence {
                            from,
                            to: end,
                            low: low.min(address),
                            high: high.max(address),
                        });
                        (from, address, low, high) = (end, 0, u64::MAX, 0);
                        at = end;
                        continue;
                    }
                    // DW_LNE_set_address
                    2 => {
                        let size = usize::from(encoding.address_size);
                        address = uint(opcodes.get(..end)?, at + 1, size, encoding.endian)?;
                    }
                    // DW_LNE_define_file: files that change what later rows mean.
                    3 => return None,
                    _ => {}
                }
                at = end;
            }
            op if op >= encoding.opcode_base => {
                let adjusted = u64::from(op - encoding.opcode_base);
                address = address.wrapping_add(advance(adjusted / u64::from(encoding.line_range)));
                (low, high) = (low.min(address), high.max(address));
            }
            // DW_LNS_copy
            1 => (low, high) = (low.min(address), high.max(address)),
            // DW_LNS_advance_pc
            2 => address = address.wrapping_add(advance(uleb(opcodes, &mut at)?)),
            // DW_LNS_const_add_pc
            8 => {
                let adjusted = u64::from(255 - encoding.opcode_base);
                address = address.wrapping_add(advance(adjusted / u64::from(encoding.line_range)));
            }
            // DW_LNS_fixed_advance_pc: a 2-byte operand, not LEB128.
            9 => {
                address = address.wrapping_add(uint(opcodes, at, 2, encoding.endian)?);
                at += 2;
            }
            op => {
                let count = *encoding.lengths.get(usize::from(op).checked_sub(1)?)?;
                for _ in 0..count {
                    uleb(opcodes, &mut at)?;
                }
            }
        }
    }
    if from < opcodes.len() {
        // Opcodes after the last end of sequence: kept if they may matter.
        out.push(Sequence {
            from,
            to: opcodes.len(),
            low,
            high,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::keep_holding;
    use crate::dwarf::elf::Elf;
    use gimli::{DebugLine, DebugLineOffset, RunTimeEndian};

    /// Every sequence's rows (address, file, line, end of sequence).
    fn sequences_of(program: &[u8], endian: RunTimeEndian) -> Vec<Vec<(u64, u64, u64, bool)>> {
        let program = DebugLine::new(program, endian)
            .program(DebugLineOffset(0), 8, None, None)
            .unwrap();
        let mut rows = program.rows();
        let mut out = vec![Vec::new()];
        while let Some((_, row)) = rows.next_row().unwrap() {
            let end = row.end_sequence();
            out.last_mut().unwrap().push((
                row.address(),
                row.file_index(),
                row.line().map_or(0, |l| l.get()),
                end,
            ));
            if end {
                out.push(Vec::new());
            }
        }
        out.retain(|rows| !rows.is_empty());
        out
    }

    #[test]
    fn the_kept_sequences_run_as_in_the_whole_program() {
        let elf = Elf::open(&std::env::current_exe().unwrap()).unwrap();
        let section = elf.sections.debug_line;
        // The first line program with many sequences (one per function).
        let mut offset = 0;
        let (whole, all) = loop {
            let head = elf.read(section, offset, 4).unwrap();
            let len = u64::from(u32::from_le_bytes(head.try_into().unwrap())) + 4;
            let program = elf.read(section, offset, len).unwrap();
            let all = sequences_of(&program, elf.endian);
            if all.len() >= 20 {
                break (program, all);
            }
            offset += len;
            assert!(offset < section.size, "no line program with 20 sequences");
        };
        // An address inside the 3rd sequence and the start of the 12th.
        let wanted_sequences = [2, 11];
        let mut addresses: Vec<u64> = vec![all[2][0].0 + 1, all[11][0].0];
        addresses.sort_unstable();
        let mut cut = whole.clone();
        let mut known = None;
        keep_holding(&mut cut, elf.endian, 8, &addresses, &mut known);
        // The sequences kept from that scan cut the same way.
        let mut again = whole.clone();
        keep_holding(&mut again, elf.endian, 8, &addresses, &mut known);
        assert_eq!(again, cut);
        assert!(known.is_some());
        let kept = sequences_of(&cut, elf.endian);
        // Sequences far from both addresses are dropped. (Not a byte ratio:
        // the program's header, kept whole, can outweigh its sequences.)
        assert!(
            cut.len() < whole.len() && kept.len() * 2 < all.len(),
            "{} of {} bytes, {} of {} sequences",
            cut.len(),
            whole.len(),
            kept.len(),
            all.len()
        );
        let holding: Vec<&Vec<(u64, u64, u64, bool)>> = all
            .iter()
            .filter(|rows| {
                let (low, high) = (rows[0].0, rows.last().unwrap().0);
                addresses.iter().any(|a| (low..high).contains(a))
            })
            .collect();
        assert!(holding.len() >= wanted_sequences.len());
        // Every sequence that holds an address is kept, row for row, in order;
        // only sequences reaching an address may be kept besides.
        let mut next = kept.iter();
        for rows in holding {
            assert!(next.any(|k| k == rows), "sequence at {:#x} lost", rows[0].0);
        }
        for rows in &kept {
            assert!(all.contains(rows));
        }
    }
}
