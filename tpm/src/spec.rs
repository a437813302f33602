//! Constants from the TPM 2.0 Library spec Part 2 (structures): tags, command
//! codes, handles, algorithm ids, attribute bits, capability and property ids.

pub mod st {
    pub const RSP_COMMAND: u16 = 0x00C4;
    pub const NO_SESSIONS: u16 = 0x8001;
    pub const SESSIONS: u16 = 0x8002;
    pub const HASHCHECK: u16 = 0x8024;
    pub const AUTH_SECRET: u16 = 0x8023;
    pub const AUTH_SIGNED: u16 = 0x8025;
    pub const ATTEST_CERTIFY: u16 = 0x8017;
    pub const ATTEST_QUOTE: u16 = 0x8018;
    pub const ATTEST_TIME: u16 = 0x8019;
    pub const ATTEST_SESSION_AUDIT: u16 = 0x8016;
    pub const ATTEST_CREATION: u16 = 0x801A;
    pub const CREATION: u16 = 0x8021;
    pub const VERIFIED: u16 = 0x8022;
}

pub mod su {
    pub const CLEAR: u16 = 0x0000;
    pub const STATE: u16 = 0x0001;
}

pub mod cc {
    pub const NV_UNDEFINE_SPACE_SPECIAL: u32 = 0x11F;
    pub const HIERARCHY_CONTROL: u32 = 0x121;
    pub const NV_UNDEFINE_SPACE: u32 = 0x122;
    pub const CLEAR: u32 = 0x126;
    pub const CLEAR_CONTROL: u32 = 0x127;
    pub const CLOCK_SET: u32 = 0x128;
    pub const HIERARCHY_CHANGE_AUTH: u32 = 0x129;
    pub const NV_DEFINE_SPACE: u32 = 0x12A;
    pub const PCR_ALLOCATE: u32 = 0x12B;
    pub const CLOCK_RATE_ADJUST: u32 = 0x130;
    pub const NV_GLOBAL_WRITE_LOCK: u32 = 0x132;
    pub const NV_INCREMENT: u32 = 0x134;
    pub const NV_SET_BITS: u32 = 0x135;
    pub const NV_EXTEND: u32 = 0x136;
    pub const NV_WRITE: u32 = 0x137;
    pub const NV_WRITE_LOCK: u32 = 0x138;
    pub const DICTIONARY_ATTACK_LOCK_RESET: u32 = 0x139;
    pub const DICTIONARY_ATTACK_PARAMETERS: u32 = 0x13A;
    pub const NV_CHANGE_AUTH: u32 = 0x13B;
    pub const PCR_EVENT: u32 = 0x13C;
    pub const PCR_RESET: u32 = 0x13D;
    pub const SEQUENCE_COMPLETE: u32 = 0x13E;
    pub const INCREMENTAL_SELF_TEST: u32 = 0x142;
    pub const SELF_TEST: u32 = 0x143;
    pub const STARTUP: u32 = 0x144;
    pub const SHUTDOWN: u32 = 0x145;
    pub const STIR_RANDOM: u32 = 0x146;
    pub const NV_READ: u32 = 0x14E;
    pub const NV_READ_LOCK: u32 = 0x14F;
    pub const SEQUENCE_UPDATE: u32 = 0x15C;
    pub const FLUSH_CONTEXT: u32 = 0x165;
    pub const NV_READ_PUBLIC: u32 = 0x169;
    pub const START_AUTH_SESSION: u32 = 0x176;
    pub const GET_CAPABILITY: u32 = 0x17A;
    pub const GET_RANDOM: u32 = 0x17B;
    pub const GET_TEST_RESULT: u32 = 0x17C;
    pub const HASH: u32 = 0x17D;
    pub const PCR_READ: u32 = 0x17E;
    pub const READ_CLOCK: u32 = 0x181;
    pub const PCR_EXTEND: u32 = 0x182;
    pub const EVENT_SEQUENCE_COMPLETE: u32 = 0x185;
    pub const HASH_SEQUENCE_START: u32 = 0x186;
    pub const TEST_PARMS: u32 = 0x18A;
    // Key commands (part 2).
    pub const EVICT_CONTROL: u32 = 0x120;
    pub const CHANGE_EPS: u32 = 0x124;
    pub const CHANGE_PPS: u32 = 0x125;
    pub const CREATE_PRIMARY: u32 = 0x131;
    pub const ACTIVATE_CREDENTIAL: u32 = 0x147;
    pub const CERTIFY: u32 = 0x148;
    pub const CERTIFY_CREATION: u32 = 0x14A;
    pub const GET_TIME: u32 = 0x14C;
    pub const GET_SESSION_AUDIT_DIGEST: u32 = 0x14D;
    pub const OBJECT_CHANGE_AUTH: u32 = 0x150;
    pub const CREATE: u32 = 0x153;
    pub const ECDH_ZGEN: u32 = 0x154;
    pub const HMAC: u32 = 0x155;
    pub const LOAD: u32 = 0x157;
    pub const QUOTE: u32 = 0x158;
    pub const RSA_DECRYPT: u32 = 0x159;
    pub const HMAC_START: u32 = 0x15B;
    pub const SIGN: u32 = 0x15D;
    pub const UNSEAL: u32 = 0x15E;
    pub const CONTEXT_LOAD: u32 = 0x161;
    pub const CONTEXT_SAVE: u32 = 0x162;
    pub const ECDH_KEYGEN: u32 = 0x163;
    pub const ENCRYPT_DECRYPT: u32 = 0x164;
    pub const LOAD_EXTERNAL: u32 = 0x167;
    pub const MAKE_CREDENTIAL: u32 = 0x168;
    pub const READ_PUBLIC: u32 = 0x173;
    pub const RSA_ENCRYPT: u32 = 0x174;
    pub const VERIFY_SIGNATURE: u32 = 0x177;
    pub const CREATE_LOADED: u32 = 0x191;
    pub const ENCRYPT_DECRYPT_2: u32 = 0x193;
    pub const POLICY_SECRET: u32 = 0x151;
    pub const POLICY_AUTH_VALUE: u32 = 0x16B;
    pub const POLICY_NV_WRITTEN: u32 = 0x18F;
    pub const POLICY_CP_HASH: u32 = 0x16E;
    pub const POLICY_AUTHORIZE: u32 = 0x16A;
    pub const POLICY_COMMAND_CODE: u32 = 0x16C;
    pub const POLICY_LOCALITY: u32 = 0x16F;
    pub const POLICY_OR: u32 = 0x171;
    pub const POLICY_PCR: u32 = 0x17F;
    pub const POLICY_RESTART: u32 = 0x180;
    pub const POLICY_GET_DIGEST: u32 = 0x189;
    pub const POLICY_PASSWORD: u32 = 0x18C;
    pub const DUPLICATE: u32 = 0x14B;
    pub const REWRAP: u32 = 0x152;
    pub const IMPORT: u32 = 0x156;
    pub const POLICY_SIGNED: u32 = 0x160;
    pub const POLICY_TICKET: u32 = 0x172;
    pub const POLICY_NV: u32 = 0x149;
    pub const POLICY_NAME_HASH: u32 = 0x170;
    pub const POLICY_COUNTER_TIMER: u32 = 0x16D;
    pub const POLICY_AUTHORIZE_NV: u32 = 0x192;
    pub const POLICY_DUPLICATION_SELECT: u32 = 0x188;
    pub const POLICY_PHYSICAL_PRESENCE: u32 = 0x187;
    pub const POLICY_TEMPLATE: u32 = 0x190;
}

pub mod rh {
    pub const OWNER: u32 = 0x4000_0001;
    pub const NULL: u32 = 0x4000_0007;
    pub const PW: u32 = 0x4000_0009;
    pub const LOCKOUT: u32 = 0x4000_000A;
    pub const ENDORSEMENT: u32 = 0x4000_000B;
    pub const PLATFORM: u32 = 0x4000_000C;
    pub const PLATFORM_NV: u32 = 0x4000_000D;
}

pub mod ht {
    pub const PCR: u8 = 0x00;
    pub const NV_INDEX: u8 = 0x01;
    pub const HMAC_SESSION: u8 = 0x02;
    pub const POLICY_SESSION: u8 = 0x03;
    pub const PERMANENT: u8 = 0x40;
    pub const TRANSIENT: u8 = 0x80;
    pub const PERSISTENT: u8 = 0x81;
}

pub fn handle_type(h: u32) -> u8 {
    h.to_be_bytes()[0]
}

pub mod alg {
    pub const SHA1: u16 = 0x0004;
    pub const HMAC: u16 = 0x0005;
    pub const KEYEDHASH: u16 = 0x0008;
    pub const XOR: u16 = 0x000A;
    pub const SHA256: u16 = 0x000B;
    pub const SHA384: u16 = 0x000C;
    pub const NULL: u16 = 0x0010;
    pub const RSA: u16 = 0x0001;
    pub const ECC: u16 = 0x0023;
    pub const SYMCIPHER: u16 = 0x0025;
    pub const KDF1_SP800_108: u16 = 0x0022;
    pub const KDF1_SP800_56A: u16 = 0x0020;
    pub const KDF2: u16 = 0x0021;
    pub const AES: u16 = 0x0006;
    pub const MGF1: u16 = 0x0007;
    pub const RSASSA: u16 = 0x0014;
    pub const RSAES: u16 = 0x0015;
    pub const RSAPSS: u16 = 0x0016;
    pub const OAEP: u16 = 0x0017;
    pub const ECDSA: u16 = 0x0018;
    pub const ECDH: u16 = 0x0019;
    pub const CTR: u16 = 0x0040;
    pub const OFB: u16 = 0x0041;
    pub const CBC: u16 = 0x0042;
    pub const CFB: u16 = 0x0043;
    pub const ECB: u16 = 0x0044;
}

/// TPMA_NV bits (Part 2, 13.4).
pub mod nv {
    pub const PPWRITE: u32 = 1 << 0;
    pub const OWNERWRITE: u32 = 1 << 1;
    pub const AUTHWRITE: u32 = 1 << 2;
    pub const POLICYWRITE: u32 = 1 << 3;
    pub const TPM_NT_SHIFT: u32 = 4;
    pub const TPM_NT_MASK: u32 = 0xF << 4;
    pub const POLICY_DELETE: u32 = 1 << 10;
    pub const WRITELOCKED: u32 = 1 << 11;
    pub const WRITEALL: u32 = 1 << 12;
    pub const WRITEDEFINE: u32 = 1 << 13;
    pub const WRITE_STCLEAR: u32 = 1 << 14;
    pub const GLOBALLOCK: u32 = 1 << 15;
    pub const PPREAD: u32 = 1 << 16;
    pub const OWNERREAD: u32 = 1 << 17;
    pub const AUTHREAD: u32 = 1 << 18;
    pub const POLICYREAD: u32 = 1 << 19;
    pub const NO_DA: u32 = 1 << 25;
    pub const ORDERLY: u32 = 1 << 26;
    pub const CLEAR_STCLEAR: u32 = 1 << 27;
    pub const READLOCKED: u32 = 1 << 28;
    pub const WRITTEN: u32 = 1 << 29;
    pub const PLATFORMCREATE: u32 = 1 << 30;
    pub const READ_STCLEAR: u32 = 1 << 31;
    /// Bits 8, 9 and 20..=24 are reserved.
    pub const RESERVED: u32 = (0b11 << 8) | (0x1F << 20);

    pub const NT_ORDINARY: u32 = 0;
    pub const NT_COUNTER: u32 = 1;
    pub const NT_BITS: u32 = 2;
    pub const NT_EXTEND: u32 = 4;
}

/// TPMA_SESSION bits.
pub mod sa {
    pub const CONTINUE_SESSION: u8 = 1 << 0;
    pub const AUDIT_EXCLUSIVE: u8 = 1 << 1;
    pub const AUDIT_RESET: u8 = 1 << 2;
    pub const DECRYPT: u8 = 1 << 5;
    pub const ENCRYPT: u8 = 1 << 6;
    pub const AUDIT: u8 = 1 << 7;
}

pub mod cap {
    pub const ALGS: u32 = 0;
    pub const HANDLES: u32 = 1;
    pub const COMMANDS: u32 = 2;
    pub const PP_COMMANDS: u32 = 3;
    pub const AUDIT_COMMANDS: u32 = 4;
    pub const PCRS: u32 = 5;
    pub const TPM_PROPERTIES: u32 = 6;
    pub const PCR_PROPERTIES: u32 = 7;
    pub const ECC_CURVES: u32 = 8;
    pub const AUTH_POLICIES: u32 = 9;
}

/// TPM_PT values (Part 2, 6.13).
pub mod pt {
    pub const FIXED: u32 = 0x100;
    pub const FAMILY_INDICATOR: u32 = FIXED;
    pub const LEVEL: u32 = FIXED + 1;
    pub const REVISION: u32 = FIXED + 2;
    pub const DAY_OF_YEAR: u32 = FIXED + 3;
    pub const YEAR: u32 = FIXED + 4;
    pub const MANUFACTURER: u32 = FIXED + 5;
    pub const VENDOR_STRING_1: u32 = FIXED + 6;
    pub const VENDOR_STRING_2: u32 = FIXED + 7;
    pub const VENDOR_STRING_3: u32 = FIXED + 8;
    pub const VENDOR_STRING_4: u32 = FIXED + 9;
    pub const VENDOR_TPM_TYPE: u32 = FIXED + 10;
    pub const FIRMWARE_VERSION_1: u32 = FIXED + 11;
    pub const FIRMWARE_VERSION_2: u32 = FIXED + 12;
    pub const INPUT_BUFFER: u32 = FIXED + 13;
    pub const HR_TRANSIENT_MIN: u32 = FIXED + 14;
    pub const HR_PERSISTENT_MIN: u32 = FIXED + 15;
    pub const HR_LOADED_MIN: u32 = FIXED + 16;
    pub const ACTIVE_SESSIONS_MAX: u32 = FIXED + 17;
    pub const PCR_COUNT: u32 = FIXED + 18;
    pub const PCR_SELECT_MIN: u32 = FIXED + 19;
    pub const CONTEXT_GAP_MAX: u32 = FIXED + 20;
    pub const NV_COUNTERS_MAX: u32 = FIXED + 22;
    pub const NV_INDEX_MAX: u32 = FIXED + 23;
    pub const MEMORY: u32 = FIXED + 24;
    pub const CLOCK_UPDATE: u32 = FIXED + 25;
    pub const CONTEXT_HASH: u32 = FIXED + 26;
    pub const CONTEXT_SYM: u32 = FIXED + 27;
    pub const CONTEXT_SYM_SIZE: u32 = FIXED + 28;
    pub const ORDERLY_COUNT: u32 = FIXED + 29;
    pub const MAX_COMMAND_SIZE: u32 = FIXED + 30;
    pub const MAX_RESPONSE_SIZE: u32 = FIXED + 31;
    pub const MAX_DIGEST: u32 = FIXED + 32;
    pub const MAX_OBJECT_CONTEXT: u32 = FIXED + 33;
    pub const MAX_SESSION_CONTEXT: u32 = FIXED + 34;
    pub const PS_FAMILY_INDICATOR: u32 = FIXED + 35;
    pub const PS_LEVEL: u32 = FIXED + 36;
    pub const PS_REVISION: u32 = FIXED + 37;
    pub const PS_DAY_OF_YEAR: u32 = FIXED + 38;
    pub const PS_YEAR: u32 = FIXED + 39;
    pub const SPLIT_MAX: u32 = FIXED + 40;
    pub const TOTAL_COMMANDS: u32 = FIXED + 41;
    pub const LIBRARY_COMMANDS: u32 = FIXED + 42;
    pub const VENDOR_COMMANDS: u32 = FIXED + 43;
    pub const NV_BUFFER_MAX: u32 = FIXED + 44;
    pub const MODES: u32 = FIXED + 45;
    pub const MAX_CAP_BUFFER: u32 = FIXED + 46;
    pub const FIXED_LAST: u32 = MAX_CAP_BUFFER;

    pub const VAR: u32 = 0x200;
    pub const PERMANENT: u32 = VAR;
    pub const STARTUP_CLEAR: u32 = VAR + 1;
    pub const HR_NV_INDEX: u32 = VAR + 2;
    pub const HR_LOADED: u32 = VAR + 3;
    pub const HR_LOADED_AVAIL: u32 = VAR + 4;
    pub const HR_ACTIVE: u32 = VAR + 5;
    pub const HR_ACTIVE_AVAIL: u32 = VAR + 6;
    pub const HR_TRANSIENT_AVAIL: u32 = VAR + 7;
    pub const HR_PERSISTENT: u32 = VAR + 8;
    pub const HR_PERSISTENT_AVAIL: u32 = VAR + 9;
    pub const NV_COUNTERS: u32 = VAR + 10;
    pub const NV_COUNTERS_AVAIL: u32 = VAR + 11;
    pub const ALGORITHM_SET: u32 = VAR + 12;
    pub const LOADED_CURVES: u32 = VAR + 13;
    pub const LOCKOUT_COUNTER: u32 = VAR + 14;
    pub const MAX_AUTH_FAIL: u32 = VAR + 15;
    pub const LOCKOUT_INTERVAL: u32 = VAR + 16;
    pub const LOCKOUT_RECOVERY: u32 = VAR + 17;
    pub const NV_WRITE_RECOVERY: u32 = VAR + 18;
    pub const AUDIT_COUNTER_0: u32 = VAR + 19;
    pub const AUDIT_COUNTER_1: u32 = VAR + 20;
    pub const VAR_LAST: u32 = AUDIT_COUNTER_1;
}

/// TPM_PT_PCR values (Part 2, 6.14).
pub mod pt_pcr {
    pub const SAVE: u32 = 0x00;
    pub const EXTEND_L0: u32 = 0x01;
    pub const RESET_L4: u32 = 0x0A;
    pub const NO_INCREMENT: u32 = 0x11;
    pub const DRTM_RESET: u32 = 0x12;
    pub const POLICY: u32 = 0x13;
    pub const AUTH: u32 = 0x14;
}

/// Implementation limits (Part 2 / the reference implementation's values).
pub const MAX_COMMAND_SIZE: usize = 4096;
pub const MAX_RESPONSE_SIZE: usize = 4096;
pub const MAX_DIGEST_BUFFER: usize = 1024;
pub const MAX_NV_BUFFER_SIZE: usize = 1024;
/// Larger than the reference implementation's 2048: the SVSM's binding
/// certificate carries the platform report, and on TDX that is a quote with
/// its certification data (5-8 KiB on hardware).
pub const MAX_NV_INDEX_SIZE: usize = 16 * 1024;
pub const MAX_SYM_DATA: usize = 128;
pub const MAX_CAP_BUFFER: usize = 1024;
/// sizeof(TPMU_HA): the largest implemented digest (SHA-384).
pub const MAX_DIGEST: usize = 48;
pub const MAX_SESSIONS: usize = 3;
pub const MAX_LOADED_OBJECTS: usize = 3;
pub const PCR_COUNT: usize = 24;
pub const PCR_SELECT_MAX: usize = 3;
/// TPM_GENERATED_VALUE: data starting with this gets no hash-check ticket.
pub const TPM_GENERATED: [u8; 4] = [0xFF, 0x54, 0x43, 0x47];
