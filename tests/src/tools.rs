//! Running tpm2-tools against a TCTI, in a private working directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

pub struct Tpm2 {
    tcti: String,
    dir: TempDir,
    envs: Vec<(String, String)>,
}

fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "tpm2_{} → {}\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Tpm2 {
    pub fn new(tcti: impl Into<String>) -> Self {
        Self {
            tcti: tcti.into(),
            dir: tempfile::tempdir().unwrap(),
            envs: Vec::new(),
        }
    }

    /// An extra environment variable for every tool run (e.g. the D-Bus address).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// A file in the private working directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `tpm2_<tool> args...`; a missing tool panics.
    pub fn output(&self, args: &[&str]) -> Output {
        let (tool, rest) = args.split_first().expect("a tool name");
        let program = format!("tpm2_{tool}");
        Command::new(&program)
            .args(rest)
            .current_dir(self.dir.path())
            .env("TPM2TOOLS_TCTI", &self.tcti)
            .env("TSS2_LOG", "all+none")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e} (is the tpm2-tools package installed?)"))
    }

    /// Runs a tool that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "expected success: {}",
            describe(args, &out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a tool that must fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            !out.status.success(),
            "expected failure: {}",
            describe(args, &out)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs a tool that must fail with a given TPM response code, printed
    /// by tpm2-tools as `(0x...)`.
    pub fn fails_with(&self, rc: u32, args: &[&str]) {
        let err = self.fails(args);
        let want = format!("0x{rc:x}");
        let want_padded = format!("0x{rc:08x}");
        assert!(
            err.to_lowercase().contains(&want_padded)
                || err.to_lowercase().contains(&format!("({want})")),
            "tpm2_{} failed, but not with {want}: {err}",
            args.join(" ")
        );
    }
}

/// Parses `tpm2_pcrread` output: (bank, pcr) → value bytes.
pub fn parse_pcrread(out: &str) -> Vec<(String, u32, Vec<u8>)> {
    let mut bank = String::new();
    let mut values = Vec::new();
    for line in out.lines() {
        let t = line.trim();
        if let Some(b) = t.strip_suffix(':').filter(|_| !t.contains(' ')) {
            bank = b.to_string();
        } else if let Some((idx, val)) = t.split_once(':') {
            let (Ok(idx), Some(val)) = (idx.trim().parse(), val.trim().strip_prefix("0x")) else {
                continue;
            };
            values.push((bank.clone(), idx, unhex(val)));
        }
    }
    values
}

pub fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The value of one PCR from `tpm2_pcrread` output.
pub fn pcr(out: &str, bank: &str, index: u32) -> Vec<u8> {
    parse_pcrread(out)
        .into_iter()
        .find(|(b, i, _)| b == bank && *i == index)
        .unwrap_or_else(|| panic!("{bank}:{index} not in pcrread output:\n{out}"))
        .2
}

/// A `key: value` field from YAML-ish tool output (first match).
pub fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key:?} in:\n{out}"))
}
