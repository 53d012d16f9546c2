//! `xrayprofile symbolize`: placeholder replaced below.
use std::path::{Path, PathBuf};

use crate::error::{CliError, CliResult};

/// Names the functions of address-level profiles.
///
/// # Errors
/// Always, until written.
pub(crate) fn run(_binary: &Path, _files: &[PathBuf], _output: Option<&Path>) -> CliResult<()> {
    Err(CliError::new("symbolize is not available yet"))
}
