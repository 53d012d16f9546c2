//! Turns the sampler's raw stacks into a pprof profile with function names,
//! files and lines, resolving each distinct address once.

use std::collections::HashMap;
use std::ffi::c_void;
use std::time::{Duration, SystemTime};

use pprof::protos::{Function, Line, Location, Profile, Sample, ValueType};

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
pub(crate) fn profile<'a>(stacks: impl Iterator<Item = &'a [u64]>, timing: Timing) -> Profile {
    let mut counts: HashMap<&[u64], i64> = HashMap::new();
    for stack in stacks {
        *counts.entry(stack).or_default() += 1;
    }
    let period = 1_000_000_000 / i64::from(timing.hz.max(1));
    let mut builder = Builder::default();
    builder.string("");
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
#[derive(Default)]
struct Builder {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    locations: Vec<Location>,
    location_ids: HashMap<u64, u64>,
    functions: Vec<Function>,
    function_ids: HashMap<(i64, i64), u64>,
}

impl Builder {
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
