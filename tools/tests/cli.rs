//! The `rivet-tpm-server` binary's command line and start-up checks. (Also
//! makes `cargo test` build the binary, which the suites in tests/ start.)

use std::process::Command;

const SERVER: &str = env!("CARGO_BIN_EXE_rivet-tpm-server");

#[test]
fn help_names_the_options() {
    let out = Command::new(SERVER).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for option in ["--port", "--state", "--host", "--ctrl"] {
        assert!(
            help.contains(option),
            "{option} missing from --help:\n{help}"
        );
    }
}

#[test]
fn state_is_required() {
    let out = Command::new(SERVER).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--state"));
}

#[test]
fn unwritable_state_path_is_an_error_exit() {
    let out = Command::new(SERVER)
        .args(["--port", "0", "--state", "/nonexistent-dir/tpm.state"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent-dir/tpm.state"), "{err}");
}

#[test]
fn bad_state_file_is_refused_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("tpm.state");
    std::fs::write(&state, b"RIVETTPM but not really").unwrap();
    let out = Command::new(SERVER)
        .args(["--port", "0", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(std::fs::read(&state).unwrap(), b"RIVETTPM but not really");
}
