//! The Rivet TPM 2.0 engine: a platform-independent TPM (TCG TPM 2.0 Library
//! spec, parts 1-3) that needs only entropy, a clock and a place to commit its
//! state blob. `no_std` + `alloc`, no `unsafe`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod alg;
mod auth;
pub mod client;
mod command;
mod crypto;
mod dispatch;
mod drbg;
mod hierarchy;
mod key;
mod marshal;
mod object;
mod pcr;
mod public;
// Spec tables are complete on purpose; later parts use the rest.
#[allow(dead_code)]
mod rc;
mod session;
#[allow(dead_code)]
mod spec;
mod state;

#[cfg(test)]
mod fuzzseeds;
#[cfg(test)]
mod testutil;

use alloc::vec::Vec;
use core::fmt;

pub use state::StateError;

use crate::drbg::Drbg;
use crate::object::Objects;
use crate::pcr::PcrBanks;
use crate::session::Sessions;
use crate::state::{PersistentState, SEED_LEN};

/// How often (ms) Clock is saved even without other changes (TPM_PT_CLOCK_UPDATE).
pub(crate) const CLOCK_UPDATE_MS: u64 = 0x0040_0000;

/// What the engine needs from the machine it runs on.
pub trait Platform {
    /// Fill `buf` with entropy from the platform's source; an Err puts the TPM in failure mode.
    fn entropy(&mut self, buf: &mut [u8]) -> Result<(), PlatformError>;
    /// Milliseconds on a monotonic clock (arbitrary epoch).
    fn now_ms(&mut self) -> u64;
    /// Persist the state blob; called after every change of persistent state.
    fn commit(&mut self, state: &[u8]) -> Result<(), PlatformError>;
}

/// A platform service failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlatformError(pub &'static str);

impl fmt::Display for PlatformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "platform error: {}", self.0)
    }
}

impl core::error::Error for PlatformError {}

/// Why a TPM could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The platform's entropy source failed while generating seeds.
    Entropy(PlatformError),
    /// The first state commit failed.
    Commit(PlatformError),
    /// The built-in known-answer tests failed.
    SelfTest,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Entropy(e) => write!(f, "manufacture failed: entropy source: {e}"),
            Self::Commit(e) => write!(f, "manufacture failed: state commit: {e}"),
            Self::SelfTest => f.write_str("manufacture failed: cryptographic self test"),
        }
    }
}

impl core::error::Error for Error {}

/// State that lives only while powered (reset by `_TPM_Init`).
pub(crate) struct Volatile {
    pub started: bool,
    pub pcrs: PcrBanks,
    pub objects: Objects,
    pub sessions: Sessions,
    pub ph_enable: bool,
    pub sh_enable: bool,
    pub eh_enable: bool,
    pub ph_enable_nv: bool,
    pub platform_auth: Vec<u8>,
    /// now_ms at _TPM_Init (TPMS_TIME_INFO.time counts from here).
    pub init_ms: u64,
    /// (clock, now_ms) pair the running Clock is measured from.
    pub clock_anchor: (u64, u64),
    /// Last time the DA counters were healed (clock ms).
    pub da_heal_ms: u64,
    /// Clock ms when lockoutAuth was disabled by a failure.
    pub lockout_disabled_at: u64,
    /// PCR_Allocate succeeded since Startup: Shutdown(STATE) is refused.
    pub pcr_reconfig: bool,
    /// Startup locality (PCR 0's last byte).
    pub startup_locality: u8,
    /// The clock value of the current command (sampled once per command).
    pub now_clock: u64,
    /// Why the TPM is in failure mode, if it is.
    pub failure: Option<&'static str>,
    /// TPMS_CLOCK_INFO.safe: the last shutdown was orderly (or Clear ran).
    pub clock_safe: bool,
    /// TPMA_STARTUP_CLEAR.orderly: the last Startup followed a Shutdown.
    pub orderly_startup: bool,
    /// Key state: null hierarchy secrets, persistent-object and primary-key caches.
    pub keys: crate::key::KeyState,
}

impl Volatile {
    fn new(ps: &PersistentState, now: u64) -> Self {
        Self {
            started: false,
            pcrs: PcrBanks::new(ps.pcr_allocated),
            objects: Objects::default(),
            sessions: Sessions::default(),
            ph_enable: true,
            sh_enable: true,
            eh_enable: true,
            ph_enable_nv: true,
            platform_auth: Vec::new(),
            init_ms: now,
            clock_anchor: (ps.clock, now),
            da_heal_ms: ps.clock,
            lockout_disabled_at: ps.clock,
            pcr_reconfig: false,
            startup_locality: 0,
            now_clock: ps.clock,
            failure: None,
            clock_safe: true,
            orderly_startup: false,
            keys: Default::default(),
        }
    }
}

/// Everything the commands work on, apart from the platform.
pub(crate) struct Core {
    pub ps: PersistentState,
    pub vol: Volatile,
    pub drbg: Option<Drbg>,
    /// Persistent state changed by the current command: commit it.
    pub dirty: bool,
}

/// A TPM 2.0 on a platform.
pub struct Tpm<P: Platform> {
    platform: P,
    core: Core,
}

impl<P: Platform> Tpm<P> {
    /// A factory-fresh TPM: new seeds from entropy, empty NV. Powered on, waiting for Startup.
    pub fn manufacture(mut platform: P) -> Result<Self, Error> {
        if !crypto::self_test() {
            return Err(Error::SelfTest);
        }
        let mut seeds = [[0u8; SEED_LEN]; 6];
        for s in &mut seeds {
            platform.entropy(s).map_err(Error::Entropy)?;
        }
        let ps = PersistentState::fresh(&seeds);
        zeroize::Zeroize::zeroize(&mut seeds);
        let now = platform.now_ms();
        let mut tpm = Self {
            core: Core {
                vol: Volatile::new(&ps, now),
                ps,
                drbg: None,
                dirty: false,
            },
            platform,
        };
        tpm.platform
            .commit(&tpm.core.ps.to_blob())
            .map_err(Error::Commit)?;
        tpm.power_on();
        Ok(tpm)
    }

    /// A TPM from a state blob (refuses a corrupt/truncated/unknown-version blob). Powered on, waiting for Startup.
    pub fn restore(mut platform: P, state: &[u8]) -> Result<Self, StateError> {
        let ps = PersistentState::from_blob(state)?;
        let now = platform.now_ms();
        let mut tpm = Self {
            core: Core {
                vol: Volatile::new(&ps, now),
                ps,
                drbg: None,
                dirty: false,
            },
            platform,
        };
        tpm.power_on();
        Ok(tpm)
    }

    /// _TPM_Init (power cycle / reset): volatile state dropped, Startup required next.
    pub fn power_on(&mut self) {
        let now = self.platform.now_ms();
        self.core.vol = Volatile::new(&self.core.ps, now);
        self.core.drbg = None;
        if !crypto::self_test() {
            self.core.vol.failure = Some("self test");
            return;
        }
        let mut seed = [0u8; drbg::SEED_LEN];
        match self.platform.entropy(&mut seed) {
            Ok(()) => self.core.drbg = Some(Drbg::new(&seed, b"Rivet TPM DRBG")),
            Err(_) => self.core.vol.failure = Some("entropy source"),
        }
        zeroize::Zeroize::zeroize(&mut seed);
    }

    /// Run one command at a locality (0..=4); always returns a well-formed response (header + body), never panics.
    pub fn execute(&mut self, locality: u8, command: &[u8]) -> Vec<u8> {
        let response = dispatch::execute(&mut self.core, &mut self.platform, locality, command);
        // Clock is saved with every commit, and at least every CLOCK_UPDATE ms.
        if self.core.vol.now_clock.saturating_sub(self.core.ps.clock) >= CLOCK_UPDATE_MS {
            self.core.dirty = true;
        }
        if self.core.dirty {
            self.core.dirty = false;
            self.core.ps.clock = self.core.vol.now_clock;
            if self.platform.commit(&self.core.ps.to_blob()).is_err() {
                self.core.vol.failure = Some("state commit");
                return dispatch::error_response(spec::st::NO_SESSIONS, rc::FAILURE);
            }
        }
        response
    }

    /// The current persistent state blob.
    pub fn state(&self) -> Vec<u8> {
        self.core.ps.to_blob()
    }

    pub fn platform(&self) -> &P {
        &self.platform
    }

    pub fn platform_mut(&mut self) -> &mut P {
        &mut self.platform
    }
}

impl<P: Platform> fmt::Debug for Tpm<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tpm")
            .field("started", &self.core.vol.started)
            .field("failure", &self.core.vol.failure)
            .field("nv_indices", &self.core.ps.nv.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Cmd, platform, rc_of, run, started};

    #[test]
    fn manufacture_commits_and_restore_refuses_bad_blobs() {
        let tpm = Tpm::manufacture(platform()).unwrap();
        assert_eq!(tpm.platform().commits, 1);
        assert_eq!(tpm.platform().last, tpm.state());
        let blob = tpm.state();
        assert!(Tpm::restore(platform(), &blob).is_ok());
        assert_eq!(
            Tpm::restore(platform(), &blob[..blob.len() - 1]).unwrap_err(),
            StateError::Truncated
        );
        let mut bad = blob.clone();
        bad[60] ^= 0x80;
        let err = Tpm::restore(platform(), &bad).unwrap_err();
        assert_eq!(err, StateError::BadChecksum);
        assert!(std::format!("{err}").contains("checksum"));
        let mut p = platform();
        p.fail_entropy = true;
        assert!(matches!(Tpm::manufacture(p), Err(Error::Entropy(_))));
    }

    /// A long run of mixed commands, some valid, some not: every response is
    /// well formed, and after every command the committed blob restores to a
    /// TPM whose persistent state equals the running one.
    #[test]
    fn random_command_mix_keeps_state_consistent() {
        let mut tpm = started();
        let mut seed = 0x9E37_79B9u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let owner = 0x4000_0001;
        for i in 0..400u32 {
            let r = next();
            let idx = 0x0150_0000 + (r % 4);
            let cmd = match r % 12 {
                0 => {
                    let mut p = idx.to_be_bytes().to_vec();
                    p.extend_from_slice(&[0, 0x0B]);
                    let nt = [0u32, 1, 2, 4][(r as usize >> 8) % 4];
                    p.extend_from_slice(&(0x0006_0006u32 | nt << 4).to_be_bytes());
                    p.extend_from_slice(&[0, 0]);
                    p.extend_from_slice(&(if nt == 4 { 32u16 } else { 8 }).to_be_bytes());
                    Cmd::new(0x12A).h(owner).pw(b"").tpm2b(b"").tpm2b(&p)
                }
                1 => Cmd::new(0x137)
                    .h(idx)
                    .h(idx)
                    .pw(b"")
                    .tpm2b(&r.to_be_bytes())
                    .u16(0),
                2 => Cmd::new(0x134).h(owner).h(idx).pw(b""),
                3 => Cmd::new(0x122).h(owner).h(idx).pw(b""),
                4 => Cmd::new(0x14E).h(idx).h(idx).pw(b"").u16(4).u16(0),
                5 => Cmd::new(0x182)
                    .h(r % 25)
                    .pw(b"")
                    .u32(1)
                    .u16(0x0B)
                    .b(&[r as u8; 32]),
                6 => Cmd::new(0x129).h(owner).pw(b"").tpm2b(b""),
                7 => Cmd::new(0x145).u16((r >> 4) as u16 % 3),
                8 => Cmd::new(0x136).h(owner).h(idx).pw(b"").tpm2b(b"e"),
                9 => Cmd::new(0x138).h(idx).h(idx).pw(b""),
                10 => Cmd::new(0x135).h(owner).h(idx).pw(b"").u64(u64::from(r)),
                _ => Cmd::new(0x186).tpm2b(b"").u16(0x0B),
            };
            let locality = (r >> 20) as u8 % 5;
            let resp = tpm.execute(locality, &cmd.bytes());
            rc_of(&resp);
            if i % 50 == 49 {
                tpm.power_on();
                let rc = run(&mut tpm, 0, &Cmd::new(0x144).u16(0)).0;
                assert_eq!(rc, 0);
            }
            let blob = tpm.state();
            assert_eq!(tpm.platform().last, blob, "every change was committed");
            let again = Tpm::restore(platform(), &blob).unwrap();
            assert_eq!(again.core.ps, tpm.core.ps);
        }
    }
}
