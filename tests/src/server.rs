//! A TPM server process (the Rivet engine, or the reference for
//! comparison) on a free port pair, stopped and reaped when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Which TPM is behind the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `rivet-tpm-server`: the Rivet engine.
    Rivet,
    /// `rivet-libtpms-server`: the TCG reference (libtpms) behind the same
    /// server code; runs of the suites against it check the suites.
    Reference,
}

impl Backend {
    pub fn binary(self) -> PathBuf {
        match self {
            Self::Rivet => crate::workspace_binary("rivet-tpm-server", "RIVET_TPM_SERVER"),
            Self::Reference => {
                crate::workspace_binary("rivet-libtpms-server", "RIVET_LIBTPMS_SERVER")
            }
        }
    }
}

pub struct TpmServer {
    child: Option<Child>,
    stderr: Option<std::process::ChildStderr>,
    pub port: u16,
    pub backend: Backend,
    pub state: PathBuf,
}

/// Platform-port signal codes used by tests.
pub const SIGNAL_POWER_ON: u32 = 1;
pub const SIGNAL_POWER_OFF: u32 = 2;
pub const SIGNAL_RESET: u32 = 17;

impl TpmServer {
    /// Starts a server on a free port pair with `state` as its state file.
    pub fn start(backend: Backend, state: &Path) -> Self {
        let mut child = Command::new(backend.binary())
            .args(["--host", "127.0.0.1", "--port", "0", "--state"])
            .arg(state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the TPM server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut stderr = child.stderr.take();
        let port = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|port| port.parse().ok());
        let Some(port) = port else {
            let mut err = String::new();
            let _ = stderr.as_mut().unwrap().read_to_string(&mut err);
            let status = child.wait();
            panic!("{backend:?} server did not start ({status:?}): stdout {line:?}, stderr {err}");
        };
        Self {
            child: Some(child),
            stderr,
            port,
            backend,
            state: state.to_owned(),
        }
    }

    /// TCTI string for tpm2-tools.
    pub fn tcti(&self) -> String {
        format!("mssim:host=127.0.0.1,port={}", self.port)
    }

    /// Sends one platform-port signal and checks the acknowledgement.
    pub fn platform_signal(&self, code: u32) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port + 1)).expect("platform port");
        s.write_all(&code.to_be_bytes()).unwrap();
        let mut ack = [0xff; 4];
        s.read_exact(&mut ack).unwrap();
        assert_eq!(ack, [0; 4], "platform signal {code} not acknowledged");
        s.write_all(&20u32.to_be_bytes()).unwrap(); // SESSION_END
    }

    /// Power cycle: _TPM_Init, after which the TPM needs Startup again.
    pub fn power_cycle(&self) {
        self.platform_signal(SIGNAL_POWER_OFF);
        self.platform_signal(SIGNAL_POWER_ON);
    }

    /// SIGTERM, then waits (bounded) for a clean exit; returns the status
    /// and what the server wrote to stderr.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        self.signal("TERM");
        self.wait_exit()
    }

    /// Sends a signal by name (the shell's `kill` builtin: no extra package).
    pub fn signal(&self, name: &str) {
        let pid = self.pid();
        let rc = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{name} {pid}"))
            .status()
            .unwrap();
        assert!(rc.success(), "kill -{name} {pid} failed");
    }

    /// Waits (bounded) for the server to exit by itself, e.g. after STOP.
    pub fn wait_exit(&mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{:?} server did not exit within 10 s", self.backend);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        if let Some(mut stderr) = self.stderr.take() {
            let _ = stderr.read_to_string(&mut err);
        }
        (status, err)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }
}

impl Drop for TpmServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A raw MS-simulator client connection to one port.
pub struct RawClient {
    pub stream: TcpStream,
}

impl RawClient {
    pub fn command_port(server: &TpmServer) -> Self {
        Self::connect(server.port)
    }

    pub fn platform_port(server: &TpmServer) -> Self {
        Self::connect(server.port + 1)
    }

    fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self { stream }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn read_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.stream
            .read_exact(&mut b)
            .expect("reading a u32 from the server");
        u32::from_be_bytes(b)
    }

    /// SEND_COMMAND; returns the TPM response after checking the trailing 0.
    pub fn execute(&mut self, locality: u8, command: &[u8]) -> Vec<u8> {
        let mut msg = 8u32.to_be_bytes().to_vec();
        msg.push(locality);
        msg.extend_from_slice(&u32::try_from(command.len()).unwrap().to_be_bytes());
        msg.extend_from_slice(command);
        self.send(&msg);
        self.read_response()
    }

    /// Reads `{u32 len, response, u32 0}`.
    pub fn read_response(&mut self) -> Vec<u8> {
        let len = self.read_u32() as usize;
        assert!(len <= 4096, "response length {len}");
        let mut resp = vec![0; len];
        self.stream.read_exact(&mut resp).unwrap();
        assert_eq!(self.read_u32(), 0, "trailing word after a response");
        resp
    }

    /// A platform signal answered by u32 0.
    pub fn signal(&mut self, code: u32) {
        self.send(&code.to_be_bytes());
        assert_eq!(self.read_u32(), 0, "signal {code} not acknowledged");
    }

    /// True once the server has closed the connection.
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }
}
