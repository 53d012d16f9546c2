//! `xrayprofile list`: one row per profile, newest first.

use std::io::Write;
use std::time::SystemTime;

use serde::Serialize;

use crate::args::Select;
use crate::error::{CliError, CliResult};
use crate::source::{Entry, Source};

/// One row, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Row<'a> {
    time: String,
    function: Option<String>,
    trace_id: Option<&'a str>,
    request_id: Option<&'a str>,
    duration_ms: Option<u64>,
    samples: Option<i64>,
    outcome: Option<&'a str>,
    key: &'a str,
    size: u64,
}

impl<'a> Row<'a> {
    fn new(entry: &'a Entry) -> Row<'a> {
        let info = &entry.info;
        Row {
            time: time(entry.written),
            function: info.function(),
            trace_id: info.trace_id.as_deref(),
            request_id: info.request_id.as_deref(),
            duration_ms: info.duration_ms,
            samples: info.samples,
            outcome: info.outcome.as_deref(),
            key: &entry.key,
            size: entry.size,
        }
    }
}

/// UTC to the second, RFC 3339.
fn time(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Lists the selection.
///
/// # Errors
/// The source cannot be opened or listed, or standard output is closed.
pub(crate) async fn run(select: &Select, json: bool, out: &mut dyn Write) -> CliResult<()> {
    let source = Source::open(&[], select.dir.as_ref(), &select.s3()).await?;
    let entries = source.select(&select.filter.filter(), true).await?;
    let rows: Vec<Row<'_>> = entries.iter().map(Row::new).collect();
    let written = if json {
        serde_json::to_writer_pretty(&mut *out, &rows)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        write_table(&rows, out)
    };
    written.map_err(|e| CliError::new(format!("cannot write the list: {e}")))
}

fn write_table(rows: &[Row<'_>], out: &mut dyn Write) -> std::io::Result<()> {
    let dash = || "-".to_owned();
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.time.clone(),
                r.function.clone().unwrap_or_else(dash),
                r.trace_id.map_or_else(dash, str::to_owned),
                r.request_id.map_or_else(dash, str::to_owned),
                r.duration_ms.map_or_else(dash, |d| format!("{d}ms")),
                r.samples.map_or_else(dash, |s| s.to_string()),
                r.outcome.map_or_else(dash, str::to_owned),
                r.key.to_owned(),
            ]
        })
        .collect();
    let header = [
        "TIME", "FUNCTION", "TRACE", "REQUEST", "DURATION", "SAMPLES", "OUTCOME", "KEY",
    ];
    let mut widths = header.map(str::len);
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else if i == 4 || i == 5 {
                text.push_str(&format!("{cell:>width$}  "));
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        text
    };
    writeln!(out, "{}", line(&header.map(str::to_owned)))?;
    for row in &cells {
        writeln!(out, "{}", line(row))?;
    }
    Ok(())
}
