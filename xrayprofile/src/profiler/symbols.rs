//! Turns the sampler's raw stacks into a pprof profile with function names,
//! files and lines, resolving each distinct address once.

use std::collections::HashMap;
use std::ffi::c_void;
use std::time::{Duration, SystemTime};

use findshlibs::{Segment, SharedLibrary, SharedLibraryId, TargetSharedLibrary};
use pprof::protos::{Function, Line, Location, Mapping, Profile, Sample, ValueType};

/// What a location says about its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detail {
    /// Function names, files and lines, resolved in process.
    Names,
    /// Addresses only, with exact-segment mappings and GNU build IDs, for
    /// `pprof` to symbolize later from the unstripped binary.
    Addresses,
}

/// What the samples were taken at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) started: SystemTime,
    pub(crate) duration: Duration,
    pub(crate) hz: u32,
}

/// Builds a CPU profile of `stacks` (leaf first: the interrupted PC, then
/// return addresses). Locations carry the code address (`return address - 1`
/// for callers, so the line is the call's, not the next statement's) and one
/// line per function inlined at it, innermost first, as pprof expects.
pub(crate) fn profile<'a>(
    stacks: impl Iterator<Item = &'a [u64]>,
    timing: Timing,
    detail: Detail,
) -> Profile {
    let mut counts: HashMap<&[u64], i64> = HashMap::new();
    for stack in stacks {
        *counts.entry(stack).or_default() += 1;
    }
    let period = 1_000_000_000 / i64::from(timing.hz.max(1));
    let mut builder = Builder {
        detail,
        ..Builder::default()
    };
    builder.string("");
    if detail == Detail::Addresses {
        builder.load_mappings();
    }
    let samples_type = ValueType {
        ty: builder.string("samples"),
        unit: builder.string("count"),
    };
    let cpu_type = ValueType {
        ty: builder.string("cpu"),
        unit: builder.string("nanoseconds"),
    };
    let mut samples: Vec<Sample> = Vec::with_capacity(counts.len());
    for (stack, count) in counts {
        let location_id = stack
            .iter()
            .enumerate()
            .map(|(depth, &addr)| {
                let code = if depth == 0 {
                    addr
                } else {
                    addr.saturating_sub(1)
                };
                builder.location(code)
            })
            .collect();
        samples.push(Sample {
            location_id,
            value: vec![count, count.saturating_mul(period)],
            ..Sample::default()
        });
    }
    // Deterministic order: most samples first.
    samples.sort_by(|a, b| {
        b.value
            .cmp(&a.value)
            .then(a.location_id.cmp(&b.location_id))
    });
    Profile {
        sample_type: vec![samples_type, cpu_type.clone()],
        sample: samples,
        location: builder.locations,
        function: builder.functions,
        mapping: builder.mappings,
        string_table: builder.strings,
        time_nanos: timing
            .started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        duration_nanos: i64::try_from(timing.duration.as_nanos()).unwrap_or(i64::MAX),
        period_type: Some(cpu_type),
        period,
        ..Profile::default()
    }
}

/// The profile's tables, each entry interned once.
struct Builder {
    detail: Detail,
    mappings: Vec<Mapping>,
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    locations: Vec<Location>,
    location_ids: HashMap<u64, u64>,
    functions: Vec<Function>,
    function_ids: HashMap<(i64, i64), u64>,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            detail: Detail::Names,
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

impl Builder {
    /// One mapping per executable `PT_LOAD` segment of every loaded object,
    /// exactly as the segment is (not page-aligned: `go tool pprof` computes
    /// a wrong load bias from page-aligned ones), the main program first.
    fn load_mappings(&mut self) {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let main_program = std::env::current_exe()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut found: Vec<(u64, u64, u64, String, String)> = Vec::new();
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
        for (start, limit, offset, name, build_id) in found {
            let id = u64::try_from(self.mappings.len())
                .unwrap_or(u64::MAX)
                .saturating_add(1);
            let filename = self.string(&name);
            let build_id = self.string(&build_id);
            self.mappings.push(Mapping {
                id,
                memory_start: start,
                memory_limit: limit,
                file_offset: offset,
                filename,
                build_id,
                ..Mapping::default()
            });
        }
    }

    fn mapping_of(&self, code: u64) -> u64 {
        self.mappings
            .iter()
            .find(|m| (m.memory_start..m.memory_limit).contains(&code))
            .map_or(0, |m| m.id)
    }

    fn string(&mut self, text: &str) -> i64 {
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
        if self.detail == Detail::Addresses {
            let id = u64::try_from(self.locations.len())
                .unwrap_or(u64::MAX)
                .saturating_add(1);
            self.locations.push(Location {
                id,
                mapping_id: self.mapping_of(code),
                address: code,
                ..Location::default()
            });
            self.location_ids.insert(code, id);
            return id;
        }
        let mut symbols: Vec<(String, String, String, i64)> = Vec::new();
        // `resolve` looks up `addr - 1` (it expects return addresses); `code`
        // is already the instruction's own address.
        backtrace::resolve(code.wrapping_add(1) as usize as *mut c_void, |symbol| {
            let Some(name) = symbol.name() else {
                return;
            };
            // `{:#}` drops the `::h<hash>` suffix of legacy-mangled names.
            symbols.push((
                format!("{name:#}"),
                String::from_utf8_lossy(name.as_bytes()).into_owned(),
                symbol
                    .filename()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                symbol.lineno().map_or(0, i64::from),
            ));
        });
        let line = symbols
            .into_iter()
            .map(|(name, system_name, file, line)| Line {
                function_id: self.function(&name, &system_name, &file),
                line,
            })
            .collect();
        let id = u64::try_from(self.locations.len())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        self.locations.push(Location {
            id,
            address: code,
            line,
            ..Location::default()
        });
        self.location_ids.insert(code, id);
        id
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
