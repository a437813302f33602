//! The swtpm control-channel protocol, server side, as QEMU's
//! `-tpmdev emulator` speaks it: a Unix stream socket carries control
//! commands (big-endian `u32` command code, then the command's request
//! struct; the reply starts with a `u32` result), and the TPM commands
//! themselves travel on a separate "data channel" socket whose descriptor
//! the client hands over with `SET_DATAFD` (SCM_RIGHTS).
//!
//! The structs and codes follow swtpm's `tpm_ioctl.h` (the `u.req` part of a
//! union goes in, the `u.resp` part comes back) and QEMU's
//! `backends/tpm/tpm_emulator.c`, which reads exactly the size of the
//! response struct it expects. Results are TPM 1.2 codes, as swtpm's are.
//!
//! QEMU's sequence: SET_DATAFD; a TPM2_ReadClock on the data channel before
//! any INIT (a TPM 2.0 answers with a TPM 2.0 tag, whatever the result);
//! GET_CAPABILITY; STOP + SET_BUFFERSIZE(0) to learn the buffer size; then
//! on every machine reset (the first boot included) STOP,
//! SET_BUFFERSIZE(n), INIT; SET_LOCALITY before commands from a new
//! locality; SHUTDOWN when QEMU exits. The server saves the state and stops
//! on SHUTDOWN, as swtpm does.
//!
//! Bad input (a truncated or unknown command, a second SET_DATAFD, a TPM
//! command before INIT, an oversized TPM command, a client that vanishes)
//! gets an error result and, where the stream cannot be trusted to line up
//! again, the connection is closed; other connections and the TPM go on.

use std::io::{self, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

use crate::mssim::{Device, Shared, StopReason, error_response};

/// Control command codes (`CMD_*` in swtpm's `tpm_ioctl.h`).
pub mod cmd {
    pub const GET_CAPABILITY: u32 = 0x01;
    pub const INIT: u32 = 0x02;
    pub const SHUTDOWN: u32 = 0x03;
    pub const GET_TPMESTABLISHED: u32 = 0x04;
    pub const SET_LOCALITY: u32 = 0x05;
    pub const HASH_START: u32 = 0x06;
    pub const HASH_DATA: u32 = 0x07;
    pub const HASH_END: u32 = 0x08;
    pub const CANCEL_TPM_CMD: u32 = 0x09;
    pub const STORE_VOLATILE: u32 = 0x0a;
    pub const RESET_TPMESTABLISHED: u32 = 0x0b;
    pub const GET_STATEBLOB: u32 = 0x0c;
    pub const SET_STATEBLOB: u32 = 0x0d;
    pub const STOP: u32 = 0x0e;
    pub const GET_CONFIG: u32 = 0x0f;
    pub const SET_DATAFD: u32 = 0x10;
    pub const SET_BUFFERSIZE: u32 = 0x11;
    pub const GET_INFO: u32 = 0x12;
}

/// Capability bits (`PTM_CAP_*`).
pub mod cap {
    pub const INIT: u64 = 1;
    pub const SHUTDOWN: u64 = 1 << 1;
    pub const GET_TPMESTABLISHED: u64 = 1 << 2;
    pub const SET_LOCALITY: u64 = 1 << 3;
    pub const RESET_TPMESTABLISHED: u64 = 1 << 7;
    pub const STOP: u64 = 1 << 10;
    pub const GET_CONFIG: u64 = 1 << 11;
    pub const SET_DATAFD: u64 = 1 << 12;
    pub const SET_BUFFERSIZE: u64 = 1 << 13;
}

/// Results (TPM 1.2 return codes, as swtpm uses them on this channel).
pub mod res {
    pub const SUCCESS: u32 = 0;
    pub const BAD_PARAMETER: u32 = 3;
    pub const FAIL: u32 = 9;
    pub const BAD_ORDINAL: u32 = 10;
    pub const IOERROR: u32 = 31;
    pub const BAD_LOCALITY: u32 = 61;
}

/// What this server implements: every command QEMU needs for a TPM 2.0,
/// plus GET_CONFIG. Not (yet): hashing (H-CRTM), cancel, STORE_VOLATILE,
/// state blobs (QEMU blocks migration without them), GET_INFO.
pub const CAPABILITIES: u64 = cap::INIT
    | cap::SHUTDOWN
    | cap::GET_TPMESTABLISHED
    | cap::SET_LOCALITY
    | cap::RESET_TPMESTABLISHED
    | cap::STOP
    | cap::GET_CONFIG
    | cap::SET_DATAFD
    | cap::SET_BUFFERSIZE;

/// Smallest and largest data-channel buffer (largest TPM command or
/// response) a client may ask for with SET_BUFFERSIZE.
pub const MIN_BUFFER: u32 = 1024;
pub const MAX_BUFFER: u32 = crate::mssim::MAX_BUFFER;

/// How long the rest of a command may take once its first byte arrived.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

const TPM_HEADER_LEN: usize = 10;
const TPM_RC_FAILURE: u32 = 0x101;
const TPM_RC_COMMAND_SIZE: u32 = 0x142;

/// Accepts control connections on `listener`, one thread each.
pub(crate) fn spawn_acceptor<D: Device>(listener: UnixListener, shared: Arc<Shared<D>>) {
    thread::spawn(move || {
        for stream in listener.incoming() {
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("rivet-tpm-server: swtpm control accept: {e}");
                    continue;
                }
            };
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                let mut conn = Control {
                    stream,
                    shared: &shared,
                    data_channel: false,
                };
                if let Err(e) = conn.serve()
                    && e.kind() != io::ErrorKind::UnexpectedEof
                {
                    eprintln!("rivet-tpm-server: swtpm control client: {e}");
                }
            });
        }
    });
}

fn protocol_error(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// One control connection.
struct Control<'a, D> {
    stream: UnixStream,
    shared: &'a Arc<Shared<D>>,
    /// A data channel was set on this connection (SET_DATAFD is once only).
    data_channel: bool,
}

impl<D: Device> Control<'_, D> {
    fn serve(&mut self) -> io::Result<()> {
        loop {
            self.stream.set_read_timeout(None)?;
            let Some((code, fd)) = self.next_code()? else {
                return Ok(());
            };
            self.stream.set_read_timeout(Some(COMMAND_TIMEOUT))?;
            if !self.command(code, fd)? {
                return Ok(());
            }
        }
    }

    /// Reads the next command code with any descriptor sent along with it;
    /// `None` on a clean end of stream.
    fn next_code(&mut self) -> io::Result<Option<(u32, Option<OwnedFd>)>> {
        let mut code = [0u8; 4];
        let mut got = 0;
        let mut fd = None;
        while got < 4 {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut ancillary = RecvAncillaryBuffer::new(&mut space);
            let received = rustix::net::recvmsg(
                &self.stream,
                &mut [IoSliceMut::new(&mut code[got..])],
                &mut ancillary,
                RecvFlags::CMSG_CLOEXEC,
            );
            let n = match received {
                Ok(r) => r.bytes,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            for message in ancillary.drain() {
                if let RecvAncillaryMessage::ScmRights(fds) = message {
                    // Only the first descriptor counts; the rest close here.
                    for received_fd in fds {
                        fd.get_or_insert(received_fd);
                    }
                }
            }
            if n == 0 {
                return if got == 0 {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
            got += n;
            // The rest of the code may come later, but not much later.
            self.stream.set_read_timeout(Some(COMMAND_TIMEOUT))?;
        }
        Ok(Some((u32::from_be_bytes(code), fd)))
    }

    fn read_request<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut b = [0u8; N];
        if let Err(e) = self.stream.read_exact(&mut b) {
            if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut {
                // As swtpm does with a short request: BAD_PARAMETER.
                let _ = self.reply(&[res::BAD_PARAMETER]);
                return Err(protocol_error(
                    "truncated control command (timed out)".into(),
                ));
            }
            return Err(e);
        }
        Ok(b)
    }

    fn reply(&mut self, words: &[u32]) -> io::Result<()> {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        self.stream.write_all(&bytes)
    }

    /// Runs one command. `Ok(false)`: close this connection.
    fn command(&mut self, code: u32, fd: Option<OwnedFd>) -> io::Result<bool> {
        if fd.is_some() && code != cmd::SET_DATAFD {
            // A descriptor with any other command is dropped (closed).
            eprintln!("rivet-tpm-server: swtpm: descriptor sent with command {code:#x} ignored");
        }
        match code {
            cmd::GET_CAPABILITY => {
                // swtpm answers the 64-bit capability word as it is; its
                // upper half is the (zero) result.
                self.stream.write_all(&CAPABILITIES.to_be_bytes())?;
            }
            cmd::INIT => {
                // init_flags: DELETE_VOLATILE only matters for a TPM that
                // keeps volatile state in a file; this one does not.
                let _flags = u32::from_be_bytes(self.read_request::<4>()?);
                let mut tpm = self.shared.lock();
                tpm.device.init();
                tpm.powered = true;
                drop(tpm);
                self.reply(&[res::SUCCESS])?;
            }
            cmd::STOP => {
                self.shared.lock().powered = false;
                self.reply(&[res::SUCCESS])?;
            }
            cmd::SHUTDOWN => {
                let result = {
                    let mut tpm = self.shared.lock();
                    tpm.powered = false;
                    tpm.device.shutdown()
                };
                match result {
                    Ok(()) => self.reply(&[res::SUCCESS])?,
                    Err(e) => {
                        eprintln!("rivet-tpm-server: swtpm SHUTDOWN: saving state: {e}");
                        self.reply(&[res::FAIL])?;
                    }
                }
                let _ = self.shared.stop.send(StopReason::ShutdownCommand);
                return Ok(false);
            }
            cmd::GET_TPMESTABLISHED => {
                if !self.shared.lock().powered {
                    self.reply(&[res::BAD_ORDINAL])?;
                } else {
                    // No H-CRTM sequence (_TPM_Hash_Start) is supported, so
                    // nothing ever sets the establishment bit. ptm_est is
                    // the result, the bit and 3 bytes of padding.
                    self.stream.write_all(&[0, 0, 0, 0, 0, 0, 0, 0])?;
                }
            }
            cmd::RESET_TPMESTABLISHED => {
                // ptm_reset_est request: u8 locality, padded to 4 bytes.
                let req = self.read_request::<4>()?;
                let result = if !self.shared.lock().powered {
                    res::BAD_ORDINAL
                } else if req[0] > 4 {
                    res::BAD_LOCALITY
                } else {
                    res::SUCCESS
                };
                self.reply(&[result])?;
            }
            cmd::SET_LOCALITY => {
                // ptm_loc request: u8 locality, padded to 4 bytes.
                let req = self.read_request::<4>()?;
                let result = if req[0] > 4 {
                    res::BAD_LOCALITY
                } else {
                    self.shared.lock().locality = req[0];
                    res::SUCCESS
                };
                self.reply(&[result])?;
            }
            cmd::GET_CONFIG => self.reply(&[res::SUCCESS, 0])?,
            cmd::SET_BUFFERSIZE => {
                let wanted = u32::from_be_bytes(self.read_request::<4>()?);
                let mut tpm = self.shared.lock();
                if wanted != 0 && tpm.powered {
                    // Only a stopped TPM changes its buffer size.
                    drop(tpm);
                    self.reply(&[res::BAD_ORDINAL])?;
                } else {
                    if wanted != 0 {
                        tpm.buffer_size = wanted.clamp(MIN_BUFFER, MAX_BUFFER);
                    }
                    let size = tpm.buffer_size;
                    drop(tpm);
                    self.reply(&[res::SUCCESS, size, MIN_BUFFER, MAX_BUFFER])?;
                }
            }
            cmd::SET_DATAFD => {
                let result = match fd {
                    _ if self.data_channel => res::IOERROR,
                    None => res::BAD_PARAMETER,
                    Some(fd) => match data_socket(fd) {
                        Ok(data) => {
                            self.data_channel = true;
                            let shared = Arc::clone(self.shared);
                            thread::spawn(move || serve_data_channel(data, &shared));
                            res::SUCCESS
                        }
                        Err(e) => {
                            eprintln!("rivet-tpm-server: swtpm SET_DATAFD: {e}");
                            res::BAD_PARAMETER
                        }
                    },
                };
                self.reply(&[result])?;
            }
            // No payload: refused, the stream still lines up.
            cmd::HASH_START | cmd::HASH_END | cmd::CANCEL_TPM_CMD | cmd::STORE_VOLATILE => {
                self.reply(&[res::BAD_ORDINAL])?
            }
            // A payload whose length this server does not track: refused,
            // and the connection closed, since the rest cannot be parsed.
            cmd::HASH_DATA | cmd::GET_STATEBLOB | cmd::SET_STATEBLOB | cmd::GET_INFO => {
                self.reply(&[res::BAD_ORDINAL])?;
                return Ok(false);
            }
            other => {
                self.reply(&[res::BAD_ORDINAL])?;
                return Err(protocol_error(format!(
                    "unknown control command {other:#x}"
                )));
            }
        }
        Ok(true)
    }
}

/// The descriptor SET_DATAFD brought, if it is a stream socket.
fn data_socket(fd: OwnedFd) -> io::Result<UnixStream> {
    let kind = rustix::net::sockopt::socket_type(&fd)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("not a socket: {e}")))?;
    if kind != rustix::net::SocketType::STREAM {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a stream socket",
        ));
    }
    Ok(UnixStream::from(fd))
}

/// Serves raw TPM commands on a data channel until the peer closes it or
/// sends something that cannot be answered in step.
fn serve_data_channel<D: Device>(mut data: UnixStream, shared: &Shared<D>) {
    if let Err(e) = serve_data(&mut data, shared)
        && e.kind() != io::ErrorKind::UnexpectedEof
    {
        eprintln!("rivet-tpm-server: swtpm data channel: {e}");
    }
}

fn serve_data<D: Device>(data: &mut UnixStream, shared: &Shared<D>) -> io::Result<()> {
    loop {
        data.set_read_timeout(None)?;
        let mut header = [0u8; TPM_HEADER_LEN];
        // A clean end of stream between commands ends the channel quietly.
        match data.read(&mut header[..1])? {
            0 => return Ok(()),
            _ => data.set_read_timeout(Some(COMMAND_TIMEOUT))?,
        }
        read_or_timeout(data, &mut header[1..])?;
        let size = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
        let limit = shared.lock().buffer_size;
        if (size as usize) < TPM_HEADER_LEN || size > limit {
            // The stream cannot be trusted to line up again: answer, close.
            data.write_all(&error_response(TPM_RC_COMMAND_SIZE))?;
            return Err(protocol_error(format!(
                "TPM command of {size} bytes refused (buffer {limit})"
            )));
        }
        let mut command = vec![0u8; size as usize];
        command[..TPM_HEADER_LEN].copy_from_slice(&header);
        read_or_timeout(data, &mut command[TPM_HEADER_LEN..])?;
        let response = {
            let mut tpm = shared.lock();
            if tpm.powered {
                let locality = tpm.locality;
                tpm.device.execute(locality, &command)
            } else {
                // Before INIT or after STOP. QEMU probes the TPM version
                // this way: a TPM 2.0 tag in the answer is all it needs.
                error_response(TPM_RC_FAILURE)
            }
        };
        data.write_all(&response)?;
    }
}

fn read_or_timeout(data: &mut UnixStream, buf: &mut [u8]) -> io::Result<()> {
    data.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut {
            // Tell a slow client why, if it is still listening.
            let _ = data.write_all(&error_response(TPM_RC_COMMAND_SIZE));
            protocol_error("truncated TPM command (timed out)".into())
        } else {
            e
        }
    })
}
