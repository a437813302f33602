//! A Linux guest on a real firmware stack: OVMF + Debian's cloud kernel + a
//! busybox/tpm2-tools initramfs (`qemu/linux-initramfs.sh`, with
//! `qemu/linux-guest/init-check` as /init) under QEMU TCG, with a TPM 2.0
//! CRB device backed by `rivet-tpm-server --ctrl` or by swtpm through QEMU's
//! `-tpmdev emulator`. The guest's console lines are collected with the time
//! each arrived, and split into boots.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// OVMF from Debian's `ovmf` package (4 MiB flash layout).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// The repository's root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn run_script(script: &str, args: &[&Path]) -> String {
    let root = workspace_root();
    let out = Command::new(root.join(script))
        .args(args)
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed ({}); qemu/setup.sh installs what it needs:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Debian's cloud kernel, unpacked in the cache by
/// `qemu/fetch-linux-kernel.sh` (which `qemu/setup.sh` runs; run here too,
/// so that a plain `cargo test` on a set-up machine finds it).
pub fn kernel() -> PathBuf {
    let path = PathBuf::from(run_script("qemu/fetch-linux-kernel.sh", &[]));
    assert!(path.is_file(), "no kernel at {}", path.display());
    path
}

/// Builds the initramfs with `init` (a path in the repository) as /init.
pub fn initramfs(init: &str, out: &Path) {
    let init = workspace_root().join(init);
    run_script("qemu/linux-initramfs.sh", &[out, &init]);
}

/// What backs the guest's TPM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TpmBackend {
    /// `rivet-tpm-server --ctrl`: Rivet's engine.
    Rivet,
    /// swtpm 0.7 (libtpms): the reference the test is checked against.
    Swtpm,
}

/// A running TPM emulator with its control socket.
pub struct TpmProcess {
    child: Child,
    pub ctrl: PathBuf,
    log: PathBuf,
    backend: TpmBackend,
}

impl TpmProcess {
    /// Starts `backend` with its state in `dir` (kept across restarts);
    /// `run` numbers the log file.
    pub fn start(backend: TpmBackend, dir: &Path, run: usize) -> Self {
        let ctrl = dir.join("ctrl.sock");
        let _ = std::fs::remove_file(&ctrl);
        let log = dir.join(format!("tpm-{run}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut cmd = match backend {
            TpmBackend::Rivet => {
                let mut cmd = Command::new(crate::workspace_binary(
                    "rivet-tpm-server",
                    "RIVET_TPM_SERVER",
                ));
                cmd.arg("--ctrl")
                    .arg(&ctrl)
                    .arg("--state")
                    .arg(dir.join("tpm.state"));
                cmd
            }
            TpmBackend::Swtpm => {
                let state = dir.join("swtpm");
                if !state.exists() {
                    std::fs::create_dir_all(&state).unwrap();
                    // Manufacture with the banks Rivet's engine has (swtpm's
                    // own default adds SHA-384 and SHA-512), so that both
                    // firmware runs extend and log the same banks.
                    let out = Command::new("swtpm_setup")
                        .args(["--tpm2", "--pcr-banks", "sha1,sha256", "--tpmstate"])
                        .arg(&state)
                        .stdin(Stdio::null())
                        .output()
                        .expect("swtpm_setup (qemu/setup.sh installs swtpm-tools)");
                    assert!(
                        out.status.success(),
                        "swtpm_setup: {}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                let mut cmd = Command::new("swtpm");
                cmd.args(["socket", "--tpm2", "--ctrl"])
                    .arg(format!("type=unixio,path={}", ctrl.display()))
                    .arg("--tpmstate")
                    .arg(format!("dir={}", state.display()));
                cmd
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {backend:?}: {e} (qemu/setup.sh installs swtpm)"));
        let mut tpm = Self {
            child,
            ctrl,
            log,
            backend,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !tpm.ctrl.exists() {
            if let Ok(Some(status)) = tpm.child.try_wait() {
                panic!("{backend:?} exited at start ({status}): {}", tpm.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{backend:?}: no control socket after 20 s: {}",
                tpm.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        tpm
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) for the emulator to exit by itself, as both do
    /// after QEMU's SHUTDOWN; kills it otherwise.
    pub fn finish(mut self) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{:?} still running 20 s after QEMU exited: {}",
                    self.backend,
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TpmProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One QEMU process: OVMF, the kernel and initramfs, the TPM's socket.
pub struct GuestVm<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    /// This guest's copy of the OVMF variable store (kept across runs).
    pub ovmf_vars: &'a Path,
    pub tpm_ctrl: &'a Path,
    /// Appended to `console=ttyS0 …`.
    pub append: String,
    /// Let a guest reboot restart the machine (QEMU resets the TPM through
    /// the control channel); otherwise QEMU exits on a reboot.
    pub allow_reboot: bool,
    pub timeout: Duration,
}

/// What a QEMU run printed, each line with its time since QEMU started.
pub struct GuestOutput {
    pub lines: Vec<(Duration, String)>,
    pub status: Option<ExitStatus>,
    pub elapsed: Duration,
    pub stderr: String,
}

impl GuestOutput {
    /// The last `n` lines, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let skip = self.lines.len().saturating_sub(n);
        let mut s: String = self.lines[skip..]
            .iter()
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        if !self.stderr.is_empty() {
            s.push_str(&format!("QEMU stderr:\n{}", self.stderr));
        }
        s
    }
}

impl GuestVm<'_> {
    /// Runs QEMU to its exit; a timeout is an error with the console tail.
    pub fn run(&self) -> Result<GuestOutput, String> {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-machine", "q35", "-accel", "tcg", "-cpu", "max"])
            .args(["-m", "512M", "-smp", "1", "-nodefaults"])
            .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
            ))
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=1,file={}",
                self.ovmf_vars.display()
            ))
            .arg("-chardev")
            .arg(format!("socket,id=chrtpm,path={}", self.tpm_ctrl.display()))
            .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"])
            .args(["-device", "tpm-crb,tpmdev=tpm0"])
            .arg("-kernel")
            .arg(self.kernel)
            .arg("-initrd")
            .arg(self.initrd)
            .arg("-append")
            .arg(format!(
                "console=ttyS0 quiet loglevel=1 panic=-1 {}",
                self.append
            ));
        if !self.allow_reboot {
            cmd.arg("-no-reboot");
        }
        let run = rivet_qemu::run_captured(&mut cmd, self.timeout, false)
            .map_err(|e| format!("running QEMU: {e}"))?;
        let timed_out = run.status.is_none();
        let output = GuestOutput {
            lines: run
                .lines
                .into_iter()
                .map(|(at, l)| (at, l.trim_end_matches('\n').to_string()))
                .collect(),
            status: run.status,
            elapsed: run.elapsed,
            stderr: run.stderr,
        };
        if timed_out {
            return Err(format!(
                "QEMU timed out after {:?}; the guest console ended with:\n{}",
                self.timeout,
                output.tail(40)
            ));
        }
        Ok(output)
    }
}

/// One boot of `init-check`, parsed from its console lines.
#[derive(Debug, Default, Clone)]
pub struct CheckedBoot {
    /// From QEMU's start (or the previous boot's RIVET-REBOOTING line) to
    /// RIVET-READY: firmware, kernel, up to the first userspace line.
    pub boot_time: Duration,
    /// From the same start to RIVET-DONE (all the TPM work done).
    pub done_time: Option<Duration>,
    pub phase: String,
    pub ok: Vec<String>,
    pub failures: Vec<String>,
    /// PCR values from sysfs: bank → index → value.
    pub pcrs: BTreeMap<String, BTreeMap<u32, Vec<u8>>>,
    /// RIVET-BEGIN/END blocks by name.
    pub blobs: BTreeMap<String, Vec<u8>>,
}

impl CheckedBoot {
    pub fn blob(&self, name: &str) -> Result<&[u8], String> {
        self.blobs
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| format!("the guest sent no {name}"))
    }
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("bad hex {s:?}"));
    }
    Ok((0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("checked hex"))
        .collect())
}

/// Splits a QEMU run's console into the boots of `init-check`.
pub fn checked_boots(output: &GuestOutput) -> Result<Vec<CheckedBoot>, String> {
    let mut boots: Vec<CheckedBoot> = Vec::new();
    let mut boot_start = Duration::ZERO;
    let mut block: Option<(String, String)> = None;
    for (at, line) in &output.lines {
        // Kernel messages may share a line with ours: find the marker.
        let Some(pos) = line.find("RIVET-") else {
            if let Some((_, hex)) = block.as_mut() {
                hex.extend(line.chars().filter(|c| !c.is_whitespace()));
            }
            continue;
        };
        let line = &line[pos..];
        let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
        if tag == "RIVET-READY" {
            boots.push(CheckedBoot {
                boot_time: at.saturating_sub(boot_start),
                ..CheckedBoot::default()
            });
            continue;
        }
        if tag == "RIVET-REBOOTING" {
            boot_start = *at;
        }
        let Some(boot) = boots.last_mut() else {
            return Err(format!("{line:?} before RIVET-READY"));
        };
        match tag {
            "RIVET-PHASE" => boot.phase = rest.to_string(),
            "RIVET-OK" => boot.ok.push(rest.to_string()),
            "RIVET-FAIL" => boot.failures.push(rest.to_string()),
            "RIVET-DONE" => boot.done_time = Some(at.saturating_sub(boot_start)),
            "RIVET-PCR" => {
                let mut f = rest.split_whitespace();
                let (Some(bank), Some(index), Some(value)) = (f.next(), f.next(), f.next()) else {
                    return Err(format!("bad PCR line {line:?}"));
                };
                let index = index
                    .parse()
                    .map_err(|_| format!("bad PCR line {line:?}"))?;
                let value = unhex(&value.to_ascii_lowercase())?;
                boot.pcrs
                    .entry(bank.to_string())
                    .or_default()
                    .insert(index, value);
            }
            "RIVET-BEGIN" => block = Some((rest.to_string(), String::new())),
            "RIVET-END" => {
                let Some((name, hex)) = block.take().filter(|(n, _)| n == rest) else {
                    return Err(format!("{line:?} without its RIVET-BEGIN"));
                };
                boot.blobs.insert(name, unhex(&hex)?);
            }
            "RIVET-REBOOTING" => {}
            _ => return Err(format!("unknown guest line {line:?}")),
        }
    }
    Ok(boots)
}

/// `n` random bytes from the OS.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("/dev/urandom");
    b
}
