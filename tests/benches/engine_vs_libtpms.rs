//! Benchmark: a fixed mix of TPM commands in-process on the Rivet engine and
//! on the TCG reference (Debian's libtpms), median latency per command and
//! the ratio engine/libtpms. Prints figures; asserts nothing about time.
//!
//! `cargo bench -p rivet-tests --bench engine_vs_libtpms` (release build).
//! `RIVET_BENCH_ROUNDS=<n>` scales the iteration counts.
//!
//! Targets (issue 4): every command at most 1.0x libtpms, RSA-2048 EK
//! creation at most 0.5x. "EK" rows repeat the same template (a TPM may
//! answer from a cache of primary keys, as the engine does); the "cold" row
//! changes the unique field every time, so each call derives a new key.

use std::time::{Duration, Instant};

use rivet_libtpms::Reference;
use rivet_tests::cmd::{Buf, Command, alg, rc, rh};
use rivet_tpm::{Platform, PlatformError, Tpm};

/// The engine on OS entropy and a wall clock; commits stay in memory, as
/// the reference's NVRAM does here.
struct Host(Instant);

impl Platform for Host {
    fn entropy(&mut self, buf: &mut [u8]) -> Result<(), PlatformError> {
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(buf))
            .map_err(|_| PlatformError("no /dev/urandom"))
    }
    fn now_ms(&mut self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
    fn commit(&mut self, _: &[u8]) -> Result<(), PlatformError> {
        Ok(())
    }
}

trait Tpm2 {
    fn run(&mut self, cmd: &[u8]) -> Vec<u8>;
}

impl Tpm2 for Tpm<Host> {
    fn run(&mut self, cmd: &[u8]) -> Vec<u8> {
        self.execute(0, cmd)
    }
}

impl Tpm2 for Reference {
    fn run(&mut self, cmd: &[u8]) -> Vec<u8> {
        self.execute(0, cmd)
    }
}

fn ok(tpm: &mut dyn Tpm2, what: &str, cmd: &Command) -> Vec<u8> {
    let bytes = cmd.bytes();
    let mut r = tpm.run(&bytes);
    // TPM_RC_RETRY: the reference answers it to the first DA-protected use
    // after Startup (it first writes its orderly flag); clients retry.
    while rc(&r) == 0x922 {
        r = tpm.run(&bytes);
    }
    assert_eq!(rc(&r), 0, "{what}: TPM_RC {:#x}", rc(&r));
    r
}

const EK_POLICY: &str = "837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn ek_rsa() -> Vec<u8> {
    ek_rsa_unique(&[0; 256])
}

/// Template L-1 with another unique field: a different key, so no TPM can
/// answer from a cache of primary keys.
fn ek_rsa_unique(unique: &[u8]) -> Vec<u8> {
    Buf::new()
        .u16(alg::RSA)
        .u16(alg::SHA256)
        .u32(0x0003_00B2)
        .tpm2b(&unhex(EK_POLICY))
        .u16(alg::AES)
        .u16(128)
        .u16(alg::CFB)
        .u16(alg::NULL)
        .u16(2048)
        .u32(0)
        .tpm2b(unique)
        .0
}

fn ek_ecc() -> Vec<u8> {
    Buf::new()
        .u16(alg::ECC)
        .u16(alg::SHA256)
        .u32(0x0003_00B2)
        .tpm2b(&unhex(EK_POLICY))
        .u16(alg::AES)
        .u16(128)
        .u16(alg::CFB)
        .u16(alg::NULL)
        .u16(0x0003)
        .u16(alg::NULL)
        .tpm2b(&[0; 32])
        .tpm2b(&[0; 32])
        .0
}

/// ECC P-256 storage key (SRK-like): restricted decrypt, AES-128-CFB.
fn srk() -> Vec<u8> {
    Buf::new()
        .u16(alg::ECC)
        .u16(alg::SHA256)
        .u32(0x0003_0472) // fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|noDA|restricted|decrypt
        .tpm2b(&[])
        .u16(alg::AES)
        .u16(128)
        .u16(alg::CFB)
        .u16(alg::NULL)
        .u16(0x0003)
        .u16(alg::NULL)
        .tpm2b(&[])
        .tpm2b(&[])
        .0
}

/// Unrestricted ECDSA P-256 signing key.
fn ecc_signer() -> Vec<u8> {
    Buf::new()
        .u16(alg::ECC)
        .u16(alg::SHA256)
        .u32(0x0004_0072) // fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|sign
        .tpm2b(&[])
        .u16(alg::NULL)
        .u16(alg::ECDSA)
        .u16(alg::SHA256)
        .u16(0x0003)
        .u16(alg::NULL)
        .tpm2b(&[])
        .tpm2b(&[])
        .0
}

/// Unrestricted RSASSA-SHA256 RSA-2048 signing key.
fn rsa_signer() -> Vec<u8> {
    Buf::new()
        .u16(alg::RSA)
        .u16(alg::SHA256)
        .u32(0x0004_0072)
        .tpm2b(&[])
        .u16(alg::NULL)
        .u16(0x0014)
        .u16(alg::SHA256)
        .u16(2048)
        .u32(0)
        .tpm2b(&[])
        .0
}

/// Restricted ECDSA P-256 attestation key.
fn ak() -> Vec<u8> {
    Buf::new()
        .u16(alg::ECC)
        .u16(alg::SHA256)
        .u32(0x0005_0072)
        .tpm2b(&[])
        .u16(alg::NULL)
        .u16(alg::ECDSA)
        .u16(alg::SHA256)
        .u16(0x0003)
        .u16(alg::NULL)
        .tpm2b(&[])
        .tpm2b(&[])
        .0
}

fn create_primary(hierarchy: u32, template: &[u8]) -> Command {
    Command::new(0x131).handle(hierarchy).pw(b"").params(
        Buf::new()
            .u16(4)
            .u16(0)
            .u16(0)
            .tpm2b(template)
            .tpm2b(&[])
            .u32(0),
    )
}

fn handle_of(r: &[u8]) -> u32 {
    u32::from_be_bytes(r[10..14].try_into().unwrap())
}

fn flush(h: u32) -> Command {
    Command::new(0x165).params(Buf::new().u32(h))
}

/// (TPM2B_PRIVATE, TPM2B_PUBLIC) from a Create response.
fn private_public(r: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut at = 14; // header, parameterSize
    let n = u16::from_be_bytes([r[at], r[at + 1]]) as usize;
    let private = r[at..at + 2 + n].to_vec();
    at += 2 + n;
    let n = u16::from_be_bytes([r[at], r[at + 1]]) as usize;
    (private, r[at..at + 2 + n].to_vec())
}

fn create(parent: u32, template: &[u8]) -> Command {
    Command::new(0x153).handle(parent).pw(b"").params(
        Buf::new()
            .u16(4)
            .u16(0)
            .u16(0)
            .tpm2b(template)
            .tpm2b(&[])
            .u32(0),
    )
}

fn load(parent: u32, private: &[u8], public: &[u8]) -> Command {
    Command::new(0x157)
        .handle(parent)
        .pw(b"")
        .params(Buf::new().bytes(private).bytes(public))
}

fn sign(key: u32, scheme: u16) -> Command {
    Command::new(0x15D).handle(key).pw(b"").params(
        Buf::new()
            .tpm2b(&[0x5A; 32])
            .u16(scheme)
            .u16(alg::SHA256)
            .u16(0x8024) // TPM_ST_HASHCHECK
            .u32(rh::NULL)
            .tpm2b(&[]),
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(n: usize, f: impl FnMut()) -> Duration {
    time_batched(n, 1, f)
}

/// Median over `n` samples of `batch` calls each, per call: commands that
/// take about a microsecond are timed in batches, or the clock's own cost
/// and resolution would be the measurement.
fn time_batched(n: usize, batch: u32, mut f: impl FnMut()) -> Duration {
    let samples = (0..n)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..batch {
                f();
            }
            t.elapsed() / batch
        })
        .collect();
    median(samples)
}

/// Runs the mix on one TPM; returns (name, median) per command.
fn mix(tpm: &mut dyn Tpm2, rounds: usize) -> Vec<(&'static str, Duration)> {
    ok(
        tpm,
        "Startup",
        &Command::new(0x144).params(Buf::new().u16(0)),
    );
    let mut out = Vec::new();
    for (name, template, n) in [
        (
            "CreatePrimary RSA-2048 EK",
            ek_rsa(),
            rounds.div_ceil(4).max(3),
        ),
        ("CreatePrimary ECC P-256 EK", ek_ecc(), rounds),
    ] {
        let cmd = create_primary(rh::ENDORSEMENT, &template);
        out.push((
            name,
            time(n, || {
                let r = ok(tpm, name, &cmd);
                ok(tpm, "flush", &flush(handle_of(&r)));
            }),
        ));
    }

    // Cold: every iteration derives a new RSA key (a fresh unique field).
    let mut counter = 0u64;
    out.push((
        "CreatePrimary RSA-2048 cold",
        time(rounds.div_ceil(4).max(3), || {
            counter += 1;
            let mut unique = [0u8; 256];
            unique[..8].copy_from_slice(&counter.to_be_bytes());
            let r = ok(
                tpm,
                "cold EK",
                &create_primary(rh::ENDORSEMENT, &ek_rsa_unique(&unique)),
            );
            ok(tpm, "flush", &flush(handle_of(&r)));
        }),
    ));

    let srk = handle_of(&ok(tpm, "SRK", &create_primary(rh::OWNER, &srk())));
    let create_ecc = create(srk, &ecc_signer());
    out.push((
        "Create+Load ECC P-256",
        time(rounds, || {
            let (private, public) = private_public(&ok(tpm, "Create", &create_ecc));
            let h = handle_of(&ok(tpm, "Load", &load(srk, &private, &public)));
            ok(tpm, "flush", &flush(h));
        }),
    ));

    let (private, public) = private_public(&ok(tpm, "Create ECC", &create_ecc));
    let ecc_key = handle_of(&ok(tpm, "Load ECC", &load(srk, &private, &public)));
    let sign_ecc = sign(ecc_key, alg::ECDSA);
    out.push((
        "Sign ECDSA P-256",
        time(rounds, || drop(ok(tpm, "Sign ECDSA", &sign_ecc))),
    ));
    ok(tpm, "flush", &flush(ecc_key)); // three object slots is the usual minimum

    let (private, public) = private_public(&ok(tpm, "Create RSA", &create(srk, &rsa_signer())));
    let rsa_key = handle_of(&ok(tpm, "Load RSA", &load(srk, &private, &public)));
    let sign_rsa = sign(rsa_key, 0x0014);
    out.push((
        "Sign RSA-2048",
        time(rounds, || drop(ok(tpm, "Sign RSA", &sign_rsa))),
    ));
    ok(tpm, "flush", &flush(rsa_key));
    ok(tpm, "flush", &flush(srk));

    let ak = handle_of(&ok(tpm, "AK", &create_primary(rh::ENDORSEMENT, &ak())));
    let quote = Command::new(0x158).handle(ak).pw(b"").params(
        Buf::new()
            .tpm2b(&[7; 32])
            .u16(alg::NULL)
            .pcr_selection(&[(alg::SHA256, &[0, 1, 2, 3, 4, 5, 6, 7])]),
    );
    out.push(("Quote", time(rounds, || drop(ok(tpm, "Quote", &quote)))));

    let extend = Command::new(0x182)
        .handle(16)
        .pw(b"")
        .params(Buf::new().u32(1).u16(alg::SHA256).bytes(&[3; 32]));
    out.push((
        "PCR_Extend SHA-256",
        time_batched(rounds, 200, || drop(ok(tpm, "PCR_Extend", &extend))),
    ));

    let random = Command::new(0x17B).params(Buf::new().u16(32));
    out.push((
        "GetRandom 32",
        time_batched(rounds, 200, || drop(ok(tpm, "GetRandom", &random))),
    ));

    let index = 0x0150_0001;
    let public = Buf::new()
        .u32(index)
        .u16(alg::SHA256)
        .u32(0x0006_0006) // OWNERWRITE|AUTHWRITE|OWNERREAD|AUTHREAD
        .tpm2b(&[])
        .u16(1024)
        .0;
    ok(
        tpm,
        "NV_DefineSpace",
        &Command::new(0x12A)
            .handle(rh::OWNER)
            .pw(b"")
            .params(Buf::new().tpm2b(&[]).tpm2b(&public)),
    );
    let write = Command::new(0x137)
        .handle(rh::OWNER)
        .handle(index)
        .pw(b"")
        .params(Buf::new().tpm2b(&[0xA5; 1024]).u16(0));
    out.push((
        "NV_Write 1 KiB",
        time_batched(rounds, 200, || drop(ok(tpm, "NV_Write", &write))),
    ));
    out
}

fn main() {
    let rounds: usize = std::env::var("RIVET_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut engine = Tpm::manufacture(Host(Instant::now())).expect("manufacture");
    let ours = mix(&mut engine, rounds);
    let mut reference = Reference::manufacture();
    let theirs = mix(&mut reference, rounds);

    println!(
        "{:<28} {:>12} {:>12} {:>8}  target",
        "command (median)", "engine", "libtpms", "ratio"
    );
    for ((name, a), (_, b)) in ours.iter().zip(&theirs) {
        let ratio = a.as_secs_f64() / b.as_secs_f64();
        let target = if name.starts_with("CreatePrimary RSA-2048 EK") {
            0.5
        } else {
            1.0
        };
        println!(
            "{name:<28} {:>10.1}us {:>10.1}us {ratio:>7.2}x  {}",
            a.as_secs_f64() * 1e6,
            b.as_secs_f64() * 1e6,
            if ratio <= target {
                format!("<= {target}x met")
            } else {
                format!("> {target}x MISSED")
            }
        );
    }
}
