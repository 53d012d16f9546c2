//! Flame graphs (the `inferno` crate): the samples folded into
//! `root;...;leaf value` lines, drawn as an interactive SVG. In wall
//! profiles the leaf of every off-CPU sample (`state=off-cpu`: where the
//! invocation waited) is drawn in blue, apart from the on-CPU frames.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use inferno::flamegraph::color::{PaletteMap, parse_hex_color};
use inferno::flamegraph::{self, Options};
use pprof::protos::Profile;

use crate::error::{CliError, CliResult};
use crate::info::text;
use crate::stack::{Stacks, sample_index};

/// What off-CPU leaves are called in the graph, after their function.
const OFF_CPU_SUFFIX: &str = " [off-CPU]";
/// Their colour.
const OFF_CPU_COLOUR: &str = "#5b8fd9";

/// Folded stacks: `root;...;leaf` → the sum of the values of sample type
/// `index`, and the names given to off-CPU leaves.
pub(crate) fn fold(profile: &Profile, index: usize) -> (BTreeMap<String, i64>, BTreeSet<String>) {
    let stacks = Stacks::new(profile);
    let state = |sample: &pprof::protos::Sample| {
        sample
            .label
            .iter()
            .find(|l| text(profile, l.key) == "state")
            .map(|l| text(profile, l.str))
    };
    let mut folded = BTreeMap::new();
    let mut off_cpu = BTreeSet::new();
    for sample in &profile.sample {
        let value = sample.value.get(index).copied().unwrap_or(0);
        if value == 0 {
            continue;
        }
        // `;` separates frames; Rust names have it only in array types.
        let mut frames: Vec<String> = stacks
            .leaf_first(sample)
            .map(|f| f.replace(';', ","))
            .collect();
        if state(sample) == Some("off-cpu")
            && let Some(leaf) = frames.first_mut()
        {
            leaf.push_str(OFF_CPU_SUFFIX);
            off_cpu.insert(leaf.clone());
        }
        frames.reverse();
        let entry = folded.entry(frames.join(";")).or_insert(0_i64);
        *entry = entry.saturating_add(value);
    }
    (folded, off_cpu)
}

/// The graph's options: title, unit, and the off-CPU colour.
pub(crate) fn options<'a>(
    profile: &Profile,
    index: usize,
    title: &str,
    palette: &'a mut PaletteMap,
) -> Options<'a> {
    let mut options = Options::default();
    options.title = title.to_owned();
    options.count_name = profile
        .sample_type
        .get(index)
        .map(|t| format!("{} {}", text(profile, t.ty), text(profile, t.unit)))
        .unwrap_or_else(|| "samples".to_owned());
    options.deterministic = true;
    options.palette_map = Some(palette);
    options
}

/// Writes the flame graph of sample type `sample_index` to `output`.
///
/// # Errors
/// An unknown sample type, nothing to draw, or the file cannot be written.
pub(crate) fn write(
    profile: &Profile,
    sample_index_name: Option<&str>,
    output: &Path,
) -> CliResult<()> {
    let index = sample_index(profile, sample_index_name)?;
    let (folded, off_cpu) = fold(profile, index);
    if folded.is_empty() {
        return Err(CliError::new(
            "the selected profiles have no samples of this type to draw; try another --sample-index",
        ));
    }
    let mut palette = PaletteMap::default();
    if let Some(blue) = parse_hex_color(OFF_CPU_COLOUR) {
        for name in &off_cpu {
            palette.insert(name, blue);
        }
    }
    let title = if off_cpu.is_empty() {
        "xrayprofile".to_owned()
    } else {
        format!("xrayprofile (blue{OFF_CPU_SUFFIX}: waiting)")
    };
    let mut options = options(profile, index, &title, &mut palette);
    let lines: Vec<String> = folded
        .iter()
        .map(|(stack, v)| format!("{stack} {v}"))
        .collect();
    let file = std::fs::File::create(output)
        .map_err(|e| CliError::new(format!("cannot create `{}`: {e}", output.display())))?;
    flamegraph::from_lines(
        &mut options,
        lines.iter().map(String::as_str),
        std::io::BufWriter::new(file),
    )
    .map_err(|e| {
        CliError::new(format!(
            "cannot write the flame graph to `{}`: {e}",
            output.display()
        ))
    })
}
