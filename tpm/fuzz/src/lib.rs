//! What the fuzz target does with an input, shared with the seed writer.
//!
//! Input: one flags byte, then commands, each `{u8 locality, u16 length
//! (big-endian), bytes}`; a last, short chunk is sent as it is. Flags bit 0
//! skips the automatic Startup(CLEAR), bit 1 adds a power cycle halfway.

use rivet_tpm::{Platform, PlatformError, Tpm};

/// Deterministic, so a crash reproduces from its input alone.
pub struct FuzzPlatform {
    rng: u64,
    clock: u64,
    /// Every committed blob must restore: checked after each commit.
    pub last_commit: Vec<u8>,
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
    fn commit(&mut self, state: &[u8]) -> Result<(), PlatformError> {
        self.last_commit = state.to_vec();
        Ok(())
    }
}

pub const STARTUP_CLEAR: [u8; 12] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0];

/// Splits an input into (locality, command) pairs.
pub fn commands(data: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let locality = rest[0];
        if rest.len() < 3 {
            out.push((locality, &rest[1..]));
            break;
        }
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        let end = (3 + len).min(rest.len());
        out.push((locality, &rest[3..end]));
        rest = &rest[end..];
    }
    out
}

/// Encodes commands in the input format.
pub fn encode(flags: u8, commands: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![flags];
    for (locality, cmd) in commands {
        out.push(*locality);
        out.extend_from_slice(&u16::try_from(cmd.len()).unwrap().to_be_bytes());
        out.extend_from_slice(cmd);
    }
    out
}

/// Panics if the response is not a well-formed TPM response.
pub fn check_response(command: &[u8], response: &[u8]) {
    assert!(
        response.len() >= 10,
        "short response {response:02x?} to {command:02x?}"
    );
    let tag = u16::from_be_bytes([response[0], response[1]]);
    let size = u32::from_be_bytes(response[2..6].try_into().unwrap());
    let rc = u32::from_be_bytes(response[6..10].try_into().unwrap());
    assert_eq!(
        size as usize,
        response.len(),
        "size field vs length, command {command:02x?}"
    );
    let tpm12_bad_tag = tag == 0x00C4 && rc == 0x1E && response.len() == 10;
    assert!(
        tag == 0x8001 || tag == 0x8002 || tpm12_bad_tag,
        "bad tag {tag:#x}, command {command:02x?}"
    );
    if rc != 0 {
        assert_eq!(
            response.len(),
            10,
            "error {rc:#x} with a body, command {command:02x?}"
        );
    }
    assert!(
        response.len() <= 4096,
        "response over 4 KiB, command {command:02x?}"
    );
}

/// Runs one fuzz input.
pub fn run(data: &[u8]) {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let platform = FuzzPlatform {
        rng: 0x5eed,
        clock: 0,
        last_commit: Vec::new(),
    };
    let mut tpm = Tpm::manufacture(platform).expect("manufacture");
    if flags & 1 == 0 {
        let r = tpm.execute(0, &STARTUP_CLEAR);
        check_response(&STARTUP_CLEAR, &r);
    }
    let cmds = commands(body);
    let half = cmds.len() / 2;
    for (i, (locality, cmd)) in cmds.into_iter().enumerate() {
        if flags & 2 != 0 && i == half {
            tpm.power_on();
        }
        let r = tpm.execute(locality, cmd);
        check_response(cmd, &r);
    }
    // Whatever the commands did, the state must round-trip.
    let blob = tpm.state();
    let platform = FuzzPlatform {
        rng: 1,
        clock: 0,
        last_commit: Vec::new(),
    };
    let restored = Tpm::restore(platform, &blob).expect("own state blob refused");
    assert_eq!(restored.state(), blob, "state does not round-trip");
}

/// Runs one restore fuzz input: a candidate state blob.
pub fn restore(data: &[u8]) {
    let platform = FuzzPlatform {
        rng: 7,
        clock: 0,
        last_commit: Vec::new(),
    };
    let Ok(mut tpm) = Tpm::restore(platform, data) else {
        return;
    };
    let r = tpm.execute(0, &STARTUP_CLEAR);
    check_response(&STARTUP_CLEAR, &r);
    let blob = tpm.state();
    let platform = FuzzPlatform {
        rng: 8,
        clock: 0,
        last_commit: Vec::new(),
    };
    let again = Tpm::restore(platform, &blob).expect("state() of an accepted blob refused");
    assert_eq!(again.state(), blob, "state does not round-trip");
}

/// A valid state blob after a few NV and hierarchy changes (restore seed).
pub fn sample_state() -> Vec<u8> {
    let seed = include_bytes!("../seeds/execute/nv");
    let platform = FuzzPlatform {
        rng: 0x5eed,
        clock: 0,
        last_commit: Vec::new(),
    };
    let mut tpm = Tpm::manufacture(platform).expect("manufacture");
    tpm.execute(0, &STARTUP_CLEAR);
    for (locality, cmd) in commands(&seed[1..]) {
        tpm.execute(locality, cmd);
    }
    tpm.state()
}
