//! `rivet-libtpms-server` starts and refuses a bad state file. (Also makes
//! `cargo test` build the binary, which the suites in tests/ start.)

use std::process::Command;

const SERVER: &str = env!("CARGO_BIN_EXE_rivet-libtpms-server");

#[test]
fn bad_state_file_is_refused() {
    let dir = std::env::temp_dir().join(format!("rivet-libtpms-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("tpm.state");
    std::fs::write(&state, b"garbage").unwrap();
    let out = Command::new(SERVER)
        .args(["--port", "0", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tpm.state"));
}
