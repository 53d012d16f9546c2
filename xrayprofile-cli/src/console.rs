//! Where the commands write: results to standard output, warnings and
//! progress to standard error. Progress bars appear only when standard error
//! is a terminal, so scripts and CI logs get plain lines.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Prints a warning (`warning: ...`) to standard error.
pub(crate) fn warn(message: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "warning: {message}");
}

/// Prints a note (what was done) to standard error.
pub(crate) fn note(message: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{message}");
}

/// A progress bar of `len` steps labelled `what`; hidden unless standard
/// error is a terminal.
pub(crate) fn progress(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} ({elapsed})") {
        bar.set_style(style);
    }
    bar.set_message(what.to_owned());
    bar
}

/// A spinner for work of unknown length (paged listings); hidden unless
/// standard error is a terminal.
pub(crate) fn spinner(what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{msg} {pos} ({elapsed})") {
        bar.set_style(style);
    }
    bar.set_message(what.to_owned());
    bar
}
