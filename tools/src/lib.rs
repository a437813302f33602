//! Host programs for Rivet. The library half holds what the binaries share:
//! the MS-simulator protocol server, the swtpm control channel, the state file and the host platform
//! the engine runs on.

pub mod engine;
pub mod mssim;
pub mod state_file;
pub mod swtpm;
