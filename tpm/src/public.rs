//! Public-area parameters (Part 2 §12.2.3): TPMT_PUBLIC_PARMS and the
//! TPMI_* checks their unmarshalling makes, with the response codes the spec
//! gives each type. TestParms uses it now; object creation reuses it later.

use crate::crypto::HashAlg;
use crate::marshal::Reader;
use crate::rc::{self, CmdResult, Rc};
use crate::spec::alg;

/// Symmetric block cipher modes (TPMI_ALG_SYM_MODE).
pub const SYM_MODES: [u16; 5] = [alg::CTR, alg::OFB, alg::CBC, alg::CFB, alg::ECB];
/// RSA key sizes (TPMI_RSA_KEY_BITS).
pub const RSA_KEY_BITS: [u16; 3] = [1024, 2048, 3072];
/// AES key sizes (TPMI_AES_KEY_BITS).
pub const AES_KEY_BITS: [u16; 3] = [128, 192, 256];
/// ECC curves (TPMI_ECC_CURVE): NIST P-256 and P-384.
pub const ECC_CURVES: [u16; 2] = [0x0003, 0x0004];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SymDef {
    pub alg: u16,
    pub key_bits: u16,
    pub mode: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scheme {
    pub alg: u16,
    pub hash: Option<HashAlg>,
    pub count: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublicParms {
    KeyedHash {
        scheme: Scheme,
        kdf: u16,
    },
    SymCipher {
        sym: SymDef,
    },
    Rsa {
        sym: Option<SymDef>,
        scheme: Scheme,
        key_bits: u16,
        exponent: u32,
    },
    Ecc {
        sym: Option<SymDef>,
        scheme: Scheme,
        curve: u16,
        kdf: Scheme,
    },
}

fn hash(r: &mut Reader) -> CmdResult<HashAlg> {
    HashAlg::from_id(r.u16()?).ok_or(Rc::new(rc::HASH))
}

/// TPMT_SYM_DEF_OBJECT(+): None for TPM_ALG_NULL when allowed.
fn sym_def_object(r: &mut Reader, null_ok: bool) -> CmdResult<Option<SymDef>> {
    let a = r.u16()?;
    if a == alg::NULL && null_ok {
        return Ok(None);
    }
    if a != alg::AES {
        return Err(Rc::new(rc::SYMMETRIC));
    }
    let key_bits = r.u16()?;
    if !AES_KEY_BITS.contains(&key_bits) {
        return Err(Rc::new(rc::VALUE));
    }
    let mode = r.u16()?;
    // TPMI_ALG_SYM_MODE+: a symmetric object may leave the mode to the command.
    if mode != alg::NULL && !SYM_MODES.contains(&mode) {
        return Err(Rc::new(rc::MODE));
    }
    Ok(Some(SymDef {
        alg: a,
        key_bits,
        mode,
    }))
}

/// TPMI_ALG_KDF+ / TPMT_KDF_SCHEME+.
fn kdf_scheme(r: &mut Reader) -> CmdResult<Scheme> {
    let a = r.u16()?;
    match a {
        alg::NULL => Ok(Scheme {
            alg: a,
            hash: None,
            count: 0,
        }),
        alg::MGF1 | alg::KDF1_SP800_56A | alg::KDF1_SP800_108 => Ok(Scheme {
            alg: a,
            hash: Some(hash(r)?),
            count: 0,
        }),
        _ => Err(Rc::new(rc::KDF)),
    }
}

/// TPMT_PUBLIC_PARMS; errors carry no location (the caller numbers them).
pub fn read_public_parms(r: &mut Reader) -> CmdResult<PublicParms> {
    let kind = r.u16()?;
    match kind {
        alg::KEYEDHASH => {
            let s = r.u16()?;
            match s {
                alg::HMAC => Ok(PublicParms::KeyedHash {
                    scheme: Scheme {
                        alg: s,
                        hash: Some(hash(r)?),
                        count: 0,
                    },
                    kdf: alg::NULL,
                }),
                alg::XOR => {
                    let h = hash(r)?;
                    let kdf = r.u16()?;
                    if !matches!(kdf, alg::MGF1 | alg::KDF1_SP800_56A | alg::KDF1_SP800_108) {
                        return Err(Rc::new(rc::KDF));
                    }
                    Ok(PublicParms::KeyedHash {
                        scheme: Scheme {
                            alg: s,
                            hash: Some(h),
                            count: 0,
                        },
                        kdf,
                    })
                }
                alg::NULL => Ok(PublicParms::KeyedHash {
                    scheme: Scheme {
                        alg: s,
                        hash: None,
                        count: 0,
                    },
                    kdf: alg::NULL,
                }),
                _ => Err(Rc::new(rc::VALUE)),
            }
        }
        alg::SYMCIPHER => {
            let sym = sym_def_object(r, false)?.ok_or(Rc::new(rc::SYMMETRIC))?;
            Ok(PublicParms::SymCipher { sym })
        }
        alg::RSA => {
            let sym = sym_def_object(r, true)?;
            let s = r.u16()?;
            let scheme = match s {
                alg::NULL | alg::RSAES => Scheme {
                    alg: s,
                    hash: None,
                    count: 0,
                },
                alg::RSASSA | alg::RSAPSS | alg::OAEP => Scheme {
                    alg: s,
                    hash: Some(hash(r)?),
                    count: 0,
                },
                _ => return Err(Rc::new(rc::VALUE)),
            };
            let key_bits = r.u16()?;
            if !RSA_KEY_BITS.contains(&key_bits) {
                return Err(Rc::new(rc::VALUE));
            }
            let exponent = r.u32()?;
            Ok(PublicParms::Rsa {
                sym,
                scheme,
                key_bits,
                exponent,
            })
        }
        alg::ECC => {
            let sym = sym_def_object(r, true)?;
            let s = r.u16()?;
            let scheme = match s {
                alg::NULL => Scheme {
                    alg: s,
                    hash: None,
                    count: 0,
                },
                alg::ECDSA | alg::ECDH => Scheme {
                    alg: s,
                    hash: Some(hash(r)?),
                    count: 0,
                },
                _ => return Err(Rc::new(rc::SCHEME)),
            };
            let curve = r.u16()?;
            if !ECC_CURVES.contains(&curve) {
                return Err(Rc::new(rc::CURVE));
            }
            let kdf = kdf_scheme(r)?;
            Ok(PublicParms::Ecc {
                sym,
                scheme,
                curve,
                kdf,
            })
        }
        _ => Err(Rc::new(rc::TYPE)),
    }
}
