//! The Rivet engine on the host: entropy from the OS, a clock that continues
//! across restarts, and NV commits that land in the state file.

use std::io;
use std::path::PathBuf;
use std::time::Instant;

use rivet_tpm::{Platform, PlatformError, Tpm};

use crate::mssim::Device;
use crate::state_file::SavedState;

/// The engine's platform on a host: `/dev/urandom`-grade entropy (the
/// `getrandom` syscall), a millisecond clock, and a state file.
pub struct HostPlatform {
    state_path: PathBuf,
    clock_base_ms: u64,
    started: Instant,
}

impl HostPlatform {
    /// `clock_base_ms` is the clock saved by the previous run (0 on the first).
    pub fn new(state_path: PathBuf, clock_base_ms: u64) -> Self {
        Self {
            state_path,
            clock_base_ms,
            started: Instant::now(),
        }
    }

    fn clock_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.clock_base_ms.saturating_add(elapsed)
    }

    /// Writes the state file: the engine blob and the current clock.
    pub fn save(&self, engine_state: &[u8]) -> io::Result<()> {
        let saved = SavedState {
            clock_ms: self.clock_ms(),
            engine_state: engine_state.to_vec(),
        };
        saved.store(&self.state_path)
    }
}

impl Platform for HostPlatform {
    fn entropy(&mut self, buf: &mut [u8]) -> Result<(), PlatformError> {
        getrandom::fill(buf).map_err(|e| {
            eprintln!("rivet-tpm-server: entropy: {e}");
            PlatformError("host entropy source failed")
        })
    }

    fn now_ms(&mut self) -> u64 {
        self.clock_ms()
    }

    fn commit(&mut self, state: &[u8]) -> Result<(), PlatformError> {
        self.save(state).map_err(|e| {
            eprintln!(
                "rivet-tpm-server: writing {}: {e}",
                self.state_path.display()
            );
            PlatformError("writing the state file failed")
        })
    }
}

/// The engine as an mssim [`Device`].
pub struct EngineDevice {
    tpm: Tpm<HostPlatform>,
}

impl EngineDevice {
    pub fn new(tpm: Tpm<HostPlatform>) -> Self {
        Self { tpm }
    }
}

impl Device for EngineDevice {
    fn init(&mut self) {
        self.tpm.power_on();
    }

    fn execute(&mut self, locality: u8, command: &[u8]) -> Vec<u8> {
        self.tpm.execute(locality, command)
    }

    fn shutdown(&mut self) -> io::Result<()> {
        let state = self.tpm.state();
        self.tpm.platform().save(&state)
    }
}
