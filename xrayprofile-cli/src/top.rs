//! The `pprof -top` table: for each function, the value of the samples where
//! it is the leaf (flat) and where it is anywhere on the stack (cum), with
//! their shares of the total and the running sum of flat shares.

use std::collections::HashMap;
use std::fmt::Write as _;

use pprof::protos::Profile;
use regex::Regex;

use crate::info::text;
use crate::stack::Stacks;

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopRow {
    /// The function's name.
    pub name: String,
    /// The value of the samples where it is the leaf.
    pub flat: i64,
    /// The value of the samples where it is on the stack (counted once each).
    pub cum: i64,
}

/// The rows of one sample type, sorted.
#[derive(Debug, Clone)]
pub struct TopTable {
    /// Every function, sorted by flat (or cum), then name.
    pub rows: Vec<TopRow>,
    /// The value of all samples (before `--focus`), the 100 % of the shares.
    pub total: i64,
    /// The sample type's unit (`nanoseconds`, `count`).
    pub unit: String,
}

/// Builds the table for sample type `index`, keeping only the samples with
/// a frame that `focus` matches, if given.
pub fn table(profile: &Profile, index: usize, focus: Option<&Regex>, by_cum: bool) -> TopTable {
    let stacks = Stacks::new(profile);
    let mut rows: HashMap<&str, (i64, i64)> = HashMap::new();
    let mut total = 0_i64;
    let mut seen: Vec<&str> = Vec::new();
    for sample in &profile.sample {
        let value = sample.value.get(index).copied().unwrap_or(0);
        total = total.saturating_add(value);
        if focus.is_some_and(|re| !stacks.leaf_first(sample).any(|name| re.is_match(name))) {
            continue;
        }
        seen.clear();
        for (depth, name) in stacks.leaf_first(sample).enumerate() {
            let row = rows.entry(name).or_default();
            if depth == 0 {
                row.0 = row.0.saturating_add(value);
            }
            if !seen.contains(&name) {
                row.1 = row.1.saturating_add(value);
                seen.push(name);
            }
        }
    }
    let mut rows: Vec<TopRow> = rows
        .into_iter()
        .map(|(name, (flat, cum))| TopRow {
            name: name.to_owned(),
            flat,
            cum,
        })
        .collect();
    // pprof's FlatNameOrder / CumNameOrder: by the value, then the name.
    let key: fn(&TopRow) -> (i64, i64) = if by_cum {
        |r| (r.cum.abs(), r.flat.abs())
    } else {
        |r| (r.flat.abs(), r.cum.abs())
    };
    rows.sort_by(|a, b| {
        key(b)
            .0
            .cmp(&key(a).0)
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| key(b).1.cmp(&key(a).1))
    });
    let unit = profile
        .sample_type
        .get(index)
        .map(|t| text(profile, t.unit).to_owned())
        .unwrap_or_default();
    TopTable { rows, total, unit }
}

impl TopTable {
    /// The table as `go tool pprof -top` prints it, first `n` rows.
    pub fn render(&self, n: usize) -> String {
        let shown: i64 = self.rows.iter().take(n).map(|r| r.flat).sum();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Showing nodes accounting for {}, {} of {} total",
            scaled(shown, &self.unit),
            percent(shown, self.total),
            scaled(self.total, &self.unit)
        );
        if self.rows.len() > n {
            let _ = writeln!(out, "Showing top {n} nodes out of {}", self.rows.len());
        }
        let _ = writeln!(
            out,
            "{:>10} {:>6} {:>6} {:>10} {:>6}",
            "flat", "flat%", "sum%", "cum", "cum%"
        );
        let mut sum = 0_i64;
        for row in self.rows.iter().take(n) {
            sum = sum.saturating_add(row.flat);
            let _ = writeln!(
                out,
                "{:>10} {:>6} {:>6} {:>10} {:>6}  {}",
                scaled(row.flat, &self.unit),
                percent(row.flat, self.total),
                percent(sum, self.total),
                scaled(row.cum, &self.unit),
                percent(row.cum, self.total),
                row.name
            );
        }
        out
    }
}

/// `12.34%`, of `total`.
pub(crate) fn percent(value: i64, total: i64) -> String {
    if total == 0 || value == 0 {
        return "0%".to_owned();
    }
    let text = format!("{:.2}", value as f64 * 100.0 / total as f64);
    if text == "100.00" {
        "100%".to_owned()
    } else {
        format!("{text}%")
    }
}

/// A value in its unit, scaled as pprof does (`2.51s`, `120ms`, `3kB`).
pub(crate) fn scaled(value: i64, unit: &str) -> String {
    let v = value as f64;
    let (scale, suffix): (&[(f64, &str)], &str) = match unit {
        "nanoseconds" | "ns" => (
            &[
                (3600e9, "hrs"),
                (60e9, "mins"),
                (1e9, "s"),
                (1e6, "ms"),
                (1e3, "us"),
            ],
            "ns",
        ),
        "bytes" | "B" => (
            &[
                (1_099_511_627_776.0, "TB"),
                (1_073_741_824.0, "GB"),
                (1_048_576.0, "MB"),
                (1024.0, "kB"),
            ],
            "B",
        ),
        _ => (&[], ""),
    };
    for (size, name) in scale {
        if v.abs() >= *size {
            return format!("{}{name}", trim(v / size));
        }
    }
    if value == 0 {
        return "0".to_owned();
    }
    format!("{value}{suffix}")
}

/// `2.50` → `2.5`, `3.00` → `3`.
fn trim(v: f64) -> String {
    let text = format!("{v:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_like_pprof() {
        assert_eq!(scaled(2_510_000_000, "nanoseconds"), "2.51s");
        assert_eq!(scaled(120_000_000, "nanoseconds"), "120ms");
        assert_eq!(scaled(-1_500_000, "nanoseconds"), "-1.5ms");
        assert_eq!(scaled(900, "nanoseconds"), "900ns");
        assert_eq!(scaled(42, "count"), "42");
        assert_eq!(percent(1, 3), "33.33%");
        assert_eq!(percent(3, 3), "100%");
        assert_eq!(scaled(0, "nanoseconds"), "0");
    }
}
