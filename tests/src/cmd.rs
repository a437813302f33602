//! Building raw TPM 2.0 commands and reading responses, for tests that talk
//! to a TPM below tpm2-tools (the differential harness, the fuzz seeds).
//! Deliberately independent of the engine's own marshalling code.

pub mod cc {
    pub const NV_UNDEFINE_SPACE: u32 = 0x122;
    pub const START_AUTH_SESSION: u32 = 0x176;
    pub const POLICY_AUTH_VALUE: u32 = 0x16B;
    pub const POLICY_COMMAND_CODE: u32 = 0x16C;
    pub const POLICY_CP_HASH: u32 = 0x16E;
    pub const POLICY_LOCALITY: u32 = 0x16F;
    pub const POLICY_OR: u32 = 0x171;
    pub const POLICY_PCR: u32 = 0x17F;
    pub const POLICY_RESTART: u32 = 0x180;
    pub const POLICY_GET_DIGEST: u32 = 0x189;
    pub const POLICY_PASSWORD: u32 = 0x18C;
    pub const POLICY_NV_WRITTEN: u32 = 0x18F;
    pub const HMAC: u32 = 0x155;
    pub const LOAD_EXTERNAL: u32 = 0x167;
    pub const READ_PUBLIC: u32 = 0x173;
    pub const VERIFY_SIGNATURE: u32 = 0x177;
    pub const ENCRYPT_DECRYPT_2: u32 = 0x193;
    pub const CLOCK_SET: u32 = 0x128;
    pub const CLOCK_RATE_ADJUST: u32 = 0x130;
    pub const NV_GLOBAL_WRITE_LOCK: u32 = 0x132;
    pub const DICTIONARY_ATTACK_LOCK_RESET: u32 = 0x139;
    pub const DICTIONARY_ATTACK_PARAMETERS: u32 = 0x13A;
    pub const EVENT_SEQUENCE_COMPLETE: u32 = 0x185;
    pub const CLEAR: u32 = 0x126;
    pub const CLEAR_CONTROL: u32 = 0x127;
    pub const HIERARCHY_CHANGE_AUTH: u32 = 0x129;
    pub const NV_DEFINE_SPACE: u32 = 0x12A;
    pub const PCR_ALLOCATE: u32 = 0x12B;
    pub const SELF_TEST: u32 = 0x143;
    pub const STARTUP: u32 = 0x144;
    pub const SHUTDOWN: u32 = 0x145;
    pub const NV_WRITE: u32 = 0x137;
    pub const NV_INCREMENT: u32 = 0x134;
    pub const NV_SET_BITS: u32 = 0x135;
    pub const NV_EXTEND: u32 = 0x136;
    pub const NV_WRITE_LOCK: u32 = 0x138;
    pub const NV_READ: u32 = 0x14E;
    pub const NV_READ_LOCK: u32 = 0x14F;
    pub const HIERARCHY_CONTROL: u32 = 0x121;
    pub const CREATE_PRIMARY: u32 = 0x131;
    pub const PCR_RESET: u32 = 0x13D;
    pub const SEQUENCE_COMPLETE: u32 = 0x13E;
    pub const INCREMENTAL_SELF_TEST: u32 = 0x142;
    pub const FLUSH_CONTEXT: u32 = 0x165;
    pub const NV_READ_PUBLIC: u32 = 0x169;
    pub const HASH_SEQUENCE_START: u32 = 0x186;
    pub const GET_CAPABILITY: u32 = 0x17A;
    pub const GET_RANDOM: u32 = 0x17B;
    pub const GET_TEST_RESULT: u32 = 0x17C;
    pub const HASH: u32 = 0x17D;
    pub const PCR_READ: u32 = 0x17E;
    pub const PCR_EXTEND: u32 = 0x182;
    pub const PCR_EVENT: u32 = 0x13C;
    pub const READ_CLOCK: u32 = 0x181;
    pub const SEQUENCE_UPDATE: u32 = 0x15C;
    pub const STIR_RANDOM: u32 = 0x146;
    pub const TEST_PARMS: u32 = 0x18A;
}

pub mod alg {
    pub const SHA1: u16 = 0x0004;
    pub const SHA256: u16 = 0x000B;
    pub const SHA384: u16 = 0x000C;
    pub const SHA512: u16 = 0x000D;
    pub const NULL: u16 = 0x0010;
    pub const ECC: u16 = 0x0023;
    pub const RSA: u16 = 0x0001;
    pub const AES: u16 = 0x0006;
    pub const CFB: u16 = 0x0043;
    pub const ECDSA: u16 = 0x0018;
}

pub mod rh {
    pub const OWNER: u32 = 0x4000_0001;
    pub const NULL: u32 = 0x4000_0007;
    pub const PW: u32 = 0x4000_0009;
    pub const LOCKOUT: u32 = 0x4000_000A;
    pub const ENDORSEMENT: u32 = 0x4000_000B;
    pub const PLATFORM: u32 = 0x4000_000C;
}

pub const ST_NO_SESSIONS: u16 = 0x8001;
pub const ST_SESSIONS: u16 = 0x8002;

/// A byte buffer with big-endian writers.
#[derive(Default, Clone, Debug)]
pub struct Buf(pub Vec<u8>);

impl Buf {
    pub fn new() -> Self {
        Self(Vec::new())
    }
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    /// A TPM2B: u16 size then the bytes.
    pub fn tpm2b(self, b: &[u8]) -> Self {
        self.u16(u16::try_from(b.len()).unwrap()).bytes(b)
    }
    /// TPML_PCR_SELECTION with 3-byte bitmaps.
    pub fn pcr_selection(mut self, banks: &[(u16, &[u32])]) -> Self {
        self = self.u32(u32::try_from(banks.len()).unwrap());
        for (alg, pcrs) in banks {
            let mut bits = [0u8; 3];
            for &p in *pcrs {
                bits[(p / 8) as usize] |= 1 << (p % 8);
            }
            self = self.u16(*alg).u8(3).bytes(&bits);
        }
        self
    }
}

/// One command, before marshalling.
#[derive(Clone, Debug)]
pub struct Command {
    pub code: u32,
    pub handles: Vec<u32>,
    /// Password authorizations (TPM_RS_PW), one per authorized handle.
    pub passwords: Vec<Vec<u8>>,
    pub params: Vec<u8>,
}

impl Command {
    pub fn new(code: u32) -> Self {
        Self {
            code,
            handles: Vec::new(),
            passwords: Vec::new(),
            params: Vec::new(),
        }
    }
    pub fn handle(mut self, h: u32) -> Self {
        self.handles.push(h);
        self
    }
    /// Adds a password session with this password.
    pub fn pw(mut self, password: &[u8]) -> Self {
        self.passwords.push(password.to_vec());
        self
    }
    pub fn params(mut self, b: Buf) -> Self {
        self.params = b.0;
        self
    }
    pub fn bytes(&self) -> Vec<u8> {
        let tag = if self.passwords.is_empty() {
            ST_NO_SESSIONS
        } else {
            ST_SESSIONS
        };
        let mut body = Buf::new();
        for h in &self.handles {
            body = body.u32(*h);
        }
        if !self.passwords.is_empty() {
            let mut auth = Buf::new();
            for pw in &self.passwords {
                auth = auth.u32(rh::PW).tpm2b(&[]).u8(0).tpm2b(pw);
            }
            body = body
                .u32(u32::try_from(auth.0.len()).unwrap())
                .bytes(&auth.0);
        }
        body = body.bytes(&self.params);
        let size = u32::try_from(body.0.len() + 10).unwrap();
        Buf::new()
            .u16(tag)
            .u32(size)
            .u32(self.code)
            .bytes(&body.0)
            .0
    }
}

/// The response code of a response (TPM_RC_SUCCESS = 0).
pub fn rc(response: &[u8]) -> u32 {
    response
        .get(6..10)
        .map_or(u32::MAX, |b| u32::from_be_bytes(b.try_into().unwrap()))
}

/// Checks the response header: at least 10 bytes, size field equal to the
/// length, a valid tag, and an error response exactly 10 bytes long with
/// TPM_ST_NO_SESSIONS.
pub fn check_well_formed(response: &[u8]) -> Result<(), String> {
    if response.len() < 10 {
        return Err(format!(
            "response of {} bytes is shorter than a header",
            response.len()
        ));
    }
    let tag = u16::from_be_bytes([response[0], response[1]]);
    let size = u32::from_be_bytes(response[2..6].try_into().unwrap());
    if size as usize != response.len() {
        return Err(format!("header size {size} but {} bytes", response.len()));
    }
    // A TPM 1.2-style command (tag 0x00C1) gets a 1.2-style TPM_RC_BAD_TAG
    // answer, as the reference implementation gives.
    if tag == 0x00C4 && response.len() == 10 && rc(response) == 0x1E {
        return Ok(());
    }
    if tag != ST_NO_SESSIONS && tag != ST_SESSIONS {
        return Err(format!("bad tag {tag:#06x}"));
    }
    if rc(response) != 0 && (response.len() != 10 || tag != ST_NO_SESSIONS) {
        return Err(format!(
            "error {:#x} with a body or tag {tag:#06x}",
            rc(response)
        ));
    }
    Ok(())
}
