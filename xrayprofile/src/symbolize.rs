//! Turns raw code addresses into a pprof profile's tables: locations with
//! function names, files and lines (each distinct address resolved once), or
//! addresses with exact-segment mappings and GNU build IDs for offline
//! symbolization. It also keeps the symbolizer's cache: warmed in the
//! background on the process's first profile ([`warm`]) and dropped after a
//! profile that grew it past [`SYMBOL_CACHE_LIMIT_KIB`].
//!
//! It knows nothing of samples or waits: the report (`report.rs`)
//! decides what the stacks mean and asks here for their locations.

mod warm;

use std::collections::HashMap;
use std::ffi::c_void;

use findshlibs::{Segment, SharedLibrary, SharedLibraryId, TargetSharedLibrary};
use pprof::protos::{Function, Line, Location, Mapping, Profile, ValueType};

pub(crate) use warm::{WarmUp, start as warm_up};
#[cfg(test)]
pub(crate) use warm::{forget_cache, running as warming_up};

/// The most RSS the symbolizer's cache may add and be kept between
/// profiles; above it the cache is dropped after each profile. 16 MiB is
/// P3's budget: a binary with line tables keeps its ~13 MiB cache, so later
/// profiles symbolize in 0.5–0.7 ms instead of re-parsing for 10–50 ms (at
/// 8 MiB they missed P4; docs/performance.md).
const SYMBOL_CACHE_LIMIT_KIB: u64 = 16 * 1024;

/// This process's resident set (`VmRSS`), in KiB.
fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// How much symbolizing one profile grows the symbolizer's cache, from
/// [`CacheWatch::start`] (which waits for the warm-up, since both fill the
/// same cache and its growth counts too) to [`CacheWatch::finish`].
pub(crate) struct CacheWatch {
    warm_growth: u64,
    resident_before: Option<u64>,
}

impl CacheWatch {
    /// Waits for `warm_up`, if any, and notes the RSS before symbolizing.
    pub(crate) fn start(warm_up: Option<WarmUp>) -> CacheWatch {
        CacheWatch {
            warm_growth: warm_up.map_or(0, WarmUp::wait),
            resident_before: resident_kib(),
        }
    }

    /// backtrace-rs keeps what it parsed to name addresses. Kept, later
    /// profiles symbolize in ~0.5 ms instead of re-parsing (10 ms with line
    /// tables); but it grows with the binary's debug info. So keep it only
    /// while it is small: if warming and symbolizing grew RSS by more than
    /// [`SYMBOL_CACHE_LIMIT_KIB`], give it back, on a background thread
    /// since freeing it takes milliseconds (docs/performance.md, P3/P4).
    pub(crate) fn finish(self) {
        let growth = self
            .resident_before
            .zip(resident_kib())
            .map_or(0, |(before, after)| after.saturating_sub(before));
        if self.warm_growth.saturating_add(growth) > SYMBOL_CACHE_LIMIT_KIB {
            warm::drop_cache();
        }
    }
}

/// What a location says about its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detail {
    /// Function names, files and lines, resolved in process.
    Names,
    /// Addresses only, with exact-segment mappings and GNU build IDs, for
    /// `pprof` to symbolize later from the unstripped binary.
    Addresses,
}

/// `<X as Trait>::method` → `X::method`: `go tool pprof` shortens names by
/// dropping everything between `<` and `>`, which would merge every
/// `<X as Future>::poll` into one `::poll`.
fn readable(name: &str) -> std::borrow::Cow<'_, str> {
    let Some(rest) = name.strip_prefix('<') else {
        return name.into();
    };
    // Find the ` as ` and the `>` that close the outermost `<`.
    let mut depth = 0_usize;
    let mut as_at = None;
    let mut previous = ' ';
    for (i, c) in rest.char_indices() {
        let arrow = previous == '-';
        previous = c;
        match c {
            '<' => depth += 1,
            // `fn() -> T` inside the self type.
            '>' if arrow => {}
            '>' if depth == 0 => {
                let Some(tail) = rest.get(i + 1..) else {
                    break;
                };
                return match (as_at, rest.get(..as_at.unwrap_or(0))) {
                    (Some(_), Some(self_ty)) if tail.starts_with("::") => {
                        format!("{self_ty}{tail}").into()
                    }
                    _ => name.into(),
                };
            }
            '>' => depth -= 1,
            ' ' if depth == 0
                && as_at.is_none()
                && rest.get(i..).is_some_and(|t| t.starts_with(" as ")) =>
            {
                as_at = Some(i);
            }
            _ => {}
        }
    }
    name.into()
}

/// A profile's tables, each entry interned once.
pub(crate) struct Tables {
    detail: Detail,
    mappings: Vec<Mapping>,
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    locations: Vec<Location>,
    location_ids: HashMap<u64, u64>,
    functions: Vec<Function>,
    function_ids: HashMap<(i64, i64), u64>,
}

impl Default for Tables {
    fn default() -> Tables {
        Tables {
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

impl Tables {
    /// An empty profile's tables: the empty string first, as pprof requires,
    /// and the mappings when locations will be addresses.
    pub(crate) fn new(detail: Detail) -> Tables {
        let mut builder = Tables {
            detail,
            ..Tables::default()
        };
        builder.string("");
        if detail == Detail::Addresses {
            builder.load_mappings();
        }
        builder
    }

    /// A sample or period type, its names interned.
    pub(crate) fn value_type(&mut self, ty: &str, unit: &str) -> ValueType {
        ValueType {
            ty: self.string(ty),
            unit: self.string(unit),
        }
    }

    /// `profile` with these tables filled in.
    pub(crate) fn into_profile(self, profile: Profile) -> Profile {
        Profile {
            location: self.locations,
            function: self.functions,
            mapping: self.mappings,
            string_table: self.strings,
            ..profile
        }
    }

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

    /// The locations of `stack`, leaf first. Callers' addresses are return
    /// addresses, looked up at `addr - 1` so the line is the call's; the leaf
    /// is the exact PC when `leaf_is_pc`.
    pub(crate) fn stack(&mut self, stack: &[u64], leaf_is_pc: bool) -> Vec<u64> {
        stack
            .iter()
            .enumerate()
            .map(|(depth, &addr)| {
                let code = if depth == 0 && leaf_is_pc {
                    addr
                } else {
                    addr.saturating_sub(1)
                };
                self.location(code)
            })
            .collect()
    }

    /// A location that names something other than code, such as the root
    /// of the invocation future.
    pub(crate) fn synthetic(&mut self, name: &str) -> u64 {
        let function_id = self.function(name, name, "");
        let id = u64::try_from(self.locations.len())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        self.locations.push(Location {
            id,
            line: vec![Line {
                function_id,
                line: 0,
            }],
            ..Location::default()
        });
        id
    }

    fn mapping_of(&self, code: u64) -> u64 {
        self.mappings
            .iter()
            .find(|m| (m.memory_start..m.memory_limit).contains(&code))
            .map_or(0, |m| m.id)
    }

    /// The index of `text` in the string table, added if new.
    pub(crate) fn string(&mut self, text: &str) -> i64 {
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
                readable(&format!("{name:#}")).into_owned(),
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

#[cfg(test)]
mod tests {
    use super::readable;

    #[test]
    fn trait_impl_names_keep_their_self_type() {
        for (name, want) in [
            (
                "<tokio::time::sleep::Sleep as core::future::future::Future>::poll",
                "tokio::time::sleep::Sleep::poll",
            ),
            (
                "<core::pin::Pin<P> as core::future::future::Future>::poll",
                "core::pin::Pin<P>::poll",
            ),
            (
                "<fn() -> u8 as core::ops::function::FnOnce<()>>::call_once",
                "fn() -> u8::call_once",
            ),
            ("<&T as core::fmt::Debug>::fmt", "&T::fmt"),
            ("demo::handler::{{closure}}", "demo::handler::{{closure}}"),
            ("<T>::method", "<T>::method"),
            ("<unbalanced", "<unbalanced"),
        ] {
            assert_eq!(readable(name), want, "{name}");
        }
    }
}
