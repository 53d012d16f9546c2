//! Turns the sampler's raw stacks into a pprof profile with function names,
//! files and lines, resolving each distinct address once.

use std::collections::HashMap;
use std::ffi::c_void;
use std::time::{Duration, SystemTime};

use findshlibs::{Segment, SharedLibrary, SharedLibraryId, TargetSharedLibrary};
use pprof::protos::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};

use crate::wall::{Charge, Recording};

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
    let mut builder = Builder::new(detail);
    let samples_type = builder.value_type("samples", "count");
    let cpu_type = builder.value_type("cpu", "nanoseconds");
    let mut samples: Vec<Sample> = Vec::with_capacity(counts.len());
    for (stack, count) in counts {
        samples.push(Sample {
            location_id: builder.stack(stack, true),
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
    builder.into_profile(
        Profile {
            sample_type: vec![samples_type, cpu_type.clone()],
            sample: samples,
            period_type: Some(cpu_type),
            period,
            ..Profile::default()
        },
        timing,
    )
}

/// The root frame of every stack inside the invocation future.
const INVOCATION_ROOT: &str = "[invocation future]";
/// The root frame of CPU samples taken elsewhere (other tasks and threads).
const OUTSIDE_ROOT: &str = "[outside the invocation future]";

/// Builds a wall-clock profile of one invocation: sample types
/// `wall/nanoseconds` (the default) and `cpu/nanoseconds`, and a `state` label.
///
/// - Off-CPU: one sample per stack the future waited on, wall = the exact
///   time charged to it by the recorder.
/// - On-CPU: the CPU samples taken inside the invocation's poll (cut at its
///   root by the sampler), cpu = samples × period, wall scaled so they add up
///   to the measured polling time. When the sampler saw none of the polls
///   (short polls), the recorder's per-poll charges stand in for them.
/// - Other CPU samples keep their cpu value, with wall 0, under
///   [`OUTSIDE_ROOT`].
pub(crate) fn wall_profile<'a>(
    cpu_stacks: impl Iterator<Item = (bool, &'a [u64])>,
    recording: &Recording,
    timing: Timing,
    detail: Detail,
) -> Profile {
    let mut counts: HashMap<(bool, &[u64]), i64> = HashMap::new();
    for key in cpu_stacks {
        *counts.entry(key).or_default() += 1;
    }
    let mut cpu: Vec<((bool, &[u64]), i64)> = counts.into_iter().collect();
    // Deterministic, and the wall scaling below hands out rounding in order.
    cpu.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let period = 1_000_000_000 / i64::from(timing.hz.max(1));
    let mut builder = Builder::new(detail);
    let wall_type = builder.value_type("wall", "nanoseconds");
    let cpu_type = builder.value_type("cpu", "nanoseconds");
    let state_key = builder.string("state");
    let state = |builder: &mut Builder, value: &str| Label {
        key: state_key,
        str: builder.string(value),
        ..Label::default()
    };
    let inside = builder.synthetic(INVOCATION_ROOT);
    let outside = builder.synthetic(OUTSIDE_ROOT);
    let polling = i64::try_from(recording.totals.polling.as_nanos()).unwrap_or(i64::MAX);
    let sampled_inside: i64 = cpu.iter().filter(|((p, _), _)| *p).map(|(_, n)| n).sum();

    let mut samples: Vec<Sample> = Vec::new();
    let mut wall_left = polling;
    let mut inside_left = sampled_inside;
    for ((in_poll, stack), count) in cpu {
        let mut location_id = builder.stack(stack, true);
        location_id.push(if in_poll { inside } else { outside });
        // Proportional share of the polling time; the last sample takes
        // what rounding left, so the on-CPU wall adds up exactly.
        let wall = if in_poll {
            let share = if inside_left == count {
                wall_left
            } else {
                i64::try_from(
                    i128::from(polling) * i128::from(count) / i128::from(sampled_inside.max(1)),
                )
                .unwrap_or(0)
            };
            inside_left -= count;
            wall_left -= share;
            share
        } else {
            0
        };
        let label = state(&mut builder, if in_poll { "on-cpu" } else { "other" });
        samples.push(Sample {
            location_id,
            value: vec![wall, count.saturating_mul(period)],
            label: vec![label],
        });
    }
    for &(charge, ns) in &recording.charges {
        let (leaf, stack, on_cpu) = match charge {
            Charge::Waiting(id) => (None, recording.stack(id), false),
            Charge::NoRegistration => (Some("[woken without a registration]"), &[][..], false),
            Charge::Unrecorded => (
                Some("[waiting, not recorded: probe budget]"),
                &[][..],
                false,
            ),
            // Stand-ins for CPU samples; only when there are none.
            Charge::ResumedFrom(_) | Charge::Running if sampled_inside > 0 => continue,
            Charge::ResumedFrom(id) => {
                (Some("[on-CPU after this await]"), recording.stack(id), true)
            }
            Charge::Running => (Some("[on-CPU]"), &[][..], true),
        };
        let mut location_id: Vec<u64> = leaf
            .map(|name| builder.synthetic(name))
            .into_iter()
            .collect();
        location_id.extend(builder.stack(stack, false));
        location_id.push(inside);
        let label = state(&mut builder, if on_cpu { "on-cpu" } else { "off-cpu" });
        samples.push(Sample {
            location_id,
            value: vec![i64::try_from(ns).unwrap_or(i64::MAX), 0],
            label: vec![label],
        });
    }

    let totals = &recording.totals;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let comments = [
        format!(
            "wall: elapsed={:.3}ms polling={:.3}ms pending={:.3}ms polls={}",
            ms(recording.elapsed),
            ms(totals.polling),
            ms(totals.pending),
            totals.polls
        ),
        format!(
            "cpu: {sampled_inside} samples at {} Hz inside the invocation future, scaled to the polling time",
            timing.hz
        ),
        if totals.recorded_polls < totals.polls {
            format!(
                "probe: recorded {} of {} polls (the probe cost {:.3}ms as its budget counts it, recording {:.3}ms); past {} polls it records a poll only while its cost stays under {}% of the elapsed time, and not within {}µs of the previous poll; the {:.3}ms of waits after the others are under [waiting, not recorded: probe budget]",
                totals.recorded_polls,
                totals.polls,
                ms(totals.probe_cost()),
                ms(totals.recording),
                crate::wall::FREE_RECORDINGS,
                crate::wall::PROBE_BUDGET_PERCENT,
                crate::wall::DENSE_POLLS.as_micros(),
                ms(totals.unrecorded)
            )
        } else {
            format!(
                "probe: recorded {} of {} polls (the probe cost {:.3}ms as its budget counts it, recording {:.3}ms)",
                totals.recorded_polls,
                totals.polls,
                ms(totals.probe_cost()),
                ms(totals.recording)
            )
        },
        format!(
            "probe: {} stale registrations discarded, {} stacks deeper than {} frames",
            totals.stale,
            totals.truncated,
            crate::wall::probe::MAX_FRAMES
        ),
        if crate::wall::probe::frame_pointers() || totals.fp_fallbacks > 0 {
            format!(
                "probe: unwinder=frame pointers, {} captures fell back to DWARF",
                totals.fp_fallbacks
            )
        } else {
            "probe: unwinder=DWARF".to_owned()
        },
    ];
    let comment = comments.iter().map(|c| builder.string(c)).collect();
    let default_sample_type = wall_type.ty;
    builder.into_profile(
        Profile {
            sample_type: vec![wall_type.clone(), cpu_type],
            sample: samples,
            period_type: Some(wall_type),
            period: 1,
            comment,
            default_sample_type,
            ..Profile::default()
        },
        timing,
    )
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
    /// An empty profile's tables: the empty string first, as pprof requires,
    /// and the mappings when locations will be addresses.
    fn new(detail: Detail) -> Builder {
        let mut builder = Builder {
            detail,
            ..Builder::default()
        };
        builder.string("");
        if detail == Detail::Addresses {
            builder.load_mappings();
        }
        builder
    }

    fn value_type(&mut self, ty: &str, unit: &str) -> ValueType {
        ValueType {
            ty: self.string(ty),
            unit: self.string(unit),
        }
    }

    /// `profile` with these tables and `timing` filled in.
    fn into_profile(self, profile: Profile, timing: Timing) -> Profile {
        Profile {
            location: self.locations,
            function: self.functions,
            mapping: self.mappings,
            string_table: self.strings,
            time_nanos: timing
                .started
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
            duration_nanos: i64::try_from(timing.duration.as_nanos()).unwrap_or(i64::MAX),
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
    fn stack(&mut self, stack: &[u64], leaf_is_pc: bool) -> Vec<u64> {
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
    fn synthetic(&mut self, name: &str) -> u64 {
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
