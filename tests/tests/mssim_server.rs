//! The MS-simulator server itself: its protocol, its behaviour on bad
//! input, its latency, its state file and its shutdown. Runs against both
//! servers (engine and reference) because they share the protocol code but
//! not the state handling.

use std::time::{Duration, Instant};

use rivet_tests::cmd::{Buf, Command, cc, check_well_formed, rc};
use rivet_tests::server::{Backend, RawClient, TpmServer};

const TPM_RC_FAILURE: u32 = 0x101;
const TPM_RC_COMMAND_SIZE: u32 = 0x142;

fn startup() -> Vec<u8> {
    Command::new(cc::STARTUP).params(Buf::new().u16(0)).bytes()
}
fn get_random(n: u16) -> Vec<u8> {
    Command::new(cc::GET_RANDOM)
        .params(Buf::new().u16(n))
        .bytes()
}

macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod rivet {
            $(#[test] fn $scenario() { super::$scenario(super::Backend::Rivet) })*
        }
        mod reference {
            $(#[test] fn $scenario() { super::$scenario(super::Backend::Reference) })*
        }
    };
}

on_both_backends!(
    handshake_sizes_and_power,
    bad_input_leaves_the_server_serving,
    responses_are_fast,
    stop_and_signals_shut_down_cleanly,
    corrupt_state_file_is_refused,
);

fn start(backend: Backend) -> (TpmServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = TpmServer::start(backend, &dir.path().join("tpm.state"));
    (server, dir)
}

fn handshake_sizes_and_power(backend: Backend) {
    let (server, _dir) = start(backend);
    let mut cmd = RawClient::command_port(&server);
    cmd.send(&[0, 0, 0, 15, 0, 0, 0, 1]);
    assert_eq!(cmd.read_u32(), 1, "server protocol version");
    let flags = cmd.read_u32();
    assert_eq!(flags & 1, 1, "platform available flag: {flags:#x}");
    assert_eq!(cmd.read_u32(), 0);

    let mut platform = RawClient::platform_port(&server);
    platform.send(&25u32.to_be_bytes());
    assert_eq!(platform.read_u32(), 4096, "max command size");
    assert_eq!(platform.read_u32(), 4096, "max response size");
    assert_eq!(platform.read_u32(), 0);

    // Powered off (the server starts that way): commands fail cleanly.
    let r = cmd.execute(0, &startup());
    assert_eq!(
        rc(&r),
        TPM_RC_FAILURE,
        "command while powered off: {r:02x?}"
    );
    for code in [1, 11, 3, 4, 9, 10, 13, 14] {
        platform.signal(code);
    }
    let r = cmd.execute(0, &startup());
    assert_eq!(r, [0x80, 1, 0, 0, 0, 10, 0, 0, 0, 0]);
    let r = cmd.execute(0, &get_random(8));
    assert_eq!(r.len(), 20, "{r:02x?}");
    // A second POWER_ON is not a reset; RESET is.
    platform.signal(1);
    assert_eq!(rc(&cmd.execute(0, &get_random(8))), 0);
    platform.signal(17);
    assert_eq!(
        rc(&cmd.execute(0, &get_random(8))),
        0x100,
        "no Startup after RESET"
    );
    assert_eq!(rc(&cmd.execute(0, &startup())), 0);
    // POWER_OFF, then POWER_ON: _TPM_Init again.
    platform.signal(2);
    assert_eq!(rc(&cmd.execute(0, &get_random(8))), TPM_RC_FAILURE);
    platform.signal(1);
    assert_eq!(rc(&cmd.execute(0, &startup())), 0);
    // SESSION_END closes without an answer.
    platform.send(&20u32.to_be_bytes());
    assert!(platform.is_closed());
    cmd.send(&20u32.to_be_bytes());
    assert!(cmd.is_closed());
}

fn powered(server: &TpmServer) -> RawClient {
    let mut platform = RawClient::platform_port(server);
    platform.signal(1);
    let mut cmd = RawClient::command_port(server);
    assert_eq!(rc(&cmd.execute(0, &startup())), 0);
    cmd
}

fn still_serving(server: &TpmServer) {
    let mut cmd = RawClient::command_port(server);
    let r = cmd.execute(0, &get_random(4));
    assert_eq!(rc(&r), 0, "server no longer serving: {r:02x?}");
    assert_eq!(r.len(), 16);
}

fn bad_input_leaves_the_server_serving(backend: Backend) {
    let (mut server, _dir) = start(backend);
    let mut keep = powered(&server);

    // Disconnect in the middle of a command.
    let mut c = RawClient::command_port(&server);
    c.send(&[0, 0, 0, 8, 0, 0, 0, 0, 100]);
    c.send(&[0x80; 50]);
    drop(c);
    still_serving(&server);

    // Disconnect in the middle of the header.
    let mut c = RawClient::command_port(&server);
    c.send(&[0, 0, 0, 8, 0, 0]);
    drop(c);
    still_serving(&server);

    // Oversized command: an answer, then the connection is dropped.
    let mut c = RawClient::command_port(&server);
    c.send(&[0, 0, 0, 8, 0, 0, 0, 0x10, 1]);
    let r = c.read_response();
    assert_eq!(rc(&r), TPM_RC_COMMAND_SIZE, "{r:02x?}");
    assert!(c.is_closed());
    still_serving(&server);

    // Unknown codes on either port: the connection is dropped.
    let mut c = RawClient::command_port(&server);
    c.send(&0xdead_beefu32.to_be_bytes());
    assert!(c.is_closed());
    let mut c = RawClient::platform_port(&server);
    c.send(&99u32.to_be_bytes());
    assert!(c.is_closed());
    still_serving(&server);

    // Garbage TPM commands of every length up to 64 bytes, and a few long
    // ones: each gets a well-formed error response on the same connection.
    let mut seed = 0x1234_5678_u32;
    let mut garbage = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect()
    };
    for len in (0..=64).chain([100, 1000, 4096]) {
        let cmd = garbage(len);
        let r = keep.execute(0, &cmd);
        check_well_formed(&r).unwrap_or_else(|e| panic!("garbage {cmd:02x?}: {e}"));
        assert_ne!(rc(&r), 0, "garbage accepted: {cmd:02x?}");
    }
    // A valid header with a lying size field.
    let mut lying = get_random(4);
    lying[5] = 200;
    let r = keep.execute(0, &lying);
    check_well_formed(&r).unwrap();
    assert_ne!(rc(&r), 0);
    // Localities beyond 4.
    let r = keep.execute(9, &get_random(4));
    check_well_formed(&r).unwrap();
    assert_eq!(rc(&keep.execute(0, &get_random(4))), 0);
    assert!(server.is_running());
}

fn responses_are_fast(backend: Backend) {
    let (server, _dir) = start(backend);
    let mut cmd = powered(&server);
    // Without TCP_NODELAY and one write per response, each round trip
    // stalls on a delayed ACK (40 ms or more): 200 would take 8 s or more.
    let started = Instant::now();
    for _ in 0..200 {
        assert_eq!(rc(&cmd.execute(0, &get_random(8))), 0);
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "200 round trips took {took:?}"
    );
}

fn stop_and_signals_shut_down_cleanly(backend: Backend) {
    for how in [
        "STOP on the platform port",
        "STOP on the command port",
        "SIGTERM",
        "SIGINT",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("tpm.state");
        let mut server = TpmServer::start(backend, &state);
        let mut cmd = powered(&server);
        let nv = Command::new(cc::NV_DEFINE_SPACE)
            .handle(0x4000_0001)
            .pw(b"")
            .params(
                Buf::new().tpm2b(b"").tpm2b(
                    &Buf::new()
                        .u32(0x0150_0001)
                        .u16(0x000B)
                        .u32(0x0006_0006)
                        .tpm2b(&[])
                        .u16(8)
                        .0,
                ),
            )
            .bytes();
        assert_eq!(rc(&cmd.execute(0, &nv)), 0);
        let status = match how {
            "STOP on the platform port" => {
                RawClient::platform_port(&server).send(&21u32.to_be_bytes());
                server.wait_exit()
            }
            "STOP on the command port" => {
                RawClient::command_port(&server).send(&21u32.to_be_bytes());
                server.wait_exit()
            }
            "SIGTERM" => server.terminate(),
            _ => {
                server.signal("INT");
                server.wait_exit()
            }
        };
        assert!(
            status.0.success(),
            "{how}: exit {}, stderr {}",
            status.0,
            status.1
        );
        // The NV index survived into the state file.
        let server = TpmServer::start(backend, &state);
        let mut cmd = powered(&server);
        let read_public = Command::new(cc::NV_READ_PUBLIC).handle(0x0150_0001).bytes();
        assert_eq!(rc(&cmd.execute(0, &read_public)), 0, "{how}: NV index lost");
    }
}

fn corrupt_state_file_is_refused(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("tpm.state");
    let server = TpmServer::start(backend, &state);
    drop(powered(&server));
    let (status, _) = server.terminate();
    assert!(status.success());
    let good = std::fs::read(&state).unwrap();
    assert!(!good.is_empty());

    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    for (what, bytes) in [
        ("a flipped bit", flipped),
        ("a truncated file", good[..good.len() - 3].to_vec()),
        ("garbage", b"not a state file".to_vec()),
    ] {
        std::fs::write(&state, &bytes).unwrap();
        let out = std::process::Command::new(backend.binary())
            .args(["--port", "0", "--state"])
            .arg(&state)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{what}: server started on a corrupt state file"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&*state.to_string_lossy()),
            "{what}: error does not name the file: {stderr}"
        );
        assert_eq!(
            std::fs::read(&state).unwrap(),
            bytes,
            "{what}: the corrupt file was overwritten"
        );
    }
}
