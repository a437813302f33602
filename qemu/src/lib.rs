//! Builds Rivet kernel images and boots them under QEMU (TCG): the runner
//! that the end-to-end tests and `qemu/run.sh` share.
//!
//! A boot captures the serial port, enforces a timeout, notes when the
//! kernel printed its ready line, and maps QEMU's exit status (through the
//! isa-debug-exit device) to pass or fail.

pub mod evidence;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What the kernel prints when boot is complete.
pub const READY_MARKER: &str = "rivet: ready";
/// QEMU's exit status when the kernel wrote the success value (0x10).
pub const EXIT_SUCCESS: i32 = 33;
/// QEMU's exit status when the kernel wrote the failure value (0x11).
pub const EXIT_FAILURE: i32 = 35;
/// The bare-metal target the kernel is built for.
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";

/// Why the runner could not do its job (as opposed to the kernel failing).
#[derive(Debug)]
pub enum RunnerError {
    /// `cargo build` of the kernel failed; its stderr.
    Build(String),
    /// A program could not be started.
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// Waiting on QEMU failed.
    Wait(std::io::Error),
}

impl std::fmt::Display for RunnerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Build(stderr) => write!(f, "building the kernel failed:\n{stderr}"),
            Self::Spawn { program, error } => write!(
                f,
                "cannot start {program}: {error} (is it installed? qemu/setup.sh installs it)"
            ),
            Self::Wait(e) => write!(f, "waiting for QEMU failed: {e}"),
        }
    }
}

impl std::error::Error for RunnerError {}

/// The workspace root (this crate lives in `qemu/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("qemu/ has a parent")
        .to_path_buf()
}

static BUILD_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How to build a bare-metal image: the kernel, or the test guest firmware.
#[derive(Clone, Debug)]
pub struct KernelBuild {
    /// The package (its binary has the same name).
    pub package: String,
    /// Cargo features (e.g. `ktest` for the kernel).
    pub features: Vec<String>,
    /// Optimised build.
    pub release: bool,
}

impl Default for KernelBuild {
    fn default() -> Self {
        Self {
            package: "rivet-kernel".into(),
            features: Vec::new(),
            release: false,
        }
    }
}

impl KernelBuild {
    /// The in-kernel test image.
    pub fn ktest() -> Self {
        Self {
            features: vec!["ktest".into()],
            ..Self::default()
        }
    }

    /// The test guest firmware (`firmware/guest`), booted as the SVSM's guest.
    pub fn guest_firmware() -> Self {
        Self {
            package: "rivet-firmware-guest".into(),
            ..Self::default()
        }
    }

    /// Builds the image and returns its path: a copy under
    /// `target/kernel/images/<package>-<features>[-release]`, so images of
    /// different feature sets never overwrite each other, even when tests
    /// build them at the same time.
    pub fn build(&self) -> Result<PathBuf, RunnerError> {
        let root = workspace_root();
        let mut flavour = if self.features.is_empty() {
            "default".to_string()
        } else {
            self.features.join("-")
        };
        flavour = format!("{}-{flavour}", self.package);
        if self.release {
            flavour.push_str("-release");
        }
        // One target directory for every image, so the engine and the crypto
        // crates are compiled once per profile; builds run one at a time and
        // each image is copied out under its own name before the next build
        // can overwrite the binary.
        let target_dir = root.join("target").join("kernel");
        let _one_at_a_time = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(&root)
            .args([
                "build",
                "--quiet",
                "-p",
                &self.package,
                "--target",
                KERNEL_TARGET,
            ])
            .arg("--target-dir")
            .arg(&target_dir)
            // Flags meant for an outer build must not leak into the kernel's.
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR");
        if self.release {
            cmd.arg("--release");
        }
        if !self.features.is_empty() {
            cmd.arg("--features").arg(self.features.join(","));
        }
        let out = cmd.output().map_err(|error| RunnerError::Spawn {
            program: cargo.clone(),
            error,
        })?;
        if !out.status.success() {
            return Err(RunnerError::Build(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        let profile = if self.release { "release" } else { "debug" };
        let built = target_dir
            .join(KERNEL_TARGET)
            .join(profile)
            .join(&self.package);
        let images = target_dir.join("images");
        let image = images.join(&flavour);
        std::fs::create_dir_all(&images)
            .and_then(|()| std::fs::copy(&built, &image))
            .map_err(|e| RunnerError::Build(format!("copying {}: {e}", built.display())))?;
        Ok(image)
    }
}

/// How a boot ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The kernel reported success through isa-debug-exit.
    Success,
    /// The kernel reported failure through isa-debug-exit.
    Failure,
    /// QEMU exited with status 0: with `-no-reboot` that is a triple fault
    /// or a reset, never something the kernel chose.
    ResetOrTripleFault,
    /// Any other exit status (QEMU itself failed).
    Other(i32),
    /// Killed by a signal.
    Signalled,
    /// Still running at the deadline; killed.
    Timeout,
}

impl Exit {
    fn from_status(status: std::process::ExitStatus) -> Self {
        match status.code() {
            Some(EXIT_SUCCESS) => Self::Success,
            Some(EXIT_FAILURE) => Self::Failure,
            Some(0) => Self::ResetOrTripleFault,
            Some(code) => Self::Other(code),
            None => Self::Signalled,
        }
    }
}

/// The result of one boot.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// How it ended.
    pub exit: Exit,
    /// Everything the kernel wrote to the serial port (CR LF → LF).
    pub serial: String,
    /// What QEMU wrote to stderr.
    pub stderr: String,
    /// From starting QEMU to its exit.
    pub elapsed: Duration,
    /// From starting QEMU to the ready line, if it came.
    pub ready_after: Option<Duration>,
}

impl Outcome {
    /// Serial lines that start with `prefix`.
    pub fn lines_starting<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.serial.lines().filter(move |l| l.starts_with(prefix))
    }
}

/// One QEMU boot of a kernel image.
#[derive(Clone, Debug)]
pub struct Boot {
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    report_key: Option<PathBuf>,
    append: String,
    memory_mib: u32,
    cpu: String,
    timeout: Duration,
    extra: Vec<String>,
    echo: bool,
}

impl Boot {
    /// A boot of `kernel` with the defaults: q35, `-cpu max`, 256 MiB,
    /// 60 s timeout.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            kernel: kernel.into(),
            initrd: None,
            report_key: None,
            append: String::new(),
            memory_mib: 256,
            cpu: "max".into(),
            timeout: Duration::from_secs(60),
            extra: Vec::new(),
            echo: false,
        }
    }

    /// The guest firmware, passed as the first PVH boot module.
    pub fn guest_firmware(mut self, image: impl Into<PathBuf>) -> Self {
        self.initrd = Some(image.into());
        self
    }

    /// The simulated attestation key (a 48-byte P-384 private scalar),
    /// handed to the native platform through fw_cfg `opt/rivet/report-key`.
    pub fn report_key(mut self, path: impl Into<PathBuf>) -> Self {
        self.report_key = Some(path.into());
        self
    }

    /// Kernel command line.
    pub fn append(mut self, cmdline: impl Into<String>) -> Self {
        self.append = cmdline.into();
        self
    }

    /// Guest RAM in MiB.
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// QEMU CPU model.
    pub fn cpu(mut self, cpu: impl Into<String>) -> Self {
        self.cpu = cpu.into();
        self
    }

    /// Deadline for the whole boot.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// More QEMU arguments.
    pub fn extra_args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.extra.extend(args.into_iter().map(Into::into));
        self
    }

    /// Copy the serial output to this process's stdout as it arrives.
    pub fn echo(mut self, echo: bool) -> Self {
        self.echo = echo;
        self
    }

    /// The QEMU command line this boot runs.
    pub fn command(&self) -> Command {
        let qemu = std::env::var("RIVET_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
        let mut cmd = Command::new(qemu);
        cmd.args(["-machine", "q35", "-accel", "tcg", "-cpu", &self.cpu])
            .args(["-m", &format!("{}M", self.memory_mib), "-smp", "1"])
            .args([
                "-nodefaults",
                "-display",
                "none",
                "-serial",
                "stdio",
                "-monitor",
                "none",
            ])
            .args([
                "-no-reboot",
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=4",
            ])
            .arg("-kernel")
            .arg(&self.kernel);
        if let Some(initrd) = &self.initrd {
            cmd.arg("-initrd").arg(initrd);
        }
        if let Some(key) = &self.report_key {
            let mut arg = std::ffi::OsString::from("name=opt/rivet/report-key,file=");
            arg.push(key);
            cmd.arg("-fw_cfg").arg(arg);
        }
        if !self.append.is_empty() {
            cmd.args(["-append", &self.append]);
        }
        cmd.args(&self.extra);
        cmd
    }

    /// Boots and waits for QEMU to exit or the deadline.
    pub fn run(&self) -> Result<Outcome, RunnerError> {
        let run = run_captured(&mut self.command(), self.timeout, self.echo)?;
        let mut serial = String::new();
        let mut ready_after = None;
        for (at, line) in &run.lines {
            if ready_after.is_none() && line.starts_with(READY_MARKER) {
                ready_after = Some(*at);
            }
            serial.push_str(line);
        }
        Ok(Outcome {
            exit: run.status.map_or(Exit::Timeout, Exit::from_status),
            serial,
            stderr: run.stderr,
            elapsed: run.elapsed,
            ready_after,
        })
    }
}

/// What a captured process printed and how it ended.
#[derive(Clone, Debug)]
pub struct CapturedRun {
    /// Its stdout (QEMU's serial console) line by line, CRs removed, each
    /// line with its LF, and when it arrived (from the start).
    pub lines: Vec<(Duration, String)>,
    /// How it exited; None when it was still running at the deadline and
    /// was killed.
    pub status: Option<std::process::ExitStatus>,
    /// Everything it wrote to stderr.
    pub stderr: String,
    /// From the start to its exit (or the kill).
    pub elapsed: Duration,
}

/// Runs `cmd` with stdin closed and stdout/stderr captured until it exits or
/// `timeout` passes (then it is killed); with `echo` each stdout line is
/// also printed as it arrives. The QEMU runs of the tests share this.
pub fn run_captured(
    cmd: &mut Command,
    timeout: Duration,
    echo: bool,
) -> Result<CapturedRun, RunnerError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|error| RunnerError::Spawn {
        program: format!("{:?}", cmd.get_program()),
        error,
    })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");

    let (tx, rx) = mpsc::channel::<(Duration, String)>();
    let reader = std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match lines.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line).replace('\r', "");
                    if echo {
                        print!("{text}");
                    }
                    if tx.send((start.elapsed(), text)).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let deadline = start + timeout;
    let status = loop {
        match child.try_wait().map_err(RunnerError::Wait)? {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let elapsed = start.elapsed();
    let _ = reader.join();
    Ok(CapturedRun {
        lines: rx.try_iter().collect(),
        status,
        stderr: err_reader.join().unwrap_or_default(),
        elapsed,
    })
}

/// Writes a fresh simulated attestation key (48 random bytes, a P-384
/// scalar with overwhelming probability) to `path`, readable only by its owner.
pub fn write_report_key(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut key = [0u8; 48];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    key[0] &= 0x7F; // below the group order
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(&key)
}

/// The median of some durations (the middle one; the lower middle for an
/// even count). `None` for none.
pub fn median(mut samples: Vec<Duration>) -> Option<Duration> {
    samples.sort();
    samples.get(samples.len().saturating_sub(1) / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_map_to_outcomes() {
        use std::os::unix::process::ExitStatusExt;
        let st = |code: i32| std::process::ExitStatus::from_raw(code << 8);
        assert_eq!(Exit::from_status(st(33)), Exit::Success);
        assert_eq!(Exit::from_status(st(35)), Exit::Failure);
        assert_eq!(Exit::from_status(st(0)), Exit::ResetOrTripleFault);
        assert_eq!(Exit::from_status(st(1)), Exit::Other(1));
        assert_eq!(
            Exit::from_status(std::process::ExitStatus::from_raw(9)),
            Exit::Signalled
        );
    }

    #[test]
    fn median_picks_the_middle() {
        let ms = Duration::from_millis;
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![ms(5), ms(1), ms(3)]), Some(ms(3)));
        assert_eq!(median(vec![ms(4), ms(1), ms(3), ms(2)]), Some(ms(2)));
    }

    #[test]
    fn command_line_has_the_exit_device_and_kernel() {
        let cmd = Boot::new("/k.elf").append("a=b").command();
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.windows(2).any(|w| w == ["-kernel", "/k.elf"]));
        assert!(args.windows(2).any(|w| w == ["-append", "a=b"]));
        assert!(
            args.iter()
                .any(|a| a == "isa-debug-exit,iobase=0xf4,iosize=4")
        );
        assert!(args.iter().any(|a| a == "-no-reboot"));
    }
}
