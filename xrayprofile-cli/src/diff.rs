//! `xrayprofile diff`: what changed between two sets of profiles (slow vs
//! fast invocations, before vs after a deploy). Each set is merged and its
//! values divided by its number of invocations, so sets of different sizes
//! compare; the result is a table of per-function deltas and, with `-o`, a
//! differential flame graph (red: more time per invocation in the target,
//! blue: less).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Parser;
use inferno::flamegraph;
use inferno::flamegraph::color::PaletteMap;

use crate::args::{FilterArgs, Select, View};
use crate::console;
use crate::error::{CliError, CliResult};
use crate::load::{Loaded, load};
use crate::stack::sample_index;
use crate::top::{TopTable, percent, scaled, table};

/// One side of the comparison: files, and filters added to the shared ones.
#[derive(Debug, Parser)]
#[command(no_binary_name = true)]
struct Side {
    #[command(flatten)]
    filter: FilterArgs,
    files: Vec<PathBuf>,
}

/// `min-duration=1s` → `--min-duration 1s`; anything else is a path.
fn side(
    spec: &[String],
    shared: &FilterArgs,
    which: &str,
) -> CliResult<(Vec<PathBuf>, crate::filter::Filter)> {
    let mut argv = Vec::new();
    for item in spec {
        match item.split_once('=') {
            Some((name, value)) if !Path::new(item).exists() => {
                argv.push(format!("--{name}"));
                argv.push(value.to_owned());
            }
            _ => argv.push(item.clone()),
        }
    }
    let parsed = Side::try_parse_from(&argv).map_err(|e| {
        CliError::new(format!(
            "--{which}: {}; give files, directories or filters written `name=value` (trace, function, since, from, to, outcome, min-duration, max-duration)",
            e.kind()
        ))
    })?;
    let mut filter = shared.filter();
    let own = parsed.filter.filter();
    filter.trace = own.trace.or(filter.trace);
    filter.function = own.function.or(filter.function);
    filter.from = own.from.or(filter.from);
    filter.to = own.to.or(filter.to);
    filter.outcome = own.outcome.or(filter.outcome);
    filter.min_duration = own.min_duration.or(filter.min_duration);
    filter.max_duration = own.max_duration.or(filter.max_duration);
    Ok((parsed.files, filter))
}

/// Per-invocation folded stacks of one side.
fn per_invocation(loaded: &Loaded, index: usize) -> BTreeMap<String, i64> {
    let n = i64::try_from(loaded.count.max(1)).unwrap_or(i64::MAX);
    crate::flamegraph::fold(&loaded.profile, index)
        .0
        .into_iter()
        .map(|(stack, v)| (stack, (v + n / 2) / n))
        .collect()
}

/// Runs the comparison.
///
/// # Errors
/// Either side cannot be loaded, their sample types differ, or the output
/// cannot be written.
pub(crate) async fn run(
    select: &Select,
    base: &[String],
    target: &[String],
    output: Option<&Path>,
    view: &View,
    out: &mut dyn Write,
) -> CliResult<()> {
    let (base_files, base_filter) = side(base, &select.filter, "base")?;
    let (target_files, target_filter) = side(target, &select.filter, "target")?;
    let base = load(select, &base_files, &base_filter).await?;
    let target = load(select, &target_files, &target_filter).await?;
    let index = sample_index(&target.profile, view.sample_index.as_deref())?;
    let type_name = |p: &pprof::protos::Profile| {
        p.sample_type
            .get(index)
            .map(|t| crate::info::text(p, t.ty).to_owned())
    };
    if type_name(&base.profile) != type_name(&target.profile) {
        return Err(CliError::new(format!(
            "the base's sample type {:?} differs from the target's {:?}; compare profiles of one mode",
            type_name(&base.profile),
            type_name(&target.profile)
        )));
    }

    let base_table = table(&base.profile, index, None, true);
    let target_table = table(&target.profile, index, None, true);
    let rows = deltas(&base_table, base.count, &target_table, target.count);
    let unit = target_table.unit.clone();
    let base_total = per(base_table.total, base.count);
    let target_total = per(target_table.total, target.count);
    let mut text = format!(
        "per invocation: base {} ({} profiles), target {} ({} profiles), delta {}\n",
        scaled(base_total, &unit),
        base.count,
        scaled(target_total, &unit),
        target.count,
        scaled(target_total - base_total, &unit)
    );
    text.push_str(&format!(
        "{:>11} {:>11} {:>8} {:>10} {:>10}  name\n",
        "flat Δ", "cum Δ", "cum Δ%", "base cum", "target cum"
    ));
    for row in rows.iter().take(view.rows) {
        text.push_str(&format!(
            "{:>11} {:>11} {:>8} {:>10} {:>10}  {}\n",
            signed(row.flat, &unit),
            signed(row.cum, &unit),
            percent(row.cum, base_total.max(1)),
            scaled(row.base_cum, &unit),
            scaled(row.target_cum, &unit),
            row.name
        ));
    }
    out.write_all(text.as_bytes())
        .map_err(|e| CliError::new(format!("cannot write the table: {e}")))?;

    if let Some(output) = output {
        let before = per_invocation(&base, index);
        let after = per_invocation(&target, index);
        let fold = |m: &BTreeMap<String, i64>| {
            m.iter()
                .map(|(s, v)| format!("{s} {v}\n"))
                .collect::<String>()
        };
        let mut differential = Vec::new();
        inferno::differential::from_readers(
            inferno::differential::Options::default(),
            fold(&before).as_bytes(),
            fold(&after).as_bytes(),
            &mut differential,
        )
        .map_err(|e| CliError::new(format!("cannot fold the differential: {e}")))?;
        let mut palette = PaletteMap::default();
        let mut options = crate::flamegraph::options(
            &target.profile,
            index,
            "xrayprofile diff (per invocation; red: more in the target, blue: less)",
            &mut palette,
        );
        let file = std::fs::File::create(output)
            .map_err(|e| CliError::new(format!("cannot create `{}`: {e}", output.display())))?;
        let text = String::from_utf8_lossy(&differential).into_owned();
        flamegraph::from_lines(&mut options, text.lines(), std::io::BufWriter::new(file))
            .map_err(|e| CliError::new(format!("cannot write `{}`: {e}", output.display())))?;
        console::note(&format!("wrote {}", output.display()));
    }
    Ok(())
}

/// One function's change per invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delta {
    pub(crate) name: String,
    pub(crate) flat: i64,
    pub(crate) cum: i64,
    pub(crate) base_cum: i64,
    pub(crate) target_cum: i64,
}

fn per(value: i64, count: usize) -> i64 {
    let n = i64::try_from(count.max(1)).unwrap_or(i64::MAX);
    (value + n / 2) / n
}

/// Every function of either side, by the size of its cumulative change.
pub(crate) fn deltas(
    base: &TopTable,
    base_count: usize,
    target: &TopTable,
    target_count: usize,
) -> Vec<Delta> {
    let mut by_name: BTreeMap<&str, Delta> = BTreeMap::new();
    for (rows, count, sign) in [
        (&base.rows, base_count, -1),
        (&target.rows, target_count, 1),
    ] {
        for row in rows.iter() {
            let delta = by_name.entry(&row.name).or_insert_with(|| Delta {
                name: row.name.clone(),
                flat: 0,
                cum: 0,
                base_cum: 0,
                target_cum: 0,
            });
            delta.flat += sign * per(row.flat, count);
            delta.cum += sign * per(row.cum, count);
            if sign < 0 {
                delta.base_cum = per(row.cum, count);
            } else {
                delta.target_cum = per(row.cum, count);
            }
        }
    }
    let mut rows: Vec<Delta> = by_name.into_values().collect();
    rows.sort_by(|a, b| {
        b.cum
            .abs()
            .cmp(&a.cum.abs())
            .then_with(|| b.flat.abs().cmp(&a.flat.abs()))
            .then_with(|| a.name.cmp(&b.name))
    });
    rows
}

fn signed(value: i64, unit: &str) -> String {
    if value > 0 {
        format!("+{}", scaled(value, unit))
    } else {
        scaled(value, unit)
    }
}
