//! Host programs for Rivet. The library half holds what the binaries share:
//! the MS-simulator protocol server, the state file and the host platform
//! the engine runs on.

pub mod engine;
pub mod mssim;
pub mod state_file;
