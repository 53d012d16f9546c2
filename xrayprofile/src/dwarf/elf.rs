//! The ELF file as the reader sees it: the section headers, and reads of
//! byte ranges on demand (`pread`), never a mapping of the whole file.
//!
//! A mapped 100 MB binary's DWARF pages count as the process's RSS once
//! touched; bytes read into a buffer that is dropped do not outlive the
//! lookup, and the kernel's page cache is not the process's memory.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use object::elf::{FileHeader64, SHF_COMPRESSED, SectionHeader64};
use object::read::elf::{FileHeader as _, SectionHeader as _};
use object::{Endianness, pod};

/// The largest section-header table the reader accepts (64 B per section).
const MAX_SECTIONS: usize = 4096;

/// Where one section's bytes are in the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Section {
    /// File offset of its first byte.
    pub(crate) offset: u64,
    /// Its size in bytes (0: absent).
    pub(crate) size: u64,
    /// Its link (`sh_link`): for a symbol table, its string table's index.
    pub(crate) link: u32,
    /// Whether its contents are compressed (`SHF_COMPRESSED`).
    pub(crate) compressed: bool,
}

impl Section {
    /// Whether the file has this section, uncompressed and non-empty.
    pub(crate) fn usable(&self) -> bool {
        self.size > 0 && !self.compressed
    }
}

/// The sections the reader uses, by name.
#[derive(Debug, Default)]
pub(crate) struct Sections {
    pub(crate) debug_info: Section,
    pub(crate) debug_abbrev: Section,
    pub(crate) debug_line: Section,
    pub(crate) debug_str: Section,
    pub(crate) debug_line_str: Section,
    pub(crate) debug_ranges: Section,
    pub(crate) debug_rnglists: Section,
    pub(crate) debug_aranges: Section,
    pub(crate) debug_addr: Section,
    pub(crate) debug_str_offsets: Section,
    pub(crate) symtab: Section,
    pub(crate) strtab: Section,
    pub(crate) dynsym: Section,
    pub(crate) dynstr: Section,
}

/// An open ELF file.
#[derive(Debug)]
pub(crate) struct Elf {
    file: File,
    pub(crate) endian: gimli::RunTimeEndian,
    pub(crate) sections: Sections,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

impl Elf {
    /// Opens `path` and reads its section headers (a few KiB).
    ///
    /// # Errors
    /// If the file cannot be read or is not a 64-bit ELF file.
    pub(crate) fn open(path: &Path) -> io::Result<Elf> {
        let file = File::open(path)?;
        let mut header_bytes = [0_u8; size_of::<FileHeader64<Endianness>>()];
        file.read_exact_at(&mut header_bytes, 0)?;
        let header = FileHeader64::<Endianness>::parse(&header_bytes[..])
            .map_err(|_| invalid("not a 64-bit ELF file"))?;
        let endian = header
            .endian()
            .map_err(|_| invalid("unknown ELF byte order"))?;
        let count = usize::from(header.e_shnum.get(endian));
        if count > MAX_SECTIONS
            || usize::from(header.e_shentsize.get(endian))
                != size_of::<SectionHeader64<Endianness>>()
        {
            return Err(invalid("unexpected ELF section header table"));
        }
        let mut table = vec![0_u8; count * size_of::<SectionHeader64<Endianness>>()];
        file.read_exact_at(&mut table, header.e_shoff.get(endian))?;
        let (headers, _) = pod::slice_from_bytes::<SectionHeader64<Endianness>>(&table, count)
            .map_err(|()| invalid("short ELF section header table"))?;
        let names = headers
            .get(usize::from(header.e_shstrndx.get(endian).0))
            .ok_or_else(|| invalid("no section name table"))?;
        let mut names_bytes = vec![0_u8; usize::try_from(names.sh_size(endian)).unwrap_or(0)];
        file.read_exact_at(&mut names_bytes, names.sh_offset(endian))?;

        let section = |h: &SectionHeader64<Endianness>| Section {
            offset: h.sh_offset(endian),
            size: if h.sh_type(endian) == object::elf::SHT_NOBITS {
                0
            } else {
                h.sh_size(endian)
            },
            link: h.sh_link(endian),
            compressed: h.sh_flags(endian).0 & SHF_COMPRESSED.0 != 0,
        };
        let mut sections = Sections::default();
        let mut symtab_link = None;
        let mut dynsym_link = None;
        for h in headers {
            let start = usize::try_from(h.sh_name(endian)).unwrap_or(usize::MAX);
            let name = names_bytes
                .get(start..)
                .and_then(|rest| rest.split(|&b| b == 0).next())
                .unwrap_or_default();
            let slot = match name {
                b".debug_info" => &mut sections.debug_info,
                b".debug_abbrev" => &mut sections.debug_abbrev,
                b".debug_line" => &mut sections.debug_line,
                b".debug_str" => &mut sections.debug_str,
                b".debug_line_str" => &mut sections.debug_line_str,
                b".debug_ranges" => &mut sections.debug_ranges,
                b".debug_rnglists" => &mut sections.debug_rnglists,
                b".debug_aranges" => &mut sections.debug_aranges,
                b".debug_addr" => &mut sections.debug_addr,
                b".debug_str_offsets" => &mut sections.debug_str_offsets,
                b".symtab" if h.sh_type(endian) == object::elf::SHT_SYMTAB => {
                    symtab_link = Some(h.sh_link(endian));
                    &mut sections.symtab
                }
                b".dynsym" if h.sh_type(endian) == object::elf::SHT_DYNSYM => {
                    dynsym_link = Some(h.sh_link(endian));
                    &mut sections.dynsym
                }
                _ => continue,
            };
            *slot = section(h);
        }
        let linked = |link: Option<u32>| {
            link.and_then(|l| headers.get(usize::try_from(l).ok()?))
                .map(section)
                .unwrap_or_default()
        };
        sections.strtab = linked(symtab_link);
        sections.dynstr = linked(dynsym_link);
        Ok(Elf {
            file,
            endian: if endian == Endianness::Little {
                gimli::RunTimeEndian::Little
            } else {
                gimli::RunTimeEndian::Big
            },
            sections,
        })
    }

    /// Reads `len` bytes at `offset` into `section` (clamped to its end).
    ///
    /// # Errors
    /// If the file cannot be read.
    pub(crate) fn read(&self, section: Section, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let len = len.min(section.size.saturating_sub(offset));
        let mut buf = vec![0_u8; usize::try_from(len).map_err(|_| invalid("read too large"))?];
        self.file
            .read_exact_at(&mut buf, section.offset.saturating_add(offset))?;
        Ok(buf)
    }

    /// The NUL-terminated string at `offset` in `section`, read a few hundred
    /// bytes at a time, at most `max` bytes.
    ///
    /// # Errors
    /// If the file cannot be read.
    pub(crate) fn string(&self, section: Section, offset: u64, max: u64) -> io::Result<Vec<u8>> {
        let mut len = 256_u64;
        loop {
            let mut bytes = self.read(section, offset, len)?;
            if let Some(end) = bytes.iter().position(|&b| b == 0) {
                bytes.truncate(end);
                return Ok(bytes);
            }
            if bytes.len() < usize::try_from(len).unwrap_or(usize::MAX) || len >= max {
                return Ok(bytes);
            }
            len = len.saturating_mul(4).min(max);
        }
    }
}
