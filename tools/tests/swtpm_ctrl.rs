//! `rivet-tpm-server --ctrl`: the swtpm control channel as QEMU drives it
//! (data channel by SCM_RIGHTS, the version probe before INIT, the reset
//! sequence), state kept across server restarts, and bad input that must
//! get an error without taking the server down.

use std::io::{BufRead, BufReader, IoSlice, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rivet_tpm::client;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

const SERVER: &str = env!("CARGO_BIN_EXE_rivet-tpm-server");

const GET_CAPABILITY: u32 = 0x01;
const INIT: u32 = 0x02;
const SHUTDOWN: u32 = 0x03;
const GET_TPMESTABLISHED: u32 = 0x04;
const SET_LOCALITY: u32 = 0x05;
const HASH_DATA: u32 = 0x07;
const RESET_TPMESTABLISHED: u32 = 0x0b;
const STOP: u32 = 0x0e;
const GET_CONFIG: u32 = 0x0f;
const SET_DATAFD: u32 = 0x10;
const SET_BUFFERSIZE: u32 = 0x11;

const BAD_PARAMETER: u32 = 3;
const BAD_ORDINAL: u32 = 10;
const IOERROR: u32 = 31;
const BAD_LOCALITY: u32 = 61;

/// What QEMU 7.2 requires of a TPM 2.0 emulator (tpm_emulator_check_caps).
const QEMU_TPM2_CAPS: u64 = 1 | 2 | 4 | 8 | (1 << 7) | (1 << 12) | (1 << 10) | (1 << 13);

struct Server {
    child: Child,
    ctrl: PathBuf,
}

impl Server {
    fn start(dir: &Path) -> Self {
        let ctrl = dir.join("ctrl.sock");
        let mut child = Command::new(SERVER)
            .arg("--ctrl")
            .arg(&ctrl)
            .arg("--state")
            .arg(dir.join("tpm.state"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("swtpm control channel on"), "{line:?}");
        Self { child, ctrl }
    }

    fn connect(&self) -> Ctrl {
        let stream = UnixStream::connect(&self.ctrl).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Ctrl { stream }
    }

    /// Waits (bounded) for the server to exit by itself.
    fn wait_exit(mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Ctrl {
    stream: UnixStream,
}

impl Ctrl {
    /// Sends a command code and its request bytes, reads `reply_len` bytes.
    fn call(&mut self, code: u32, request: &[u8], reply_len: usize) -> Vec<u8> {
        let mut msg = code.to_be_bytes().to_vec();
        msg.extend_from_slice(request);
        self.stream.write_all(&msg).unwrap();
        let mut reply = vec![0; reply_len];
        self.stream.read_exact(&mut reply).unwrap();
        reply
    }

    /// A command whose reply is just the result.
    fn result(&mut self, code: u32, request: &[u8]) -> u32 {
        word(&self.call(code, request, 4), 0)
    }

    /// SET_DATAFD with the descriptor of `fd` attached to the command code.
    fn set_datafd(&mut self, fd: Option<std::os::fd::BorrowedFd<'_>>) -> u32 {
        let code = SET_DATAFD.to_be_bytes();
        let fds;
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut ancillary = SendAncillaryBuffer::new(&mut space);
        if let Some(fd) = fd {
            fds = [fd];
            assert!(ancillary.push(SendAncillaryMessage::ScmRights(&fds)));
        }
        rustix::net::sendmsg(
            &self.stream,
            &[IoSlice::new(&code)],
            &mut ancillary,
            SendFlags::empty(),
        )
        .unwrap();
        let mut reply = [0; 4];
        self.stream.read_exact(&mut reply).unwrap();
        u32::from_be_bytes(reply)
    }

    /// A fresh data channel: our end of a socket pair whose other end the
    /// server got.
    fn data_channel(&mut self) -> UnixStream {
        let (ours, theirs) = UnixStream::pair().unwrap();
        assert_eq!(self.set_datafd(Some(theirs.as_fd())), 0);
        ours.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        ours
    }

    /// QEMU's start-up (and machine reset) sequence.
    fn qemu_startup(&mut self, buffer: u32) {
        assert_eq!(self.result(STOP, &[]), 0);
        let r = self.call(SET_BUFFERSIZE, &buffer.to_be_bytes(), 16);
        assert_eq!(word(&r, 0), 0);
        assert_eq!(word(&r, 4), buffer);
        assert_eq!(self.result(INIT, &0u32.to_be_bytes()), 0);
    }
}

fn word(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// Sends a raw TPM command on a data channel and reads the response.
fn transact(data: &mut UnixStream, command: &[u8]) -> Vec<u8> {
    data.write_all(command).unwrap();
    let mut header = [0; 10];
    data.read_exact(&mut header).unwrap();
    let size = word(&header, 2) as usize;
    assert!(size >= 10);
    let mut response = header.to_vec();
    response.resize(size, 0);
    data.read_exact(&mut response[10..]).unwrap();
    response
}

fn rc(response: &[u8]) -> u32 {
    word(response, 6)
}

const STARTUP_CLEAR: [u8; 12] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0];
/// TPM2_ReadClock, as QEMU's version probe sends it.
const READ_CLOCK: [u8; 10] = [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x81];
const TPM_RC_INITIALIZE: u32 = 0x100;
const NV_INDEX: u32 = 0x0150_0016;

#[test]
fn qemu_sequence_reset_and_state_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut ctrl = server.connect();
    let mut data = ctrl.data_channel();

    // QEMU's version probe, before INIT: an error, with a TPM 2.0 tag.
    let probe = transact(&mut data, &READ_CLOCK);
    assert_eq!(&probe[..2], &[0x80, 0x01]);
    assert_ne!(rc(&probe), 0);

    let caps = ctrl.call(GET_CAPABILITY, &[], 8);
    let caps = u64::from_be_bytes(caps.try_into().unwrap());
    assert_eq!(caps & QEMU_TPM2_CAPS, QEMU_TPM2_CAPS, "caps {caps:#x}");
    // GET_BUFFERSIZE the QEMU way: STOP, then SET_BUFFERSIZE(0).
    assert_eq!(ctrl.result(STOP, &[]), 0);
    let r = ctrl.call(SET_BUFFERSIZE, &0u32.to_be_bytes(), 16);
    assert_eq!((word(&r, 0), word(&r, 4)), (0, 4096));
    assert!(word(&r, 8) <= 3968 && word(&r, 12) >= 4096);
    let r = ctrl.call(GET_CONFIG, &[], 8);
    assert_eq!(word(&r, 0), 0);

    // First boot: 3968 is tpm-crb's buffer.
    ctrl.qemu_startup(3968);
    assert_eq!(ctrl.result(SET_LOCALITY, &[0, 0, 0, 0]), 0);
    let est = ctrl.call(GET_TPMESTABLISHED, &[], 8);
    assert_eq!(word(&est, 0), 0);
    assert_eq!(ctrl.result(RESET_TPMESTABLISHED, &[3, 0, 0, 0]), 0);
    assert_eq!(rc(&transact(&mut data, &STARTUP_CLEAR)), 0);
    // Changing the buffer size of a running TPM is refused.
    let r = ctrl.call(SET_BUFFERSIZE, &2048u32.to_be_bytes(), 4);
    assert_eq!(word(&r, 0), BAD_ORDINAL);
    // Something persistent: an NV index with data.
    let define = client::nv_define_space(client::OWNER, NV_INDEX, 0x0002_0002, 8);
    assert_eq!(rc(&transact(&mut data, &define)), 0);
    let write = client::nv_write(client::OWNER, NV_INDEX, 0, b"rivet-nv");
    assert_eq!(rc(&transact(&mut data, &write)), 0);

    // A machine reset: STOP, SET_BUFFERSIZE, INIT; Startup is due again.
    ctrl.qemu_startup(3968);
    let read = client::nv_read(client::OWNER, NV_INDEX, 8, 0);
    assert_eq!(rc(&transact(&mut data, &read)), TPM_RC_INITIALIZE);
    assert_eq!(rc(&transact(&mut data, &STARTUP_CLEAR)), 0);
    let r = transact(&mut data, &read);
    assert_eq!(client::parse_nv_read(&r).as_deref(), Some(&b"rivet-nv"[..]));

    // QEMU exits: SHUTDOWN; the server saves and exits.
    assert_eq!(ctrl.result(SHUTDOWN, &[]), 0);
    assert!(server.wait_exit().success());

    // A new server on the same state file has the index.
    let server = Server::start(dir.path());
    let mut ctrl = server.connect();
    let mut data = ctrl.data_channel();
    ctrl.qemu_startup(3968);
    assert_eq!(rc(&transact(&mut data, &STARTUP_CLEAR)), 0);
    let r = transact(&mut data, &read);
    assert_eq!(client::parse_nv_read(&r).as_deref(), Some(&b"rivet-nv"[..]));
}

#[test]
fn bad_control_input_gets_errors_and_others_are_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());

    // SET_DATAFD without a descriptor, with a file, then twice.
    let mut ctrl = server.connect();
    assert_eq!(ctrl.set_datafd(None), BAD_PARAMETER);
    let file = std::fs::File::open(SERVER).unwrap();
    assert_eq!(ctrl.set_datafd(Some(file.as_fd())), BAD_PARAMETER);
    let mut data = ctrl.data_channel();
    let (_a, b) = UnixStream::pair().unwrap();
    assert_eq!(ctrl.set_datafd(Some(b.as_fd())), IOERROR);

    // Commands out of order: before INIT.
    assert_eq!(
        ctrl.call(GET_TPMESTABLISHED, &[], 4),
        BAD_ORDINAL.to_be_bytes()
    );
    let before_init = transact(&mut data, &STARTUP_CLEAR);
    assert_eq!(rc(&before_init), 0x101);
    // A locality that does not exist.
    assert_eq!(ctrl.result(SET_LOCALITY, &[5, 0, 0, 0]), BAD_LOCALITY);
    ctrl.qemu_startup(4096);
    assert_eq!(rc(&transact(&mut data, &STARTUP_CLEAR)), 0);

    // An oversized TPM command: an error, then that data channel closes.
    let mut huge = vec![0x80, 0x01];
    huge.extend_from_slice(&8192u32.to_be_bytes());
    huge.extend_from_slice(&0x17Bu32.to_be_bytes());
    let r = transact(&mut data, &huge);
    assert_eq!(rc(&r), 0x142);
    let mut rest = Vec::new();
    data.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    // A command shorter than its header says: an error as well.
    let mut ctrl2 = server.connect();
    let mut data2 = ctrl2.data_channel();
    let r = transact(&mut data2, &[0x80, 0x01, 0, 0, 0, 4, 0, 0, 1, 0x7B]);
    assert_eq!(rc(&r), 0x142);

    // A client that disconnects in the middle of a TPM command, one that
    // sends half a control command, and one with a payload the server
    // does not parse.
    {
        let mut ctrl3 = server.connect();
        let mut data3 = ctrl3.data_channel();
        data3.write_all(&STARTUP_CLEAR[..7]).unwrap();
    }
    {
        let mut ctrl4 = server.connect();
        ctrl4.stream.write_all(&[0, 0]).unwrap();
    }
    {
        let mut ctrl5 = server.connect();
        let r = ctrl5.call(HASH_DATA, &[0, 0, 0, 4, 1, 2, 3, 4], 4);
        assert_eq!(word(&r, 0), BAD_ORDINAL);
        // Closed with the payload unread: an end of stream or a reset.
        let mut rest = Vec::new();
        match ctrl5.stream.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "more after the error: {rest:?}"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }
    }
    {
        let mut ctrl6 = server.connect();
        let r = ctrl6.call(0x7777, &[], 4);
        assert_eq!(word(&r, 0), BAD_ORDINAL);
    }

    // Everyone else is still served: a new client runs a real command.
    let mut ctrl7 = server.connect();
    let mut data7 = ctrl7.data_channel();
    let get_random = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7B, 0, 16];
    let r = transact(&mut data7, &get_random);
    assert_eq!(rc(&r), 0);
    assert_eq!(r.len(), 10 + 2 + 16);
    assert_eq!(ctrl7.result(SHUTDOWN, &[]), 0);
    assert!(server.wait_exit().success());
}

#[test]
fn a_stalled_half_command_times_out_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut ctrl = server.connect();
    let mut data = ctrl.data_channel();
    ctrl.qemu_startup(4096);
    // The header promises 20 bytes; 12 come, then nothing.
    let mut half = vec![0x80, 0x01, 0, 0, 0, 20, 0, 0, 0x01, 0x7B];
    half.extend_from_slice(&[0, 8]);
    data.write_all(&half).unwrap();
    let started = Instant::now();
    let mut header = [0; 10];
    data.read_exact(&mut header).unwrap();
    assert_eq!(word(&header, 6), 0x142);
    assert!(started.elapsed() < Duration::from_secs(15));
    // The control connection is unaffected: a new data channel works.
    let mut data2 = ctrl2_data(&server);
    assert_eq!(rc(&transact(&mut data2, &STARTUP_CLEAR)), 0);
    // And a half control command on a connection that stays open.
    let mut stalled = server.connect();
    stalled.stream.write_all(&INIT.to_be_bytes()).unwrap();
    stalled.stream.write_all(&[0, 0]).unwrap();
    let mut rest = Vec::new();
    let _ = stalled.stream.read_to_end(&mut rest);
    assert_eq!(
        rest,
        BAD_PARAMETER.to_be_bytes(),
        "then the connection closes"
    );
    assert_eq!(ctrl.result(SET_LOCALITY, &[0, 0, 0, 0]), 0);
}

/// A data channel on a second control connection.
fn ctrl2_data(server: &Server) -> UnixStream {
    let mut ctrl = server.connect();
    let data = ctrl.data_channel();
    // The control connection may close; the data channel lives on.
    drop(ctrl);
    data
}
