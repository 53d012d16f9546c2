//! The SIGPROF handler's own unwinder (x86_64 Linux): walks a stack from the
//! interrupted registers with the loaded objects' `.eh_frame` call-frame
//! information, and keeps each address's unwind rule in a process-wide cache.
//!
//! Why not libgcc's `_Unwind_Backtrace` alone: it looks every frame's FDE up
//! again (a binary search of a 104 MB binary's `.eh_frame_hdr`, then the CIE
//! and FDE programs), 37–50 µs a sample on tokio's deep stacks, about as much
//! CPU as the kernel's signal delivery (`docs/performance.md`, MI-S). The
//! stacks a function samples repeat from one sample to the next, so once an
//! address's rule is cached its frame costs three atomic loads and two stack
//! reads.
//!
//! **Async-signal-safe.** No allocation: gimli evaluates the CFI in an
//! [`UnwindContext`] on the handler's stack ([`OnStack`]). No lock: each
//! cache entry is a seqlock, and a writer that finds its entry busy does not
//! cache. The object table is built by [`refresh_objects`] in ordinary code,
//! before sampling starts, and never freed (a handler may still read it).
//!
//! **What it leaves to libgcc** ([`Walk::Unsupported`]): a CFA given by a
//! DWARF expression (PLT stubs, stack-realigning prologues, the signal
//! trampoline), a rule on a register other than RSP and RBP, an address in
//! no object with an `.eh_frame_hdr` (code loaded during the profile). The
//! caller unwinds that sample with libgcc, as before this module existed.
//!
//! **What it trusts**: like libgcc, the CFI. Stack words are read only at
//! 8-byte aligned addresses between the interrupted stack pointer and
//! [`MAX_STACK_BYTES`] above it, each CFA above the last; a chain that
//! leaves that range ends the stack there.

use std::ops::Range;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering, fence};

use gimli::{
    BaseAddresses, EhFrame, EhFrameHdr, EndianSlice, LittleEndian, ParsedEhFrameHdr, Register,
    RegisterRule, UnwindContext, UnwindContextStorage, UnwindSection, UnwindTableRow, X86_64,
};

/// The registers a walk needs, as the interrupted code left them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Registers {
    /// The instruction pointer.
    pub(super) pc: u64,
    /// The stack pointer.
    pub(super) sp: u64,
    /// RBP, which some frames' CFA is based on.
    pub(super) fp: u64,
}

/// How a walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Walk {
    /// The stack ended, or the caller's callback stopped it.
    Done,
    /// A frame this unwinder cannot step over; the frames reported so far
    /// are right, the rest is unknown.
    Unsupported,
}

/// How far above the interrupted stack pointer a CFA may lie: further than
/// any thread's stack a Lambda function runs (tokio's workers have 2 MiB,
/// the main thread 8 MiB).
const MAX_STACK_BYTES: u64 = 64 << 20;

/// Walks the stack from `regs`, calling `frame(ip, sp)` for each frame from
/// the leaf (`regs.pc`) outwards, until it returns false or the stack ends.
/// `ip` is the interrupted PC for the leaf and a return address for every
/// other frame (as libgcc reports them); `sp` is the frame's stack pointer
/// at that address (for callers, the callee's CFA).
pub(super) fn walk(regs: Registers, mut frame: impl FnMut(u64, u64) -> bool) -> Walk {
    let Some(objects) = objects() else {
        return Walk::Unsupported;
    };
    let lowest = regs.sp;
    let Registers {
        mut pc,
        mut sp,
        mut fp,
    } = regs;
    let mut leaf = true;
    loop {
        if !frame(pc, sp) {
            return Walk::Done;
        }
        // A return address is the instruction after the call; the call
        // itself is what the caller's rule must describe (it may be the
        // function's last instruction).
        let at = if leaf { pc } else { pc.wrapping_sub(1) };
        let Some(rule) = rule_for(objects, at) else {
            return Walk::Unsupported;
        };
        let Rule::Frame {
            cfa_from_fp,
            cfa_offset,
            ra_offset,
            fp_offset,
        } = rule
        else {
            return Walk::Done;
        };
        let base = if cfa_from_fp { fp } else { sp };
        let cfa = base.wrapping_add_signed(i64::from(cfa_offset));
        if cfa <= sp || cfa - lowest > MAX_STACK_BYTES {
            return Walk::Done;
        }
        let read = |offset: i64| {
            let at = cfa.wrapping_add_signed(offset);
            if !at.is_multiple_of(8) || at < lowest || at - lowest > MAX_STACK_BYTES {
                return None;
            }
            // SAFETY: the CFI says a live frame of this thread's stack saved
            // a register here, between the interrupted stack pointer and the
            // outermost frame; the stack from its pointer up is one mapping,
            // so the word is readable. Volatile: if the CFI is wrong this is
            // other memory of the stack, and any bit pattern is a u64.
            Some(unsafe { (at as *const u64).read_volatile() })
        };
        let Some(return_address) = read(i64::from(ra_offset)) else {
            return Walk::Done;
        };
        if let Some(offset) = fp_offset {
            match read(i64::from(offset)) {
                Some(saved) => fp = saved,
                None => return Walk::Done,
            }
        }
        if return_address == 0 {
            return Walk::Done;
        }
        pc = return_address;
        sp = cfa;
        leaf = false;
    }
}

/// How to step from a frame to its caller, reduced to what x86_64 code
/// compiled from Rust and C needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// The outermost frame (`_start`, a thread's start): the return address
    /// is undefined.
    End,
    /// CFA = RSP (or RBP) + `cfa_offset`; the return address is saved at CFA
    /// + `ra_offset`; RBP at CFA + `fp_offset`, or unchanged.
    Frame {
        cfa_from_fp: bool,
        cfa_offset: i32,
        ra_offset: i8,
        fp_offset: Option<i16>,
    },
}

impl Rule {
    /// The rule of a CFI row, if it has this shape.
    fn from_row(row: &UnwindTableRow<usize, OnStack>) -> Option<Rule> {
        let (cfa_from_fp, cfa_offset) = match row.cfa() {
            gimli::CfaRule::RegisterAndOffset { register, offset } => {
                let from_fp = match *register {
                    X86_64::RSP => false,
                    X86_64::RBP => true,
                    _ => return None,
                };
                (from_fp, i32::try_from(*offset).ok()?)
            }
            gimli::CfaRule::Expression(_) => return None,
        };
        let ra_offset = match row.register(X86_64::RA) {
            Some(RegisterRule::Undefined) => return Some(Rule::End),
            Some(RegisterRule::Offset(offset)) => i8::try_from(offset).ok()?,
            _ => return None,
        };
        let fp_offset = match row.register(X86_64::RBP) {
            None | Some(RegisterRule::SameValue | RegisterRule::Undefined) => None,
            Some(RegisterRule::Offset(offset)) => Some(i16::try_from(offset).ok()?),
            Some(_) => return None,
        };
        Some(Rule::Frame {
            cfa_from_fp,
            cfa_offset,
            ra_offset,
            fp_offset,
        })
    }

    /// One word for the cache; never 0 (an empty entry).
    fn pack(self) -> u64 {
        match self {
            Rule::End => 1,
            Rule::Frame {
                cfa_from_fp,
                cfa_offset,
                ra_offset,
                fp_offset,
            } => {
                2 | (u64::from(cfa_from_fp) << 2)
                    | (u64::from(fp_offset.is_some()) << 3)
                    | (u64::from(ra_offset.cast_unsigned()) << 8)
                    | (u64::from(fp_offset.unwrap_or(0).cast_unsigned()) << 16)
                    | (u64::from(cfa_offset.cast_unsigned()) << 32)
            }
        }
    }

    fn unpack(word: u64) -> Option<Rule> {
        // The casts take fields back out of the bits `pack` put them in.
        #[allow(clippy::cast_possible_truncation)]
        match word & 3 {
            1 => Some(Rule::End),
            2 => Some(Rule::Frame {
                cfa_from_fp: word & 4 != 0,
                cfa_offset: ((word >> 32) as u32).cast_signed(),
                ra_offset: ((word >> 8) as u8).cast_signed(),
                fp_offset: (word & 8 != 0).then_some(((word >> 16) as u16).cast_signed()),
            }),
            _ => None,
        }
    }
}

/// gimli's CFI evaluation state without a heap: 32 register rules (x86_64
/// has 17 and the return address) and 4 remembered states per row.
#[derive(Debug)]
struct OnStack;

impl UnwindContextStorage<usize> for OnStack {
    type Rules = [(Register, RegisterRule<usize>); 32];
    type Stack = [UnwindTableRow<usize, Self>; 4];
}

/// The rule at `pc`, from the cache or the CFI.
fn rule_for(objects: &Objects, pc: u64) -> Option<Rule> {
    if let Some(rule) = cached(pc) {
        return Some(rule);
    }
    let object = objects.containing(pc)?;
    let table = object.hdr.table()?;
    let mut context = UnwindContext::<usize, OnStack>::new_in();
    let row = table
        .unwind_info_for_address(
            &object.eh_frame,
            &object.bases,
            &mut context,
            pc,
            EhFrame::cie_from_offset,
        )
        .ok()?;
    let rule = Rule::from_row(row)?;
    remember(pc, rule);
    Some(rule)
}

/// Cached rules: 4,096 entries of 24 bytes in `.bss`, so only the pages
/// holding entries in use are ever resident.
const CACHE_ENTRIES: usize = 1 << 12;

/// One cache entry: a seqlock (`seq` odd while a writer fills it) around an
/// address and its packed [`Rule`].
struct Entry {
    seq: AtomicU64,
    pc: AtomicU64,
    rule: AtomicU64,
}

static CACHE: [Entry; CACHE_ENTRIES] = [const {
    Entry {
        seq: AtomicU64::new(0),
        pc: AtomicU64::new(0),
        rule: AtomicU64::new(0),
    }
}; CACHE_ENTRIES];

fn entry(pc: u64) -> Option<&'static Entry> {
    // Fibonacci hashing: the top bits of the product mix every bit of pc.
    let index = pc.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - CACHE_ENTRIES.trailing_zeros());
    CACHE.get(usize::try_from(index).ok()?)
}

fn cached(pc: u64) -> Option<Rule> {
    let entry = entry(pc)?;
    let before = entry.seq.load(Ordering::Acquire);
    if before & 1 == 1 {
        return None;
    }
    let at = entry.pc.load(Ordering::Relaxed);
    let rule = entry.rule.load(Ordering::Relaxed);
    fence(Ordering::Acquire);
    if entry.seq.load(Ordering::Relaxed) != before || at != pc {
        return None;
    }
    Rule::unpack(rule)
}

fn remember(pc: u64, rule: Rule) {
    let Some(entry) = entry(pc) else {
        return;
    };
    let before = entry.seq.load(Ordering::Relaxed);
    // Busy (another thread's handler, or the one this signal interrupted):
    // this rule is simply not cached.
    if before & 1 == 1
        || entry
            .seq
            .compare_exchange(before, before + 1, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    fence(Ordering::Release);
    entry.pc.store(pc, Ordering::Relaxed);
    entry.rule.store(rule.pack(), Ordering::Relaxed);
    entry.seq.store(before + 2, Ordering::Release);
}

/// A loaded object's executable range and its unwind tables, in memory.
struct Object {
    text: Range<u64>,
    hdr: ParsedEhFrameHdr<EndianSlice<'static, LittleEndian>>,
    eh_frame: EhFrame<EndianSlice<'static, LittleEndian>>,
    bases: BaseAddresses,
}

/// The loaded objects when [`refresh_objects`] last looked, by address.
struct Objects {
    list: Vec<Object>,
    /// The loader's counts of objects loaded and unloaded then: when they
    /// have not moved, neither has any object.
    loads: (u64, u64),
}

impl Objects {
    fn containing(&self, pc: u64) -> Option<&Object> {
        self.list.iter().find(|object| object.text.contains(&pc))
    }
}

static OBJECTS: AtomicPtr<Objects> = AtomicPtr::new(std::ptr::null_mut());

fn objects() -> Option<&'static Objects> {
    // SAFETY: OBJECTS is null or a leaked Box that is never freed or
    // written after it is published.
    unsafe { OBJECTS.load(Ordering::Acquire).as_ref() }
}

/// Reads the loaded objects' unwind tables if objects were loaded or
/// unloaded since the last call. Ordinary code: call it before sampling
/// starts (it allocates and takes the loader's lock). Costs one
/// `dl_iterate_phdr` when nothing changed.
pub(super) fn refresh_objects() {
    let mut found = Found::default();
    // SAFETY: `collect` only reads the `dl_phdr_info` the loader passes for
    // the duration of the call, and writes into `found`, which outlives it.
    unsafe {
        libc::dl_iterate_phdr(Some(collect), (&raw mut found).cast());
    }
    if objects().is_some_and(|current| current.loads == found.loads) {
        return;
    }
    found.list.sort_by_key(|object| object.text.start);
    let fresh = Box::into_raw(Box::new(Objects {
        list: found.list,
        loads: found.loads,
    }));
    // The previous table is leaked, not freed: a handler may be reading it.
    // It changes only when the loader loads or unloads an object.
    OBJECTS.store(fresh, Ordering::Release);
    // Rules of an unloaded object's addresses must not outlive it.
    for entry in &CACHE {
        let before = entry.seq.load(Ordering::Relaxed);
        if before & 1 == 0
            && entry
                .seq
                .compare_exchange(before, before + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            fence(Ordering::Release);
            entry.pc.store(0, Ordering::Relaxed);
            entry.rule.store(0, Ordering::Relaxed);
            entry.seq.store(before + 2, Ordering::Release);
        }
    }
}

#[derive(Default)]
struct Found {
    list: Vec<Object>,
    loads: (u64, u64),
}

unsafe extern "C" fn collect(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut std::ffi::c_void,
) -> libc::c_int {
    // SAFETY: the loader passes a valid `dl_phdr_info` for this call, and
    // `data` is the `Found` that `refresh_objects` passed.
    let (info, found) = unsafe { (&*info, &mut *data.cast::<Found>()) };
    found.loads = (info.dlpi_adds, info.dlpi_subs);
    if info.dlpi_phdr.is_null() {
        return 0;
    }
    // SAFETY: `dlpi_phdr` points at `dlpi_phnum` program headers of a loaded
    // object, valid while the loader holds it (at least for this call).
    let headers =
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
    if let Some(object) = object_of(info.dlpi_addr, headers) {
        found.list.push(object);
    }
    0
}

/// The unwind tables of the object loaded at `base` with `headers`, if it
/// has executable code and an `.eh_frame_hdr` with a search table.
fn object_of(base: u64, headers: &[libc::Elf64_Phdr]) -> Option<Object> {
    let segment = |header: &libc::Elf64_Phdr| {
        let start = base.wrapping_add(header.p_vaddr);
        start..start.wrapping_add(header.p_memsz)
    };
    let loads = || headers.iter().filter(|h| h.p_type == libc::PT_LOAD);
    let text = loads()
        .filter(|h| h.p_flags & libc::PF_X != 0)
        .map(segment)
        .reduce(|a, b| a.start.min(b.start)..a.end.max(b.end))?;
    let hdr_range = segment(headers.iter().find(|h| h.p_type == libc::PT_GNU_EH_FRAME)?);
    // SAFETY: PT_GNU_EH_FRAME lies inside a loaded segment of this object,
    // mapped for as long as the object is loaded; objects holding sampled
    // code are not unloaded while it runs (see `refresh_objects`).
    let hdr_bytes: &'static [u8] = unsafe {
        std::slice::from_raw_parts(
            hdr_range.start as *const u8,
            usize::try_from(hdr_range.end - hdr_range.start).ok()?,
        )
    };
    let mut bases = BaseAddresses::default().set_eh_frame_hdr(hdr_range.start);
    let hdr = EhFrameHdr::new(hdr_bytes, LittleEndian)
        .parse(&bases, 8)
        .ok()?;
    hdr.table()?;
    let eh_frame_start = hdr.eh_frame_ptr().direct().ok()?;
    // `.eh_frame_hdr` does not give `.eh_frame`'s length: read up to the end
    // of the segment it lies in, which is all mapped.
    let eh_frame_end = loads()
        .map(segment)
        .find(|range| range.contains(&eh_frame_start))?
        .end;
    // SAFETY: as above: `eh_frame_start..eh_frame_end` is inside one loaded
    // segment of this object.
    let eh_frame_bytes: &'static [u8] = unsafe {
        std::slice::from_raw_parts(
            eh_frame_start as *const u8,
            usize::try_from(eh_frame_end - eh_frame_start).ok()?,
        )
    };
    bases = bases.set_eh_frame(eh_frame_start).set_text(text.start);
    let mut eh_frame = EhFrame::new(eh_frame_bytes, LittleEndian);
    eh_frame.set_address_size(8);
    Some(Object {
        text,
        hdr,
        eh_frame,
        bases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hint::black_box;

    /// This function's own registers, at one instruction inside it: what a
    /// signal handler would find in the `ucontext` had it interrupted there.
    #[inline(always)]
    fn registers_here() -> Registers {
        let (pc, sp, fp): (u64, u64, u64);
        // SAFETY: reads RIP, RSP and RBP into registers; touches no memory
        // and leaves the stack as it was.
        unsafe {
            std::arch::asm!(
                "lea {pc}, [rip]",
                "mov {sp}, rsp",
                "mov {fp}, rbp",
                pc = out(reg) pc,
                sp = out(reg) sp,
                fp = out(reg) fp,
                options(nomem, nostack, preserves_flags),
            );
        }
        Registers { pc, sp, fp }
    }

    /// Our walk and libgcc's from the same function: the same return
    /// addresses, to the end of the stack.
    #[inline(never)]
    fn both_walks() -> (Vec<u64>, Vec<u64>) {
        let regs = registers_here();
        let mut ours = Vec::new();
        let walked = walk(regs, |ip, _| {
            ours.push(ip);
            true
        });
        assert_eq!(walked, Walk::Done, "stopped early after {ours:x?}");
        let mut libgcc = Vec::new();
        backtrace::trace(|frame| {
            // libgcc ends with the outermost frame's undefined return
            // address as 0, which the sampler never records.
            if !frame.ip().is_null() {
                libgcc.push(frame.ip() as u64);
            }
            true
        });
        (ours, libgcc)
    }

    /// Return addresses after `ours`'s leaf, and libgcc's from the same
    /// caller on (libgcc starts inside `backtrace`).
    fn callers(ours: &[u64], libgcc: &[u64]) -> (Vec<u64>, Vec<u64>) {
        let first = ours[1];
        let from = libgcc
            .iter()
            .position(|ip| *ip == first)
            .unwrap_or_else(|| panic!("libgcc's walk {libgcc:x?} lacks our caller {first:x}"));
        (ours[1..].to_vec(), libgcc[from..].to_vec())
    }

    #[inline(never)]
    fn deep(depth: u32, walks: &mut Option<(Vec<u64>, Vec<u64>)>) -> u64 {
        // A frame of its own size at every level, so CFA offsets vary.
        let mut local = [0_u64; 64];
        local[usize::try_from(depth).unwrap_or(0) % 64] = u64::from(depth);
        let local = black_box(local);
        if depth == 0 {
            *walks = Some(both_walks());
            return local[0];
        }
        let below = if depth.is_multiple_of(3) {
            wide(depth - 1, walks, local[1], local[2], local[3], local[4])
        } else {
            deep(depth - 1, walks)
        };
        black_box(below + local[0])
    }

    #[inline(never)]
    fn wide(
        depth: u32,
        walks: &mut Option<(Vec<u64>, Vec<u64>)>,
        a: u64,
        b: u64,
        c: u64,
        d: u64,
    ) -> u64 {
        let below = deep(depth, walks);
        black_box(below ^ a ^ b ^ c ^ d)
    }

    #[test]
    fn walk_returns_libgccs_frames_to_the_end_of_the_stack() {
        refresh_objects();
        let mut walks = None;
        deep(20, &mut walks);
        let (ours, libgcc) = walks.expect("the deepest call walked");
        let (ours, libgcc) = callers(&ours, &libgcc);
        assert!(ours.len() > 20, "{} frames", ours.len());
        assert_eq!(ours, libgcc);
    }

    #[test]
    fn walk_on_a_spawned_thread_ends_where_libgcc_does() {
        refresh_objects();
        let (ours, libgcc) = std::thread::spawn(|| {
            let mut walks = None;
            deep(5, &mut walks);
            walks.expect("the deepest call walked")
        })
        .join()
        .expect("the thread walked");
        let (ours, libgcc) = callers(&ours, &libgcc);
        assert_eq!(ours, libgcc);
    }

    #[test]
    fn second_walk_reads_every_rule_from_the_cache() {
        refresh_objects();
        let mut first = None;
        deep(8, &mut first);
        let (ours, _) = first.expect("walked");
        // Every caller's rule was cached by the first walk (the leaf's pc
        // differs per call site, its callers' return addresses do not).
        let misses = ours[1..ours.len() - 1]
            .iter()
            .filter(|ip| cached(**ip - 1).is_none())
            .count();
        assert_eq!(misses, 0, "uncached callers of {ours:x?}");
    }

    #[test]
    fn an_address_in_no_object_is_left_to_libgcc() {
        refresh_objects();
        let regs = Registers {
            pc: 0x10,
            sp: registers_here().sp,
            fp: 0,
        };
        let mut seen = 0;
        let walked = walk(regs, |_, _| {
            seen += 1;
            true
        });
        assert_eq!((walked, seen), (Walk::Unsupported, 1));
    }

    #[test]
    fn a_callback_that_declines_stops_the_walk() {
        refresh_objects();
        let mut seen = 0;
        let walked = walk(registers_here(), |_, _| {
            seen += 1;
            seen < 3
        });
        assert_eq!((walked, seen), (Walk::Done, 3));
    }

    #[test]
    fn rules_survive_packing() {
        let rules = [
            Rule::End,
            Rule::Frame {
                cfa_from_fp: false,
                cfa_offset: 8,
                ra_offset: -8,
                fp_offset: None,
            },
            Rule::Frame {
                cfa_from_fp: true,
                cfa_offset: 16,
                ra_offset: -8,
                fp_offset: Some(-16),
            },
            Rule::Frame {
                cfa_from_fp: false,
                cfa_offset: i32::MAX,
                ra_offset: i8::MIN,
                fp_offset: Some(i16::MIN),
            },
            Rule::Frame {
                cfa_from_fp: true,
                cfa_offset: i32::MIN,
                ra_offset: i8::MAX,
                fp_offset: Some(i16::MAX),
            },
        ];
        for rule in rules {
            assert_ne!(rule.pack(), 0);
            assert_eq!(Rule::unpack(rule.pack()), Some(rule));
        }
        assert_eq!(Rule::unpack(0), None);
    }
}
