//! Shared pieces of the end-to-end tests: starting a TPM server on a free
//! port with a private state file, running tpm2-tools against it, and the
//! D-Bus + tpm2-abrmd pair that some flows need.
//!
//! A missing tool or binary is a test failure, never a skip.

pub mod abrmd;
pub mod cmd;
pub mod linux_guest;
pub mod scenario;
pub mod server;
pub mod tools;

use std::path::PathBuf;

/// Path of a binary built in this workspace's target directory (next to
/// the test executable's `deps/`), or from `env_override` if that is set.
pub fn workspace_binary(name: &str, env_override: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_override) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target layout");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} not found; build it first (`cargo build --workspace --bins`, or `cargo test --workspace`), \
         or point {env_override} at it",
        path.display()
    );
    path
}

/// Hex encoding, lower case, as tpm2-tools prints it.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
