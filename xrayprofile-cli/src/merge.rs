//! Merging profiles into one: samples with the same stack and labels are
//! summed, every sample type is kept, labels are kept (so
//! `pprof -tagfocus request_id=...` still picks one invocation), and the
//! string, mapping, function and location tables are deduplicated.
//!
//! Profiles whose sample types differ (a `wall` profile and a `cpu` one) are
//! not summed: their values mean different things.

use std::collections::HashMap;

use pprof::protos::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};

use crate::error::{CliError, CliResult};
use crate::info::text;

type MappingKey = (u64, u64, u64, i64, i64, [bool; 4]);
type FunctionKey = (i64, i64, i64, i64);
type LocationKey = (u64, u64, Vec<(u64, i64)>, bool);
type SampleKey = (Vec<u64>, Vec<(i64, i64, i64, i64)>);

/// Profiles folded into one, one at a time (memory grows with the distinct
/// stacks, not with the number of profiles).
#[derive(Debug, Default)]
pub struct Merger {
    out: Profile,
    strings: HashMap<String, i64>,
    mappings: HashMap<MappingKey, u64>,
    functions: HashMap<FunctionKey, u64>,
    locations: HashMap<LocationKey, u64>,
    samples: HashMap<SampleKey, usize>,
    /// The sample types (`type/unit`) and the profile that set them.
    types: Option<(Vec<String>, String)>,
    count: usize,
}

impl Merger {
    /// An empty merge.
    pub fn new() -> Merger {
        let mut merger = Merger::default();
        merger.string("");
        merger
    }

    /// How many profiles were added.
    pub fn count(&self) -> usize {
        self.count
    }

    fn string(&mut self, text: &str) -> i64 {
        if let Some(id) = self.strings.get(text) {
            return *id;
        }
        let id = i64::try_from(self.out.string_table.len()).unwrap_or(i64::MAX);
        self.out.string_table.push(text.to_owned());
        self.strings.insert(text.to_owned(), id);
        id
    }

    /// Adds `profile` (called `name` in messages).
    ///
    /// # Errors
    /// When its sample types differ from those of the profiles added before.
    pub fn add(&mut self, name: &str, profile: &Profile) -> CliResult<()> {
        let types: Vec<String> = profile
            .sample_type
            .iter()
            .map(|t| format!("{}/{}", text(profile, t.ty), text(profile, t.unit)))
            .collect();
        match &self.types {
            Some((first, first_name)) if *first != types => {
                return Err(CliError::new(format!(
                    "cannot merge `{name}` with `{first_name}`: its sample types are [{}] but those of `{first_name}` are [{}]; values of different kinds cannot be summed (wall-mode and cpu-mode profiles, XRAYPROFILE_MODE); select profiles of one mode, for example with --function",
                    types.join(", "),
                    first.join(", ")
                )));
            }
            Some(_) => {}
            None => {
                self.out.sample_type = profile
                    .sample_type
                    .iter()
                    .map(|t| self.value_type(profile, t))
                    .collect();
                self.out.period_type = profile
                    .period_type
                    .as_ref()
                    .map(|t| self.value_type(profile, t));
                self.out.period = profile.period;
                self.out.default_sample_type =
                    self.string(text(profile, profile.default_sample_type));
                self.types = Some((types, name.to_owned()));
            }
        }

        let mut mapping_ids = HashMap::new();
        for m in &profile.mapping {
            let key = (
                m.memory_start,
                m.memory_limit,
                m.file_offset,
                self.string(text(profile, m.filename)),
                self.string(text(profile, m.build_id)),
                [
                    m.has_functions,
                    m.has_filenames,
                    m.has_line_numbers,
                    m.has_inline_frames,
                ],
            );
            let next = self.out.mapping.len() as u64 + 1;
            let id = *self.mappings.entry(key).or_insert(next);
            if id == next {
                self.out.mapping.push(Mapping {
                    id,
                    memory_start: key.0,
                    memory_limit: key.1,
                    file_offset: key.2,
                    filename: key.3,
                    build_id: key.4,
                    has_functions: key.5[0],
                    has_filenames: key.5[1],
                    has_line_numbers: key.5[2],
                    has_inline_frames: key.5[3],
                });
            }
            mapping_ids.insert(m.id, id);
        }

        let mut function_ids = HashMap::new();
        for f in &profile.function {
            let key = (
                self.string(text(profile, f.name)),
                self.string(text(profile, f.system_name)),
                self.string(text(profile, f.filename)),
                f.start_line,
            );
            let next = self.out.function.len() as u64 + 1;
            let id = *self.functions.entry(key).or_insert(next);
            if id == next {
                self.out.function.push(Function {
                    id,
                    name: key.0,
                    system_name: key.1,
                    filename: key.2,
                    start_line: key.3,
                });
            }
            function_ids.insert(f.id, id);
        }

        let mut location_ids = HashMap::new();
        for l in &profile.location {
            let lines: Vec<(u64, i64)> = l
                .line
                .iter()
                .map(|line| {
                    (
                        function_ids.get(&line.function_id).copied().unwrap_or(0),
                        line.line,
                    )
                })
                .collect();
            let mapping = mapping_ids.get(&l.mapping_id).copied().unwrap_or(0);
            let key = (mapping, l.address, lines, l.is_folded);
            let next = self.out.location.len() as u64 + 1;
            let id = *self.locations.entry(key.clone()).or_insert(next);
            if id == next {
                self.out.location.push(Location {
                    id,
                    mapping_id: key.0,
                    address: key.1,
                    line: key
                        .2
                        .iter()
                        .map(|&(function_id, line)| Line { function_id, line })
                        .collect(),
                    is_folded: key.3,
                });
            }
            location_ids.insert(l.id, id);
        }

        for sample in &profile.sample {
            let stack: Vec<u64> = sample
                .location_id
                .iter()
                .map(|id| location_ids.get(id).copied().unwrap_or(0))
                .collect();
            let mut labels: Vec<(i64, i64, i64, i64)> = sample
                .label
                .iter()
                .map(|l| {
                    (
                        self.string(text(profile, l.key)),
                        if l.str == 0 {
                            0
                        } else {
                            self.string(text(profile, l.str))
                        },
                        l.num,
                        if l.num_unit == 0 {
                            0
                        } else {
                            self.string(text(profile, l.num_unit))
                        },
                    )
                })
                .collect();
            labels.sort_unstable();
            let width = self.out.sample_type.len();
            let index = match self.samples.get(&(stack.clone(), labels.clone())) {
                Some(index) => *index,
                None => {
                    self.out.sample.push(Sample {
                        location_id: stack.clone(),
                        value: vec![0; width],
                        label: labels
                            .iter()
                            .map(|&(key, str, num, num_unit)| Label {
                                key,
                                str,
                                num,
                                num_unit,
                            })
                            .collect(),
                    });
                    let index = self.out.sample.len() - 1;
                    self.samples.insert((stack, labels), index);
                    index
                }
            };
            if let Some(merged) = self.out.sample.get_mut(index) {
                for (total, value) in merged.value.iter_mut().zip(&sample.value) {
                    *total = total.saturating_add(*value);
                }
            }
        }

        if profile.time_nanos > 0
            && (self.out.time_nanos == 0 || profile.time_nanos < self.out.time_nanos)
        {
            self.out.time_nanos = profile.time_nanos;
        }
        self.out.duration_nanos = self
            .out
            .duration_nanos
            .saturating_add(profile.duration_nanos);
        self.count += 1;
        Ok(())
    }

    fn value_type(&mut self, profile: &Profile, t: &ValueType) -> ValueType {
        ValueType {
            ty: self.string(text(profile, t.ty)),
            unit: self.string(text(profile, t.unit)),
        }
    }

    /// The merged profile; `None` if nothing was added.
    pub fn finish(mut self) -> Option<Profile> {
        self.types.as_ref()?;
        let note = format!("xrayprofile merge: {} profiles", self.count);
        let id = self.string(&note);
        self.out.comment.push(id);
        Some(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A profile with one sample per stack (leaf first), named functions.
    fn profile(types: &[&str], stacks: &[(&[&str], &[i64], &str)]) -> Profile {
        let mut strings = vec![String::new()];
        let mut s = |t: &str| {
            strings.iter().position(|x| x == t).map_or_else(
                || {
                    strings.push(t.to_owned());
                    strings.len() as i64 - 1
                },
                |i| i as i64,
            )
        };
        let sample_type = types
            .iter()
            .map(|t| ValueType {
                ty: s(t),
                unit: s("nanoseconds"),
            })
            .collect();
        let mut function = Vec::new();
        let mut location = Vec::new();
        let mut sample = Vec::new();
        for (frames, values, request) in stacks {
            let mut ids = Vec::new();
            for frame in *frames {
                let name = s(frame);
                let id = function.len() as u64 + 10;
                function.push(Function {
                    id,
                    name,
                    ..Function::default()
                });
                location.push(Location {
                    id: id + 100,
                    line: vec![Line {
                        function_id: id,
                        line: 1,
                    }],
                    ..Location::default()
                });
                ids.push(id + 100);
            }
            let label = vec![Label {
                key: s("request_id"),
                str: s(request),
                ..Label::default()
            }];
            sample.push(Sample {
                location_id: ids,
                value: values.to_vec(),
                label,
            });
        }
        Profile {
            sample_type,
            sample,
            function,
            location,
            string_table: strings,
            ..Profile::default()
        }
    }

    #[test]
    fn same_stacks_and_labels_are_summed_tables_deduplicated() {
        let a = profile(
            &["wall", "cpu"],
            &[
                (&["leaf", "main"], &[5, 1], "r1"),
                (&["other", "main"], &[2, 0], "r1"),
            ],
        );
        let b = profile(
            &["wall", "cpu"],
            &[
                (&["leaf", "main"], &[7, 3], "r1"),
                (&["leaf", "main"], &[1, 1], "r2"),
            ],
        );
        let mut merger = Merger::new();
        merger.add("a", &a).unwrap();
        merger.add("b", &b).unwrap();
        let merged = merger.finish().unwrap();
        assert_eq!(merged.function.len(), 3, "leaf, main, other once each");
        assert_eq!(merged.location.len(), 3);
        assert_eq!(merged.sample.len(), 3, "r1 leaf summed; r1 other; r2 leaf");
        let total = |i: usize| merged.sample.iter().map(|s| s.value[i]).sum::<i64>();
        assert_eq!((total(0), total(1)), (15, 5));
        let leaf_r1 = merged.sample.iter().find(|s| s.value == vec![12, 4]);
        assert!(leaf_r1.is_some(), "{:?}", merged.sample);
        let names: std::collections::HashSet<_> = merged.string_table.iter().collect();
        assert_eq!(names.len(), merged.string_table.len(), "no string twice");
    }

    #[test]
    fn different_sample_types_are_refused_with_the_reason() {
        let wall = profile(&["wall", "cpu"], &[(&["f"], &[1, 1], "r")]);
        let cpu = profile(&["cpu"], &[(&["f"], &[1], "r")]);
        let mut merger = Merger::new();
        merger.add("wall.pprof", &wall).unwrap();
        let err = merger.add("cpu.pprof", &cpu).unwrap_err().to_string();
        assert!(
            err.contains("cpu.pprof")
                && err.contains("[cpu/nanoseconds]")
                && err.contains("[wall/nanoseconds, cpu/nanoseconds]"),
            "{err}"
        );
    }
}
