//! The frames of each sample, named as `go tool pprof` names them: a
//! location's lines in order (inlined functions first, their caller last),
//! an unsymbolized location by its address.

use std::borrow::Cow;
use std::collections::HashMap;

use pprof::protos::{Profile, Sample};

use crate::error::{CliError, CliResult};
use crate::info::text;

/// Resolves the location IDs of a profile's samples to function names.
#[derive(Debug)]
pub(crate) struct Stacks<'a> {
    locations: HashMap<u64, Vec<Cow<'a, str>>>,
}

impl<'a> Stacks<'a> {
    pub(crate) fn new(profile: &'a Profile) -> Stacks<'a> {
        let functions: HashMap<u64, &str> = profile
            .function
            .iter()
            .map(|f| (f.id, text(profile, f.name)))
            .collect();
        let locations = profile
            .location
            .iter()
            .map(|l| {
                let names: Vec<Cow<'a, str>> = if l.line.is_empty() {
                    vec![Cow::Owned(format!("{:#x}", l.address))]
                } else {
                    l.line
                        .iter()
                        .map(|line| {
                            Cow::Borrowed(functions.get(&line.function_id).copied().unwrap_or("?"))
                        })
                        .collect()
                };
                (l.id, names)
            })
            .collect();
        Stacks { locations }
    }

    /// The sample's frames, leaf first.
    pub(crate) fn leaf_first(&self, sample: &Sample) -> impl Iterator<Item = &str> {
        sample
            .location_id
            .iter()
            .flat_map(|id| self.locations.get(id).into_iter().flatten())
            .map(|name| name.as_ref())
    }
}

/// The position of the sample type `name` (`wall`, `cpu`, or an index), or
/// the default: `default_sample_type` when set, else the last, as
/// `go tool pprof` chooses.
///
/// # Errors
/// When the profile has no such sample type; the message lists those it has.
pub(crate) fn sample_index(profile: &Profile, name: Option<&str>) -> CliResult<usize> {
    let types: Vec<&str> = profile
        .sample_type
        .iter()
        .map(|t| text(profile, t.ty))
        .collect();
    let wanted = match name {
        Some(name) => name,
        None => {
            let default = text(profile, profile.default_sample_type);
            return Ok(types
                .iter()
                .position(|t| !default.is_empty() && *t == default)
                .unwrap_or(types.len().saturating_sub(1)));
        }
    };
    types
        .iter()
        .position(|t| *t == wanted)
        .or_else(|| wanted.parse::<usize>().ok().filter(|i| *i < types.len()))
        .ok_or_else(|| {
            CliError::new(format!(
                "the profiles have no sample type `{wanted}`; they have {}",
                types
                    .iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}
