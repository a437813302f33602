//! TPM_RC values (Part 2, 6.6) and the engine's typed command error, mapped to a
//! response code once, at the edge, with the handle/session/parameter number.

/// Format-1 bit: the code may carry a handle, session or parameter number.
pub const RC_FMT1: u32 = 0x080;
const RC_P: u32 = 0x040;
const RC_S: u32 = 0x800;

pub const SUCCESS: u32 = 0x000;
pub const BAD_TAG: u32 = 0x01E;

// Format-0, version 1 codes (RC_VER1 = 0x100).
pub const INITIALIZE: u32 = 0x100;
pub const FAILURE: u32 = 0x101;
pub const SEQUENCE: u32 = 0x103;
pub const DISABLED: u32 = 0x120;
pub const EXCLUSIVE: u32 = 0x121;
pub const AUTH_TYPE: u32 = 0x124;
pub const AUTH_MISSING: u32 = 0x125;
pub const PCR: u32 = 0x127;
pub const AUTH_UNAVAILABLE: u32 = 0x12F;
pub const POLICY_FAIL: u32 = 0x09D;
pub const EXPIRED: u32 = 0x0A3;
pub const CPHASH: u32 = 0x151;
pub const PCR_CHANGED: u32 = 0x128;
pub const POLICY: u32 = 0x126;
pub const PP: u32 = 0x090;
pub const POLICY_CC: u32 = 0x0A4;
pub const COMMAND_SIZE: u32 = 0x142;
pub const COMMAND_CODE: u32 = 0x143;
pub const AUTHSIZE: u32 = 0x144;
pub const AUTH_CONTEXT: u32 = 0x145;
pub const NV_RANGE: u32 = 0x146;
pub const NV_SIZE: u32 = 0x147;
pub const NV_LOCKED: u32 = 0x148;
pub const NV_AUTHORIZATION: u32 = 0x149;
pub const NV_UNINITIALIZED: u32 = 0x14A;
pub const NV_SPACE: u32 = 0x14B;
pub const NV_DEFINED: u32 = 0x14C;
pub const NEEDS_TEST: u32 = 0x153;

// Format-1 codes.
pub const ATTRIBUTES: u32 = 0x082;
pub const HASH: u32 = 0x083;
pub const VALUE: u32 = 0x084;
pub const HIERARCHY: u32 = 0x085;
pub const MODE: u32 = 0x089;
pub const TYPE: u32 = 0x08A;
pub const HANDLE: u32 = 0x08B;
pub const KDF: u32 = 0x08C;
pub const AUTH_FAIL: u32 = 0x08E;
pub const NONCE: u32 = 0x08F;
pub const SCHEME: u32 = 0x092;
pub const SIZE: u32 = 0x095;
pub const SYMMETRIC: u32 = 0x096;
pub const TAG: u32 = 0x097;
pub const INSUFFICIENT: u32 = 0x09A;
pub const RESERVED_BITS: u32 = 0x0A1;
pub const BAD_AUTH: u32 = 0x0A2;
pub const CURVE: u32 = 0x0A6;
pub const KEY: u32 = 0x09C;

// Warnings (RC_WARN = 0x900).
pub const OBJECT_MEMORY: u32 = 0x902;
pub const SESSION_MEMORY: u32 = 0x903;
pub const SESSION_HANDLES: u32 = 0x905;
pub const LOCALITY: u32 = 0x907;
pub const REFERENCE_H0: u32 = 0x910;
pub const REFERENCE_S0: u32 = 0x918;
pub const LOCKOUT: u32 = 0x921;

// Codes of the key commands (part 2).
pub const OBJECT_HANDLES: u32 = 0x906;
pub const CONTEXT_GAP: u32 = 0x901;
pub const PARENT: u32 = 0x152;
pub const NO_RESULT: u32 = 0x154;
pub const SENSITIVE: u32 = 0x155;
pub const TOO_MANY_CONTEXTS: u32 = 0x12E;
pub const KEY_SIZE: u32 = 0x087;
pub const RANGE: u32 = 0x08D;
pub const SIGNATURE: u32 = 0x09B;
pub const INTEGRITY: u32 = 0x09F;
pub const TICKET: u32 = 0x0A0;
pub const BINDING: u32 = 0x0A5;
pub const ECC_POINT: u32 = 0x0A7;

/// Where in the command an error was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    Nowhere,
    Handle(u8),
    Session(u8),
    Param(u8),
}

/// A command failure: a base response code plus where it applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rc {
    pub base: u32,
    pub at: At,
}

impl Rc {
    pub const fn new(base: u32) -> Self {
        Self {
            base,
            at: At::Nowhere,
        }
    }
    pub const fn param(base: u32, n: u8) -> Self {
        Self {
            base,
            at: At::Param(n),
        }
    }
    pub const fn handle(base: u32, n: u8) -> Self {
        Self {
            base,
            at: At::Handle(n),
        }
    }
    pub const fn session(base: u32, n: u8) -> Self {
        Self {
            base,
            at: At::Session(n),
        }
    }

    /// The wire value: the number is added only to format-1 codes (Part 2, 6.6.3).
    pub fn code(self) -> u32 {
        if self.base & RC_FMT1 == 0 {
            return self.base;
        }
        match self.at {
            At::Nowhere => self.base,
            At::Handle(n) => self.base | (u32::from(n & 7) << 8),
            At::Session(n) => self.base | RC_S | (u32::from(n & 7) << 8),
            At::Param(n) => self.base | RC_P | (u32::from(n & 0xF) << 8),
        }
    }
}

pub type CmdResult<T> = Result<T, Rc>;

/// Attach a location to an error that has none yet.
pub trait Locate<T> {
    fn p(self, n: u8) -> CmdResult<T>;
}

impl<T> Locate<T> for CmdResult<T> {
    fn p(self, n: u8) -> CmdResult<T> {
        self.map_err(|e| {
            if e.at == At::Nowhere {
                Rc::param(e.base, n)
            } else {
                e
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_go_only_on_format_one() {
        assert_eq!(Rc::param(SIZE, 1).code(), 0x1D5);
        assert_eq!(Rc::handle(HANDLE, 1).code(), 0x18B);
        assert_eq!(Rc::session(BAD_AUTH, 1).code(), 0x9A2);
        assert_eq!(Rc::session(AUTH_FAIL, 1).code(), 0x98E);
        assert_eq!(Rc::param(NV_LOCKED, 2).code(), NV_LOCKED);
        assert_eq!(Rc::handle(LOCALITY, 1).code(), LOCALITY);
        assert_eq!(Rc::param(VALUE, 15).code(), 0xFC4);
    }
}
