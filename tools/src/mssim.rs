//! The MS-simulator ("mssim") TCP protocol, server side: a command port that
//! carries TPM commands and a platform port (command port + 1) that carries
//! power, NV and other platform signals. Big-endian throughout.
//!
//! The TPM behind it is any [`Device`]; the protocol code knows nothing about
//! the engine, so the same server can front the reference TPM in tests. The
//! same [`Server`] can also serve the swtpm control channel on a Unix socket
//! ([`crate::swtpm`]); both front ends then drive one TPM.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;

/// Largest command or response the server accepts or announces.
pub const MAX_BUFFER: u32 = 4096;

/// Signal codes (the reference simulator's `TpmTcpProtocol.h` numbering).
pub mod code {
    pub const POWER_ON: u32 = 1;
    pub const POWER_OFF: u32 = 2;
    pub const PHYS_PRES_ON: u32 = 3;
    pub const PHYS_PRES_OFF: u32 = 4;
    pub const HASH_START: u32 = 5;
    pub const HASH_DATA: u32 = 6;
    pub const HASH_END: u32 = 7;
    pub const SEND_COMMAND: u32 = 8;
    pub const CANCEL_ON: u32 = 9;
    pub const CANCEL_OFF: u32 = 10;
    pub const NV_ON: u32 = 11;
    pub const NV_OFF: u32 = 12;
    pub const KEY_CACHE_ON: u32 = 13;
    pub const KEY_CACHE_OFF: u32 = 14;
    pub const REMOTE_HANDSHAKE: u32 = 15;
    pub const SET_ALTERNATIVE_RESULT: u32 = 16;
    pub const RESET: u32 = 17;
    pub const RESTART: u32 = 18;
    pub const SESSION_END: u32 = 20;
    pub const STOP: u32 = 21;
    pub const GET_COMMAND_RESPONSE_SIZES: u32 = 25;
    pub const ACT_GET_SIGNALED: u32 = 26;
    pub const TEST_FAILURE_MODE: u32 = 30;
}

/// Protocol version the server speaks in REMOTE_HANDSHAKE.
const SERVER_VERSION: u32 = 1;
/// REMOTE_HANDSHAKE flags: platform signals available, raw mode, physical
/// presence supported (as the reference simulator announces).
const HANDSHAKE_FLAGS: u32 = 0x01 | 0x04 | 0x08;
/// Largest HASH_DATA chunk accepted (the data is only acknowledged).
const MAX_HASH_DATA: u32 = 1 << 20;

const TPM_ST_NO_SESSIONS: u16 = 0x8001;
const TPM_RC_FAILURE: u32 = 0x101;
const TPM_RC_COMMAND_SIZE: u32 = 0x142;

/// The TPM a server fronts.
pub trait Device: Send + 'static {
    /// `_TPM_Init`: the platform powered the TPM on or reset it.
    fn init(&mut self);
    /// Runs one command; always returns a well-formed response.
    fn execute(&mut self, locality: u8, command: &[u8]) -> Vec<u8>;
    /// Called once before a clean exit: make the latest state durable.
    fn shutdown(&mut self) -> io::Result<()>;
}

/// An error-only TPM response.
pub fn error_response(rc: u32) -> Vec<u8> {
    let mut r = Vec::with_capacity(10);
    r.extend_from_slice(&TPM_ST_NO_SESSIONS.to_be_bytes());
    r.extend_from_slice(&10u32.to_be_bytes());
    r.extend_from_slice(&rc.to_be_bytes());
    r
}

/// The TPM and the platform state around it that every front end shares.
pub(crate) struct Tpm<D> {
    pub(crate) device: D,
    /// `_TPM_Init` has run and the TPM accepts commands (mssim POWER_ON,
    /// swtpm INIT); cleared by POWER_OFF and swtpm STOP.
    pub(crate) powered: bool,
    /// Locality of the commands on swtpm data channels (swtpm SET_LOCALITY).
    pub(crate) locality: u8,
    /// Largest command on swtpm data channels (swtpm SET_BUFFERSIZE).
    pub(crate) buffer_size: u32,
}

pub(crate) struct Shared<D> {
    tpm: Mutex<Tpm<D>>,
    pub(crate) stop: mpsc::Sender<StopReason>,
}

impl<D: Device> Shared<D> {
    /// A panic in one connection thread must not wedge the others: the
    /// device itself never panics on input, so the data is still usable.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Tpm<D>> {
        self.tpm.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why [`Server::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A client sent STOP.
    StopCommand,
    /// A swtpm control client sent SHUTDOWN (as QEMU does when it exits).
    ShutdownCommand,
    /// SIGINT or SIGTERM.
    Signal(i32),
}

/// A bound server: its listeners are open, nothing is served until [`run`].
///
/// [`run`]: Server::run
pub struct Server {
    /// The mssim command and platform ports, if the server speaks mssim.
    mssim: Option<(TcpListener, TcpListener)>,
    /// The swtpm control channel, if the server speaks it.
    ctrl: Option<UnixListener>,
}

impl Server {
    /// Binds `host:port` and `host:port+1`. With port 0 the server picks a
    /// free pair of adjacent ports itself.
    pub fn bind(host: &str, port: u16) -> io::Result<Self> {
        if port != 0 {
            let platform_port = port.checked_add(1).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "port 65535 leaves no platform port",
                )
            })?;
            let command = TcpListener::bind((host, port))?;
            let platform = TcpListener::bind((host, platform_port))?;
            return Ok(Self::mssim(command, platform));
        }
        for _ in 0..64 {
            let command = TcpListener::bind((host, 0))?;
            let Some(next) = command.local_addr()?.port().checked_add(1) else {
                continue;
            };
            if let Ok(platform) = TcpListener::bind((host, next)) {
                return Ok(Self::mssim(command, platform));
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "no free pair of adjacent ports",
        ))
    }

    fn mssim(command: TcpListener, platform: TcpListener) -> Self {
        Self {
            mssim: Some((command, platform)),
            ctrl: None,
        }
    }

    /// A server that speaks only the swtpm control channel on `ctrl`.
    pub fn swtpm_only(ctrl: UnixListener) -> Self {
        Self {
            mssim: None,
            ctrl: Some(ctrl),
        }
    }

    /// Also serve the swtpm control channel on `ctrl`.
    pub fn with_swtpm_ctrl(mut self, ctrl: UnixListener) -> Self {
        self.ctrl = Some(ctrl);
        self
    }

    fn no_mssim() -> io::Error {
        io::Error::new(io::ErrorKind::NotConnected, "no mssim ports bound")
    }

    pub fn command_addr(&self) -> io::Result<SocketAddr> {
        self.mssim
            .as_ref()
            .ok_or_else(Self::no_mssim)?
            .0
            .local_addr()
    }

    pub fn platform_addr(&self) -> io::Result<SocketAddr> {
        self.mssim
            .as_ref()
            .ok_or_else(Self::no_mssim)?
            .1
            .local_addr()
    }

    /// Serves until a client sends STOP (mssim) or SHUTDOWN (swtpm) or a
    /// SIGINT/SIGTERM arrives, then
    /// calls [`Device::shutdown`] (with the TPM locked, so no command is half
    /// done) and returns.
    pub fn run<D: Device>(self, device: D) -> io::Result<StopReason> {
        let (stop, stopped) = mpsc::channel();
        let shared = Arc::new(Shared {
            tpm: Mutex::new(Tpm {
                device,
                powered: false,
                locality: 0,
                buffer_size: MAX_BUFFER,
            }),
            stop,
        });

        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])?;
        let signal_handle = signals.handle();
        {
            let stop = shared.stop.clone();
            thread::spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    let _ = stop.send(StopReason::Signal(sig));
                }
            });
        }
        if let Some((command, platform)) = self.mssim {
            spawn_acceptor(command, Arc::clone(&shared), serve_command_port::<D>);
            spawn_acceptor(platform, Arc::clone(&shared), serve_platform_port::<D>);
        }
        if let Some(ctrl) = self.ctrl {
            crate::swtpm::spawn_acceptor(ctrl, Arc::clone(&shared));
        }

        let reason = stopped.recv().expect("the signal thread holds a sender");
        signal_handle.close();
        // Keep the lock: connection threads must not run another command
        // after the final state is written; the caller exits next.
        let mut tpm = shared.lock();
        tpm.device.shutdown()?;
        std::mem::forget(tpm);
        Ok(reason)
    }
}

fn spawn_acceptor<D: Device>(
    listener: TcpListener,
    shared: Arc<Shared<D>>,
    serve: fn(&mut TcpStream, &Shared<D>) -> io::Result<()>,
) {
    thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("rivet-tpm-server: accept: {e}");
                    continue;
                }
            };
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                let peer = stream.peer_addr().ok();
                // Responses go out in one write each; without NODELAY the
                // client's delayed ACK stalls every round trip.
                let result = stream
                    .set_nodelay(true)
                    .and_then(|()| serve(&mut stream, &shared));
                if let Err(e) = result
                    && e.kind() != io::ErrorKind::UnexpectedEof
                {
                    eprintln!("rivet-tpm-server: client {peer:?}: {e}");
                }
            });
        }
    });
}

fn read_u32(stream: &mut TcpStream) -> io::Result<u32> {
    let mut b = [0; 4];
    stream.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

/// Reads the next signal code; `None` on a clean end of stream.
fn next_code(stream: &mut TcpStream) -> io::Result<Option<u32>> {
    let mut b = [0; 4];
    let mut got = 0;
    while got < 4 {
        match stream.read(&mut b[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(u32::from_be_bytes(b)))
}

fn write_words(stream: &mut TcpStream, words: &[u32]) -> io::Result<()> {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    stream.write_all(&bytes)
}

fn protocol_error(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn serve_command_port<D: Device>(stream: &mut TcpStream, shared: &Shared<D>) -> io::Result<()> {
    while let Some(code) = next_code(stream)? {
        match code {
            code::SEND_COMMAND => {
                let mut locality = [0];
                stream.read_exact(&mut locality)?;
                let len = read_u32(stream)?;
                if len > MAX_BUFFER {
                    // The rest of the stream cannot be trusted to line up
                    // again: answer, then drop this client.
                    send_response(stream, &error_response(TPM_RC_COMMAND_SIZE))?;
                    return Err(protocol_error(format!("command of {len} bytes refused")));
                }
                let mut command = vec![0; len as usize];
                stream.read_exact(&mut command)?;
                let response = {
                    let mut tpm = shared.lock();
                    if tpm.powered {
                        tpm.device.execute(locality[0], &command)
                    } else {
                        error_response(TPM_RC_FAILURE)
                    }
                };
                send_response(stream, &response)?;
            }
            code::REMOTE_HANDSHAKE => {
                let client_version = read_u32(stream)?;
                if client_version == 0 {
                    return Err(protocol_error("handshake with client version 0".into()));
                }
                write_words(stream, &[SERVER_VERSION, HANDSHAKE_FLAGS, 0])?;
            }
            // _TPM_Hash_Start/Data/End have no engine entry point yet: the
            // sequence is acknowledged (as clients expect) and dropped.
            code::HASH_START | code::HASH_END => {
                eprintln!("rivet-tpm-server: _TPM_Hash_Start/End not supported, ignored");
                write_words(stream, &[0])?;
            }
            code::HASH_DATA => {
                let len = read_u32(stream)?;
                if len > MAX_HASH_DATA {
                    return Err(protocol_error(format!("HASH_DATA of {len} bytes refused")));
                }
                io::copy(&mut (&mut *stream).take(u64::from(len)), &mut io::sink())?;
                write_words(stream, &[0])?;
            }
            code::SET_ALTERNATIVE_RESULT => {
                read_u32(stream)?;
                write_words(stream, &[0])?;
            }
            code::SESSION_END => return Ok(()),
            code::STOP => {
                let _ = shared.stop.send(StopReason::StopCommand);
                return Ok(());
            }
            other => return Err(protocol_error(format!("unknown command-port code {other}"))),
        }
    }
    Ok(())
}

fn send_response(stream: &mut TcpStream, response: &[u8]) -> io::Result<()> {
    let len = u32::try_from(response.len()).expect("response over 4 GiB");
    let mut out = Vec::with_capacity(response.len() + 8);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(response);
    out.extend_from_slice(&0u32.to_be_bytes());
    stream.write_all(&out)
}

fn serve_platform_port<D: Device>(stream: &mut TcpStream, shared: &Shared<D>) -> io::Result<()> {
    while let Some(code) = next_code(stream)? {
        match code {
            code::POWER_ON => {
                // As in the reference simulator, POWER_ON on a powered TPM
                // is a no-op: every mssim client sends it on connect.
                let mut tpm = shared.lock();
                if !tpm.powered {
                    tpm.device.init();
                    tpm.powered = true;
                }
            }
            code::POWER_OFF => shared.lock().powered = false,
            code::RESET | code::RESTART => {
                let mut tpm = shared.lock();
                tpm.device.init();
                tpm.powered = true;
            }
            // Signals the engine has no input for: acknowledged so that
            // clients which send them routinely keep working.
            code::PHYS_PRES_ON
            | code::PHYS_PRES_OFF
            | code::CANCEL_ON
            | code::CANCEL_OFF
            | code::NV_ON
            | code::NV_OFF
            | code::KEY_CACHE_ON
            | code::KEY_CACHE_OFF
            | code::TEST_FAILURE_MODE => {}
            code::GET_COMMAND_RESPONSE_SIZES => {
                write_words(stream, &[MAX_BUFFER, MAX_BUFFER])?;
            }
            code::ACT_GET_SIGNALED => {
                read_u32(stream)?;
                write_words(stream, &[0])?;
            }
            code::SESSION_END => return Ok(()),
            code::STOP => {
                let _ = shared.stop.send(StopReason::StopCommand);
                return Ok(());
            }
            other => {
                return Err(protocol_error(format!(
                    "unknown platform-port code {other}"
                )));
            }
        }
        write_words(stream, &[0])?;
    }
    Ok(())
}
