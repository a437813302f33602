//! The fuzz seeds with session traffic (tpm/fuzz/seeds/execute/session-*),
//! built by driving the engine on the fuzz target's platform so that the
//! nonces, HMACs and encrypted parameters in them are the ones the target
//! will see. `cargo test -p rivet-tpm fuzz_seeds` checks the files are up to
//! date; with `RIVET_WRITE_SEEDS=1` it rewrites them.

use alloc::vec::Vec;
use std::path::PathBuf;

use crate::alg::kdf::kdfa;
use crate::alg::sym::{Direction, SymMode, aes};
use crate::crypto::HashAlg;
use crate::{Platform, PlatformError, Tpm};

const SHA256: HashAlg = HashAlg::Sha256;
const OWNER: u32 = 0x4000_0001;
const ENDORSEMENT: u32 = 0x4000_000B;
const NULL: u32 = 0x4000_0007;
const STARTUP_CLEAR: [u8; 12] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0];

/// The same as `rivet_tpm_fuzz::FuzzPlatform`.
struct FuzzPlatform {
    rng: u64,
    clock: u64,
}

impl Platform for FuzzPlatform {
    fn entropy(&mut self, buf: &mut [u8]) -> Result<(), PlatformError> {
        for b in buf {
            self.rng = self
                .rng
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            *b = (self.rng >> 56) as u8;
        }
        Ok(())
    }
    fn now_ms(&mut self) -> u64 {
        self.clock += 3;
        self.clock
    }
    fn commit(&mut self, _state: &[u8]) -> Result<(), PlatformError> {
        Ok(())
    }
}

fn cmd(code: u32, handles: &[u32], area: Option<&[u8]>, params: &[u8]) -> Vec<u8> {
    let tag: u16 = if area.is_some() { 0x8002 } else { 0x8001 };
    let mut c = tag.to_be_bytes().to_vec();
    c.extend_from_slice(&[0; 4]);
    c.extend_from_slice(&code.to_be_bytes());
    for h in handles {
        c.extend_from_slice(&h.to_be_bytes());
    }
    if let Some(a) = area {
        c.extend_from_slice(&u32::try_from(a.len()).unwrap().to_be_bytes());
        c.extend_from_slice(a);
    }
    c.extend_from_slice(params);
    let n = u32::try_from(c.len()).unwrap().to_be_bytes();
    c[2..6].copy_from_slice(&n);
    c
}

fn tpm2b(v: &[u8]) -> Vec<u8> {
    let mut o = u16::try_from(v.len()).unwrap().to_be_bytes().to_vec();
    o.extend_from_slice(v);
    o
}

/// A loaded session as the caller tracks it.
pub(crate) struct Sess {
    pub handle: u32,
    pub nonce_tpm: Vec<u8>,
}

/// One seed: the engine it drives and the commands sent so far.
pub(crate) struct Seed {
    tpm: Tpm<FuzzPlatform>,
    sent: Vec<(u8, Vec<u8>)>,
    counter: u8,
}

impl Seed {
    pub fn new() -> Self {
        let mut tpm = Tpm::manufacture(FuzzPlatform {
            rng: 0x5eed,
            clock: 0,
        })
        .unwrap();
        let r = tpm.execute(0, &STARTUP_CLEAR);
        assert_eq!(&r[6..10], &[0; 4]);
        Self {
            tpm,
            sent: Vec::new(),
            counter: 0,
        }
    }

    /// Send a command that must succeed; returns the response.
    pub fn send(&mut self, c: Vec<u8>) -> Vec<u8> {
        let r = self.tpm.execute(0, &c);
        let rc = u32::from_be_bytes([r[6], r[7], r[8], r[9]]);
        assert_eq!(rc, 0, "seed command {c:02x?}");
        self.sent.push((0, c));
        r
    }

    /// StartAuthSession(tpmKey NULL, bind) of `kind` with `sym` (TPMT_SYM_DEF).
    pub fn start(&mut self, bind: u32, kind: u8, sym: &[u8]) -> Sess {
        let nonce = self.nonce();
        let mut p = tpm2b(&nonce);
        p.extend_from_slice(&[0, 0, kind]);
        p.extend_from_slice(sym);
        p.extend_from_slice(&0x000Bu16.to_be_bytes());
        let r = self.send(cmd(0x176, &[NULL, bind], None, &p));
        Sess {
            handle: u32::from_be_bytes([r[10], r[11], r[12], r[13]]),
            nonce_tpm: r[16..].to_vec(),
        }
    }

    fn nonce(&mut self) -> Vec<u8> {
        self.counter = self.counter.wrapping_add(1);
        alloc::vec![self.counter; 16]
    }

    /// A command under one unbound, unsalted HMAC session (sessionKey empty)
    /// authorizing the first handle with `auth`, or none (`auth` None). With
    /// `decrypt` set the first parameter (a TPM2B) is AES-128-CFB encrypted.
    /// Returns the response parameters.
    #[allow(clippy::too_many_arguments)]
    pub fn hmac(
        &mut self,
        code: u32,
        handles: &[u32],
        auth: Option<&[u8]>,
        s: &mut Sess,
        attrs: u8,
        params: &[u8],
        response_handles: usize,
    ) -> Vec<u8> {
        let nonce = self.nonce();
        let key = auth.unwrap_or_default();
        let mut params = params.to_vec();
        if attrs & 0x20 != 0 {
            let kv = kdfa(SHA256, key, b"CFB", &nonce, &s.nonce_tpm, 256).unwrap();
            let size = usize::from(u16::from_be_bytes([params[0], params[1]]));
            let out = aes(
                Direction::Encrypt,
                SymMode::Cfb,
                &kv[..16],
                &kv[16..],
                &params[2..2 + size],
            )
            .unwrap();
            params[2..2 + size].copy_from_slice(&out.data[..size]);
        }
        let mut cp: Vec<&[u8]> = Vec::new();
        let code_b = code.to_be_bytes();
        let names: Vec<[u8; 4]> = handles.iter().map(|h| h.to_be_bytes()).collect();
        cp.push(&code_b);
        cp.extend(names.iter().map(|n| &n[..]));
        cp.push(&params);
        let cp = SHA256.digest(&cp);
        let mac = SHA256.hmac(key, &[&cp, &nonce, &s.nonce_tpm, &[attrs]]);
        let mut area = s.handle.to_be_bytes().to_vec();
        area.extend_from_slice(&tpm2b(&nonce));
        area.push(attrs);
        area.extend_from_slice(&tpm2b(&mac));
        let r = self.send(cmd(code, handles, Some(&area), &params));
        let at = 10 + 4 * response_handles;
        let psize = u32::from_be_bytes(r[at..at + 4].try_into().unwrap()) as usize;
        let out = r[at + 4..at + 4 + psize].to_vec();
        let n = at + 4 + psize;
        let nlen = usize::from(u16::from_be_bytes([r[n], r[n + 1]]));
        s.nonce_tpm = r[n + 2..n + 2 + nlen].to_vec();
        out
    }

    /// A command without sessions that must succeed.
    pub fn plain(&mut self, code: u32, handles: &[u32], params: &[u8]) -> Vec<u8> {
        self.send(cmd(code, handles, None, params))
    }

    /// The fuzz input: flags 0 (automatic Startup), then the commands.
    pub fn input(&self) -> Vec<u8> {
        let mut out = alloc::vec![0u8];
        for (locality, c) in &self.sent {
            out.push(*locality);
            out.extend_from_slice(&u16::try_from(c.len()).unwrap().to_be_bytes());
            out.extend_from_slice(c);
        }
        out
    }
}

const AES128_CFB: [u8; 6] = [0x00, 0x06, 0x00, 0x80, 0x00, 0x43];
const SYM_NULL: [u8; 2] = [0x00, 0x10];
/// TPML_PCR_SELECTION: SHA-256, PCRs 0 and 1.
const PCR_SEL: [u8; 10] = [0, 0, 0, 1, 0, 0x0B, 3, 3, 0, 0];

/// HMAC session: authorizations with correct HMACs (empty, then non-empty
/// authValue), parameter encryption both ways, audit and
/// GetSessionAuditDigest, ContextSave/Load, Flush.
fn session_hmac() -> Vec<u8> {
    let mut seed = Seed::new();
    let mut s = seed.start(NULL, 0, &AES128_CFB);
    // HierarchyChangeAuth(OWNER, "owner"), newAuth encrypted (decrypt).
    seed.hmac(
        0x129,
        &[OWNER],
        Some(b""),
        &mut s,
        0x21,
        &tpm2b(b"owner"),
        0,
    );
    // GetRandom with an encrypted response, the session authorizing nothing.
    seed.hmac(0x17B, &[], None, &mut s, 0x41, &16u16.to_be_bytes(), 0);
    // Audited too (audit, auditExclusive), then the signed report of it
    // (GetSessionAuditDigest with TPM_RH_NULL as the signer).
    seed.hmac(0x17B, &[], None, &mut s, 0xC3, &16u16.to_be_bytes(), 0);
    let pw = [0x40, 0, 0, 9, 0, 0, 0, 0, 0];
    let area = [pw, pw].concat();
    let mut p = tpm2b(b"q");
    p.extend_from_slice(&SYM_NULL);
    seed.send(cmd(0x14D, &[ENDORSEMENT, NULL, s.handle], Some(&area), &p));
    // Back to an empty owner auth, HMAC keyed by "owner".
    seed.hmac(
        0x129,
        &[OWNER],
        Some(b"owner"),
        &mut s,
        0x01,
        &tpm2b(b""),
        0,
    );
    // ContextSave and ContextLoad of the session, then FlushContext.
    let r = seed.plain(0x162, &[s.handle], &[]);
    seed.plain(0x161, &[], &r[10..]);
    seed.plain(0x165, &[], &s.handle.to_be_bytes());
    seed.input()
}

/// Policy session: PolicyPCR, PolicyCommandCode, PolicyGetDigest,
/// PolicyRestart, ContextSave and FlushContext of the saved session.
fn session_policy() -> Vec<u8> {
    let mut seed = Seed::new();
    let s = seed.start(NULL, 1, &SYM_NULL);
    let mut p = tpm2b(&[]);
    p.extend_from_slice(&PCR_SEL);
    seed.plain(0x17F, &[s.handle], &p);
    seed.plain(0x16C, &[s.handle], &0x15Eu32.to_be_bytes());
    seed.plain(0x189, &[s.handle], &[]);
    seed.plain(0x180, &[s.handle], &[]);
    seed.plain(0x162, &[s.handle], &[]);
    seed.plain(0x165, &[], &s.handle.to_be_bytes());
    seed.input()
}

/// Trial session computing a PCR + command-code policy, and an HMAC session
/// bound to the endorsement hierarchy with XOR parameter encryption.
fn session_trial() -> Vec<u8> {
    let mut seed = Seed::new();
    let t = seed.start(NULL, 3, &SYM_NULL);
    let mut p = tpm2b(&[0x11; 32]);
    p.extend_from_slice(&PCR_SEL);
    seed.plain(0x17F, &[t.handle], &p);
    seed.plain(0x16C, &[t.handle], &0x157u32.to_be_bytes());
    seed.plain(0x189, &[t.handle], &[]);
    seed.plain(0x165, &[], &t.handle.to_be_bytes());
    let _ = seed.start(ENDORSEMENT, 0, &[0x00, 0x0A, 0x00, 0x0B]);
    seed.input()
}

pub(crate) fn session_seeds() -> Vec<(&'static str, Vec<u8>)> {
    alloc::vec![
        ("session-hmac", session_hmac()),
        ("session-policy", session_policy()),
        ("session-trial", session_trial()),
    ]
}

#[test]
fn fuzz_seeds_with_sessions_are_up_to_date() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/execute");
    let write = std::env::var_os("RIVET_WRITE_SEEDS").is_some();
    for (name, input) in session_seeds() {
        let path = dir.join(name);
        if write {
            std::fs::write(&path, &input).unwrap();
        } else {
            let on_disk = std::fs::read(&path).unwrap_or_default();
            assert!(
                on_disk == input,
                "{} is stale: rerun with RIVET_WRITE_SEEDS=1",
                path.display()
            );
        }
    }
}
