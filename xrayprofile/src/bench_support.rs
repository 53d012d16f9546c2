//! Entry points for this crate's own benchmarks (`cargo bench -p xrayprofile`):
//! the profiler and the file encoder without a Lambda invocation around them,
//! so the benchmarks time exactly "start → body → pprof bytes".

use crate::pprof_file::{self, Identity};
use crate::profiler::{ActiveProfile, Detail, FinishedProfile, ProfileError};

/// A running profile, as a sampled invocation starts it.
pub struct Profiling(ActiveProfile);

/// A finished profile as it would be stored.
#[derive(Debug)]
pub struct Encoded {
    /// The gzipped pprof file.
    pub gzipped: Vec<u8>,
    /// CPU samples in it.
    pub samples: i64,
}

impl Profiling {
    /// Starts the process-wide profiler.
    ///
    /// # Errors
    /// The profiler's error, as text, when it is busy or cannot start.
    pub fn start() -> Result<Profiling, String> {
        ActiveProfile::start()
            .map(Profiling)
            .map_err(|err| err.to_string())
    }

    /// Like [`Profiling::start`], without warming the symbol cache in the
    /// background: a cold cache is parsed after the body returns.
    ///
    /// # Errors
    /// The profiler's error, as text, when it is busy or cannot start.
    pub fn start_cold() -> Result<Profiling, String> {
        ActiveProfile::start_cold()
            .map(Profiling)
            .map_err(|err| err.to_string())
    }

    /// Stops, symbolizes and encodes, as a sampled invocation does after the
    /// handler returns.
    ///
    /// # Errors
    /// The profiler's or encoder's error, as text.
    pub fn finish(self) -> Result<Encoded, String> {
        encode(self.0.finish())
    }

    /// Like [`Profiling::finish`], writing an address-level profile
    /// (`XRAYPROFILE_SYMBOLIZE=false`) instead of names.
    ///
    /// # Errors
    /// The profiler's or encoder's error, as text.
    pub fn finish_addresses(self) -> Result<Encoded, String> {
        encode(self.0.finish_with(Detail::Addresses))
    }
}

/// Encodes a finished profile as a sampled invocation stores it.
fn encode(finished: Result<FinishedProfile, ProfileError>) -> Result<Encoded, String> {
    let finished = finished.map_err(|err| err.to_string())?;
    let identity = Identity {
        trace_id: "1-5759e988-bd862e3fe1be46a9942701f0",
        request_id: "8476a536-e9f4-11e8-9739-2dfe598c3fcd",
        function_name: "bench",
        function_version: "$LATEST",
        outcome: "ok",
    };
    let file = pprof_file::encode(finished.profile, &identity).map_err(|err| err.to_string())?;
    Ok(Encoded {
        gzipped: file.gzipped,
        samples: file.samples,
    })
}
