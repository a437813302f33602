//! The key model (Part 1 §23-§27, Part 2 §12): TPMT_PUBLIC and TPMT_SENSITIVE
//! with their TPMI checks, object Names, TPMA_OBJECT consistency rules, key
//! creation (derived from a hierarchy seed for primaries, random otherwise),
//! protected storage of a child's sensitive area under its parent, and the
//! volatile key state (null hierarchy secrets, persistent-object cache,
//! primary-key cache). Commands live in `command/{object,signature,...}.rs`.

use alloc::sync::Arc;
use alloc::vec::Vec;

use zeroize::Zeroizing;

use crate::Core;
use crate::alg::keys::{self, EccCurve, EccPoint, EccPrivateKey, EccPublicKey, RsaPrivateKey};
use crate::alg::sym::{SymMode, aes_decrypt, aes_encrypt};
use crate::alg::{AlgError, KdfRng, kdfa};
use crate::crypto::{HashAlg, ct_eq};
use crate::dispatch::Ctx;
use crate::hierarchy::Hierarchy;
use crate::marshal::{Reader, Writer};
use crate::public::{PublicParms, Scheme, SymDef, read_public_parms};
use crate::rc::{self, CmdResult, Rc};
use crate::spec::{alg, cc, ht};
use crate::state::SEED_LEN;

/// TPMA_OBJECT bits (Part 2 §8.3).
pub mod oa {
    pub const FIXED_TPM: u32 = 1 << 1;
    pub const ST_CLEAR: u32 = 1 << 2;
    pub const FIXED_PARENT: u32 = 1 << 4;
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    pub const NO_DA: u32 = 1 << 10;
    pub const ENCRYPTED_DUPLICATION: u32 = 1 << 11;
    pub const RESTRICTED: u32 = 1 << 16;
    pub const DECRYPT: u32 = 1 << 17;
    pub const SIGN: u32 = 1 << 18;
    /// Bits 0, 3, 8, 9, 12..=15 and 20..=31.
    pub const RESERVED: u32 = 1 | (1 << 3) | (0b11 << 8) | (0xF << 12) | (0xFFF << 20);
}

/// TPM2B_SENSITIVE_DATA capacity (sizeof TPMU_SENSITIVE_CREATE).
pub const MAX_SENSITIVE_DATA: usize = 128;
/// Largest RSA modulus in bytes (3072 bits).
pub const MAX_RSA_BYTES: usize = 384;
/// Largest ECC coordinate in bytes (P-384).
pub const MAX_ECC_BYTES: usize = 48;
/// TPM2B_DATA capacity (sizeof TPMT_HA).
pub const MAX_DATA: usize = 50;
/// TPM2B_PRIVATE capacity.
pub const MAX_PRIVATE: usize = 1024;
/// TPM2B_PUBLIC capacity.
pub const MAX_PUBLIC: usize = 1024;

const STORAGE: &[u8] = b"STORAGE";
const INTEGRITY: &[u8] = b"INTEGRITY";

// ------------------------------------------------------------- public area

/// TPMU_PUBLIC_ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unique {
    Rsa(Vec<u8>),
    Ecc(EccPoint),
    /// KEYEDHASH and SYMCIPHER: a digest.
    Digest(Vec<u8>),
}

/// A TPMT_PUBLIC that passed its unmarshalling checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Public {
    pub kind: u16,
    /// None for TPM_ALG_NULL (only a public-only LoadExternal allows it).
    pub name_alg: Option<HashAlg>,
    pub attributes: u32,
    pub auth_policy: Vec<u8>,
    pub parms: PublicParms,
    pub unique: Unique,
}

impl Public {
    pub fn has(&self, bits: u32) -> bool {
        self.attributes & bits == bits
    }

    /// The nameAlg, or SHA-256 in the one case it is NULL (public-only keys,
    /// whose Name is then just TPM_ALG_NULL).
    pub fn hash(&self) -> HashAlg {
        self.name_alg.unwrap_or(HashAlg::Sha256)
    }

    pub fn write(&self, w: &mut Writer) {
        w.u16(self.kind);
        w.u16(self.name_alg.map_or(alg::NULL, HashAlg::id));
        w.u32(self.attributes);
        w.tpm2b(&self.auth_policy);
        write_parms(w, &self.parms);
        match &self.unique {
            Unique::Rsa(n) => w.tpm2b(n),
            Unique::Ecc(p) => {
                w.tpm2b(&p.x);
                w.tpm2b(&p.y);
            }
            Unique::Digest(d) => w.tpm2b(d),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write(&mut w);
        w.buf
    }

    /// The symmetric definition of a parent (restricted decryption key).
    pub fn sym(&self) -> Option<SymDef> {
        match self.parms {
            PublicParms::Rsa { sym, .. } | PublicParms::Ecc { sym, .. } => sym,
            PublicParms::SymCipher { sym } => Some(sym),
            PublicParms::KeyedHash { .. } => None,
        }
    }

    /// The key's own scheme (TPM_ALG_NULL when it has none).
    pub fn scheme(&self) -> Scheme {
        match self.parms {
            PublicParms::Rsa { scheme, .. }
            | PublicParms::Ecc { scheme, .. }
            | PublicParms::KeyedHash { scheme, .. } => scheme,
            PublicParms::SymCipher { .. } => Scheme {
                alg: alg::NULL,
                hash: None,
                count: 0,
            },
        }
    }

    /// A storage parent: restricted decryption key that is not a signer.
    pub fn is_storage(&self) -> bool {
        self.has(oa::RESTRICTED | oa::DECRYPT)
            && !self.has(oa::SIGN)
            && matches!(self.kind, alg::RSA | alg::ECC | alg::SYMCIPHER)
    }
}

fn write_sym(w: &mut Writer, sym: Option<SymDef>) {
    match sym {
        None => w.u16(alg::NULL),
        Some(s) => {
            w.u16(s.alg);
            w.u16(s.key_bits);
            w.u16(s.mode);
        }
    }
}

fn write_scheme(w: &mut Writer, s: Scheme) {
    w.u16(s.alg);
    if let Some(h) = s.hash {
        w.u16(h.id());
    }
}

fn write_parms(w: &mut Writer, p: &PublicParms) {
    match *p {
        PublicParms::KeyedHash { scheme, kdf } => {
            write_scheme(w, scheme);
            if scheme.alg == alg::XOR {
                w.u16(kdf);
            }
        }
        PublicParms::SymCipher { sym } => write_sym(w, Some(sym)),
        PublicParms::Rsa {
            sym,
            scheme,
            key_bits,
            exponent,
        } => {
            write_sym(w, sym);
            write_scheme(w, scheme);
            w.u16(key_bits);
            w.u32(exponent);
        }
        PublicParms::Ecc {
            sym,
            scheme,
            curve,
            kdf,
        } => {
            write_sym(w, sym);
            write_scheme(w, scheme);
            w.u16(curve);
            write_scheme(w, kdf);
        }
    }
}

/// Unmarshal a TPMT_PUBLIC (errors without a location).
pub fn read_public(r: &mut Reader, null_name_ok: bool) -> CmdResult<Public> {
    let kind = r.u16()?;
    if !matches!(kind, alg::RSA | alg::ECC | alg::KEYEDHASH | alg::SYMCIPHER) {
        return Err(Rc::new(rc::TYPE));
    }
    let name_id = r.u16()?;
    let name_alg = match HashAlg::from_id(name_id) {
        Some(h) => Some(h),
        None if name_id == alg::NULL && null_name_ok => None,
        None => return Err(Rc::new(rc::HASH)),
    };
    let attributes = r.u32()?;
    if attributes & oa::RESERVED != 0 {
        return Err(Rc::new(rc::RESERVED_BITS));
    }
    let auth_policy = r.tpm2b(crate::spec::MAX_DIGEST)?.to_vec();
    // The parameters are TPMT_PUBLIC_PARMS without the leading type.
    let rest = r.rest();
    let mut tmp = Vec::with_capacity(rest.len().saturating_add(2));
    tmp.extend_from_slice(&kind.to_be_bytes());
    tmp.extend_from_slice(rest);
    let mut pr = Reader::new(&tmp);
    let parms = read_public_parms(&mut pr)?;
    let used = tmp.len().saturating_sub(pr.remaining()).saturating_sub(2);
    r.bytes(used)?;
    let unique = match parms {
        PublicParms::Rsa { .. } => Unique::Rsa(r.tpm2b(MAX_RSA_BYTES)?.to_vec()),
        PublicParms::Ecc { .. } => Unique::Ecc(EccPoint {
            x: r.tpm2b(MAX_ECC_BYTES)?.to_vec(),
            y: r.tpm2b(MAX_ECC_BYTES)?.to_vec(),
        }),
        _ => Unique::Digest(r.tpm2b(crate::spec::MAX_DIGEST)?.to_vec()),
    };
    Ok(Public {
        kind,
        name_alg,
        attributes,
        auth_policy,
        parms,
        unique,
    })
}

/// An error inside a sized (TPM2B) structure: running out of its bytes is
/// TPM_RC_SIZE, as the reference (which reads on past the size, then finds
/// the size wrong) answers.
pub fn sized(e: Rc) -> Rc {
    if e.base == rc::INSUFFICIENT {
        Rc::new(rc::SIZE)
    } else {
        e
    }
}

/// Unmarshal a TPM2B_PUBLIC: an empty or inexact size is TPM_RC_SIZE.
pub fn read_public_2b(r: &mut Reader, null_name_ok: bool) -> CmdResult<(Public, Vec<u8>)> {
    let body = r.tpm2b(MAX_PUBLIC)?;
    if body.is_empty() {
        return Err(Rc::new(rc::SIZE));
    }
    let mut inner = Reader::new(body);
    let p = read_public(&mut inner, null_name_ok).map_err(sized)?;
    inner.finish()?;
    Ok((p, body.to_vec()))
}

/// Name = nameAlg || H_nameAlg(TPMT_PUBLIC) (Part 1 §16).
pub fn name_of(name_alg: Option<HashAlg>, public_bytes: &[u8]) -> Vec<u8> {
    match name_alg {
        None => alg::NULL.to_be_bytes().to_vec(),
        Some(h) => {
            let mut n = h.id().to_be_bytes().to_vec();
            n.extend_from_slice(&h.digest(&[public_bytes]));
            n
        }
    }
}

/// Qualified Name = nameAlg || H_nameAlg(parent QN || Name).
pub fn qualified_name(name_alg: Option<HashAlg>, parent_qn: &[u8], name: &[u8]) -> Vec<u8> {
    match name_alg {
        None => alg::NULL.to_be_bytes().to_vec(),
        Some(h) => {
            let mut n = h.id().to_be_bytes().to_vec();
            n.extend_from_slice(&h.digest(&[parent_qn, name]));
            n
        }
    }
}

// ---------------------------------------------------------- attribute rules

/// PublicAttributesValidation + SchemeChecks of the reference (Part 1 §27,
/// Part 2 §8.3.3): `parent` is None for a primary object. Errors carry no
/// location; the caller attributes them to inPublic.
pub fn check_attributes(parent: Option<&Public>, p: &Public) -> CmdResult<()> {
    let a = p.attributes;
    let has = |b: u32| a & b != 0;
    let Some(name_alg) = p.name_alg else {
        return Err(Rc::new(rc::HASH));
    };
    if !p.auth_policy.is_empty() && p.auth_policy.len() != name_alg.size() {
        return Err(Rc::new(rc::SIZE));
    }
    let parent_fixed_tpm = parent.is_none_or(|pp| pp.has(oa::FIXED_TPM));
    if parent_fixed_tpm {
        if has(oa::FIXED_PARENT) != has(oa::FIXED_TPM) {
            return Err(Rc::new(rc::ATTRIBUTES));
        }
    } else if has(oa::FIXED_TPM) {
        return Err(Rc::new(rc::ATTRIBUTES));
    }
    if has(oa::SIGN) == has(oa::DECRYPT) {
        if has(oa::RESTRICTED) {
            return Err(Rc::new(rc::ATTRIBUTES));
        }
        if p.kind != alg::KEYEDHASH && !has(oa::SIGN) {
            return Err(Rc::new(rc::ATTRIBUTES));
        }
    }
    if has(oa::FIXED_TPM) && has(oa::ENCRYPTED_DUPLICATION) {
        return Err(Rc::new(rc::ATTRIBUTES));
    }
    if let Some(pp) = parent
        && !pp.has(oa::FIXED_TPM)
        && has(oa::ENCRYPTED_DUPLICATION) != pp.has(oa::ENCRYPTED_DUPLICATION)
    {
        return Err(Rc::new(rc::ATTRIBUTES));
    }
    scheme_checks(parent, p, name_alg)
}

/// The scheme checks an external object (LoadExternal) gets.
pub fn scheme_checks_external(p: &Public) -> CmdResult<()> {
    if !p.auth_policy.is_empty() && p.auth_policy.len() != p.hash().size() {
        return Err(Rc::new(rc::SIZE));
    }
    scheme_checks(None, p, p.hash())
}

fn scheme_checks(parent: Option<&Public>, p: &Public, name_alg: HashAlg) -> CmdResult<()> {
    let a = p.attributes;
    let has = |b: u32| a & b != 0;
    let scheme = p.scheme();
    match p.parms {
        PublicParms::SymCipher { .. } => {}
        PublicParms::KeyedHash { kdf, .. } => {
            if has(oa::SIGN) == has(oa::DECRYPT) {
                if scheme.alg != alg::NULL {
                    return Err(Rc::new(rc::SCHEME));
                }
            } else if has(oa::SIGN) {
                if scheme.alg != alg::HMAC {
                    return Err(Rc::new(rc::SCHEME));
                }
            } else {
                if scheme.alg != alg::XOR {
                    return Err(Rc::new(rc::SCHEME));
                }
                if has(oa::RESTRICTED) && kdf != alg::KDF1_SP800_108 {
                    return Err(Rc::new(rc::SCHEME));
                }
            }
            // Derivation parents (restricted keyedHash decrypt) are not supported.
            if has(oa::RESTRICTED) && has(oa::DECRYPT) {
                return Err(Rc::new(rc::TYPE));
            }
        }
        PublicParms::Rsa { sym, .. } | PublicParms::Ecc { sym, .. } => {
            let sign_scheme = match p.kind {
                alg::RSA => matches!(scheme.alg, alg::RSASSA | alg::RSAPSS),
                _ => scheme.alg == alg::ECDSA,
            };
            let decrypt_scheme = match p.kind {
                alg::RSA => matches!(scheme.alg, alg::OAEP | alg::RSAES),
                _ => scheme.alg == alg::ECDH,
            };
            if has(oa::SIGN) == has(oa::DECRYPT) {
                if scheme.alg != alg::NULL {
                    return Err(Rc::new(rc::SCHEME));
                }
            } else if has(oa::SIGN) {
                if !sign_scheme && (has(oa::RESTRICTED) || scheme.alg != alg::NULL) {
                    return Err(Rc::new(rc::SCHEME));
                }
            } else if has(oa::RESTRICTED) {
                if scheme.alg != alg::NULL {
                    return Err(Rc::new(rc::SCHEME));
                }
            } else if scheme.alg != alg::NULL && !decrypt_scheme {
                return Err(Rc::new(rc::SCHEME));
            }
            if !(has(oa::RESTRICTED) && has(oa::DECRYPT)) && sym.is_some() {
                return Err(Rc::new(rc::SYMMETRIC));
            }
            if let PublicParms::Ecc { kdf, .. } = p.parms
                && kdf.alg != alg::NULL
            {
                return Err(Rc::new(rc::KDF));
            }
        }
    }
    if has(oa::RESTRICTED) && has(oa::DECRYPT) {
        let sym = p.sym().ok_or(Rc::new(rc::SYMMETRIC))?;
        // A non-duplicable parent must match its parent's algorithms.
        if let Some(pp) = parent
            && has(oa::FIXED_PARENT)
        {
            if pp.name_alg != Some(name_alg) {
                return Err(Rc::new(rc::HASH));
            }
            if pp.sym() != Some(sym) {
                return Err(Rc::new(rc::SYMMETRIC));
            }
        }
    }
    Ok(())
}

/// CreateChecks of the reference: who supplies the sensitive data.
/// `primary` relaxes the rule that data and sensitiveDataOrigin exclude each other.
pub fn check_create(parent: Option<&Public>, p: &Public, data_len: usize) -> CmdResult<()> {
    let has = |b: u32| p.attributes & b != 0;
    if !has(oa::SENSITIVE_DATA_ORIGIN) && data_len == 0 {
        return Err(Rc::new(rc::ATTRIBUTES));
    }
    if parent.is_some() && has(oa::SENSITIVE_DATA_ORIGIN) && data_len != 0 {
        return Err(Rc::new(rc::ATTRIBUTES));
    }
    match p.kind {
        alg::KEYEDHASH | alg::SYMCIPHER => {
            if p.kind == alg::KEYEDHASH
                && !has(oa::SIGN)
                && !has(oa::DECRYPT)
                && has(oa::SENSITIVE_DATA_ORIGIN)
            {
                return Err(Rc::new(rc::ATTRIBUTES));
            }
            if has(oa::RESTRICTED)
                && !has(oa::SENSITIVE_DATA_ORIGIN)
                && (has(oa::FIXED_PARENT) || has(oa::FIXED_TPM))
            {
                return Err(Rc::new(rc::ATTRIBUTES));
            }
        }
        _ => {
            if !has(oa::SENSITIVE_DATA_ORIGIN) {
                return Err(Rc::new(rc::ATTRIBUTES));
            }
        }
    }
    check_attributes(parent, p)
}

// --------------------------------------------------------- sensitive area

/// TPMT_SENSITIVE: authValue, seedValue and the secret (RSA prime, ECC
/// scalar, HMAC/data bits or symmetric key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sensitive {
    pub auth: Vec<u8>,
    pub seed: Zeroizing<Vec<u8>>,
    pub secret: Zeroizing<Vec<u8>>,
}

impl Sensitive {
    pub fn write(&self, kind: u16, w: &mut Writer) {
        w.u16(kind);
        w.tpm2b(&self.auth);
        w.tpm2b(&self.seed);
        w.tpm2b(&self.secret);
    }

    pub fn read(r: &mut Reader, kind: u16) -> CmdResult<Self> {
        if r.u16()? != kind {
            return Err(Rc::new(rc::TYPE));
        }
        let auth = r.tpm2b(crate::spec::MAX_DIGEST)?.to_vec();
        let seed = Zeroizing::new(r.tpm2b(crate::spec::MAX_DIGEST)?.to_vec());
        let secret = Zeroizing::new(r.tpm2b(MAX_RSA_BYTES)?.to_vec());
        Ok(Self { auth, seed, secret })
    }
}

/// TPM2B_SENSITIVE_CREATE: (userAuth, data). Errors without a location.
pub fn read_sensitive_create(r: &mut Reader) -> CmdResult<(Vec<u8>, Zeroizing<Vec<u8>>)> {
    let body = r.tpm2b(usize::from(u16::MAX))?;
    if body.is_empty() {
        return Err(Rc::new(rc::SIZE));
    }
    let mut inner = Reader::new(body);
    let auth = inner
        .tpm2b(crate::spec::MAX_DIGEST)
        .map_err(sized)?
        .to_vec();
    let data = Zeroizing::new(inner.tpm2b(MAX_SENSITIVE_DATA).map_err(sized)?.to_vec());
    inner.finish()?;
    Ok((auth, data))
}

// ------------------------------------------------------------- key object

/// The private half as the algorithm layer uses it.
#[derive(Clone)]
pub enum PrivateKey {
    Rsa(alloc::boxed::Box<RsaPrivateKey>),
    Ecc(EccPrivateKey),
    /// HMAC key, data object or symmetric key: the secret bytes.
    Bits,
}

/// A loaded key object (transient or persistent).
#[derive(Clone)]
pub struct KeyObject {
    pub public: Public,
    pub public_bytes: Vec<u8>,
    pub name: Vec<u8>,
    pub qualified_name: Vec<u8>,
    pub hierarchy: Hierarchy,
    /// None for a public-only object (LoadExternal without a sensitive area).
    pub sensitive: Option<Sensitive>,
    pub private: Option<PrivateKey>,
    /// A primary object (its parent is a hierarchy).
    pub primary: bool,
}

impl KeyObject {
    pub fn new(
        public: Public,
        sensitive: Option<Sensitive>,
        private: Option<PrivateKey>,
        hierarchy: Hierarchy,
        parent_qn: &[u8],
        primary: bool,
    ) -> Self {
        let public_bytes = public.to_bytes();
        let name = name_of(public.name_alg, &public_bytes);
        let qualified_name = qualified_name(public.name_alg, parent_qn, &name);
        Self {
            public,
            public_bytes,
            name,
            qualified_name,
            hierarchy,
            sensitive,
            private,
            primary,
        }
    }

    pub fn auth(&self) -> &[u8] {
        self.sensitive.as_ref().map_or(&[], |s| s.auth.as_slice())
    }

    /// The secret bits of a keyedHash or symmetric object.
    pub fn secret(&self) -> &[u8] {
        self.sensitive.as_ref().map_or(&[], |s| s.secret.as_slice())
    }

    /// The RSA public key from the public area.
    pub fn rsa_public(&self) -> CmdResult<keys::RsaPublicKey> {
        match (&self.public.parms, &self.public.unique) {
            (PublicParms::Rsa { exponent, .. }, Unique::Rsa(n)) => {
                keys::rsa_public(n, *exponent).map_err(|e| alg_rc(e, rc::KEY))
            }
            _ => Err(Rc::new(rc::KEY)),
        }
    }

    /// The ECC public key from the public area.
    pub fn ecc_public(&self) -> CmdResult<EccPublicKey> {
        match (&self.public.parms, &self.public.unique) {
            (PublicParms::Ecc { curve, .. }, Unique::Ecc(p)) => {
                let c = EccCurve::from_id(*curve).ok_or(Rc::new(rc::CURVE))?;
                EccPublicKey::from_point(c, p).map_err(|e| alg_rc(e, rc::KEY))
            }
            _ => Err(Rc::new(rc::KEY)),
        }
    }

    /// Serialized form for the state blob (persistent objects).
    pub fn to_persistent(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(self.hierarchy.handle());
        w.u8(u8::from(self.primary));
        w.tpm2b(&self.public_bytes);
        w.tpm2b(&self.qualified_name);
        match &self.sensitive {
            None => w.u8(0),
            Some(s) => {
                w.u8(1);
                let mut sw = Writer::new();
                s.write(self.public.kind, &mut sw);
                w.tpm2b(&sw.buf);
            }
        }
        w.buf
    }

    pub fn from_persistent(bytes: &[u8]) -> CmdResult<Self> {
        Self::decode(bytes, true)
    }

    /// Decode a persistent object; `with_private` builds the private key.
    fn decode(bytes: &[u8], with_private: bool) -> CmdResult<Self> {
        let mut r = Reader::new(bytes);
        let hierarchy = Hierarchy::from_handle(r.u32()?).ok_or(Rc::new(rc::VALUE))?;
        let primary = r.yes_no()?;
        let public_bytes = r.tpm2b(MAX_PUBLIC)?;
        let qn = r.tpm2b(crate::spec::MAX_DIGEST + 2)?.to_vec();
        let mut pr = Reader::new(public_bytes);
        let public = read_public(&mut pr, true)?;
        pr.finish()?;
        let sensitive = if r.yes_no()? {
            let sb = r.tpm2b(MAX_PRIVATE)?;
            let mut sr = Reader::new(sb);
            let s = Sensitive::read(&mut sr, public.kind)?;
            sr.finish()?;
            Some(s)
        } else {
            None
        };
        r.finish()?;
        let private = match &sensitive {
            Some(s) if with_private => Some(private_from_sensitive(&public, s)?),
            _ => None,
        };
        let mut k = Self::new(public, sensitive, private, hierarchy, &[], primary);
        k.qualified_name = qn;
        Ok(k)
    }
}

/// An algorithm-layer error as a TPM_RC; `key` is what a bad key means here.
pub fn alg_rc(e: AlgError, key: u32) -> Rc {
    Rc::new(match e {
        AlgError::KeySize => rc::KEY_SIZE,
        AlgError::Key => key,
        AlgError::Exponent => rc::RANGE,
        AlgError::Size => rc::SIZE,
        AlgError::Value => rc::VALUE,
        AlgError::Signature => rc::SIGNATURE,
        AlgError::EccPoint => rc::ECC_POINT,
        AlgError::Scheme => rc::SCHEME,
        AlgError::NoResult => rc::NO_RESULT,
    })
}

/// The private key a sensitive area holds, checked against the public area
/// (TPM_RC_BINDING when they do not belong together).
pub fn private_from_sensitive(p: &Public, s: &Sensitive) -> CmdResult<PrivateKey> {
    match (&p.parms, &p.unique) {
        (PublicParms::Rsa { exponent, .. }, Unique::Rsa(n)) => {
            let k = keys::rsa_private_from_prime(n, *exponent, &s.secret)
                .map_err(|_| Rc::new(rc::BINDING))?;
            Ok(PrivateKey::Rsa(alloc::boxed::Box::new(k)))
        }
        (PublicParms::Ecc { curve, .. }, Unique::Ecc(point)) => {
            let c = EccCurve::from_id(*curve).ok_or(Rc::new(rc::CURVE))?;
            let k = EccPrivateKey::from_scalar(c, &s.secret).map_err(|_| Rc::new(rc::BINDING))?;
            let q = k.public_point();
            let size = c.size();
            let same = crate::alg::fixed_be(&point.x, size).is_some_and(|x| x == q.x)
                && crate::alg::fixed_be(&point.y, size).is_some_and(|y| y == q.y);
            if !same {
                return Err(Rc::new(rc::BINDING));
            }
            Ok(PrivateKey::Ecc(k))
        }
        (PublicParms::SymCipher { sym }, Unique::Digest(u)) => {
            if s.secret.len() != usize::from(sym.key_bits / 8) {
                return Err(Rc::new(rc::KEY_SIZE));
            }
            check_unique_digest(p, s, u)?;
            Ok(PrivateKey::Bits)
        }
        (PublicParms::KeyedHash { .. }, Unique::Digest(u)) => {
            check_unique_digest(p, s, u)?;
            Ok(PrivateKey::Bits)
        }
        _ => Err(Rc::new(rc::TYPE)),
    }
}

fn check_unique_digest(p: &Public, s: &Sensitive, unique: &[u8]) -> CmdResult<()> {
    // An external object may leave unique empty.
    if unique.is_empty() || ct_eq(&symmetric_unique(p.hash(), &s.seed, &s.secret), unique) {
        Ok(())
    } else {
        Err(Rc::new(rc::BINDING))
    }
}

/// unique of a keyedHash/symcipher object: H_nameAlg(seedValue || secret).
pub fn symmetric_unique(h: HashAlg, seed: &[u8], secret: &[u8]) -> Vec<u8> {
    h.digest(&[seed, secret])
}

// ------------------------------------------------------------ key creation

/// What creation derives from the RNG: private key, secret, seed, unique.
#[derive(Clone)]
pub struct Made {
    pub private: PrivateKey,
    pub secret: Zeroizing<Vec<u8>>,
    pub seed: Zeroizing<Vec<u8>>,
    pub unique: Unique,
}

fn take(rng: &mut KdfRng, n: usize) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(alloc::vec![0u8; n]);
    rng.fill(&mut v);
    v
}

/// Make the key material of `p` from `rng` (a KDFa stream keyed by the
/// hierarchy seed for primaries, by fresh DRBG output otherwise). `data` is
/// the caller's sensitive data: the secret of keyedHash/symmetric objects when
/// sensitiveDataOrigin is CLEAR. Parents and symmetric objects get a seedValue.
pub fn make(p: &Public, data: &[u8], rng: &mut KdfRng) -> CmdResult<Made> {
    let name_alg = p.hash();
    let origin = p.has(oa::SENSITIVE_DATA_ORIGIN);
    let (private, secret, unique) = match p.parms {
        PublicParms::Rsa {
            key_bits, exponent, ..
        } => {
            let k = keys::generate_rsa(rng, usize::from(key_bits), exponent)
                .map_err(|e| alg_rc(e, rc::KEY))?;
            let unique = Unique::Rsa(keys::rsa_modulus(k.as_ref()));
            (
                PrivateKey::Rsa(alloc::boxed::Box::new(k.clone())),
                keys::rsa_prime(&k),
                unique,
            )
        }
        PublicParms::Ecc { curve, .. } => {
            let c = EccCurve::from_id(curve).ok_or(Rc::new(rc::CURVE))?;
            let k = keys::generate_ecc(rng, c).map_err(|e| alg_rc(e, rc::KEY))?;
            let unique = Unique::Ecc(k.public_point());
            let scalar = k.scalar();
            (PrivateKey::Ecc(k), scalar, unique)
        }
        PublicParms::SymCipher { sym } => {
            let n = usize::from(sym.key_bits / 8);
            let secret = if origin {
                take(rng, n)
            } else if data.len() == n {
                Zeroizing::new(data.to_vec())
            } else {
                return Err(Rc::new(rc::KEY_SIZE));
            };
            (PrivateKey::Bits, secret, Unique::Digest(Vec::new()))
        }
        PublicParms::KeyedHash { scheme, .. } => {
            let secret = if origin {
                take(rng, scheme.hash.unwrap_or(name_alg).size())
            } else {
                Zeroizing::new(data.to_vec())
            };
            (PrivateKey::Bits, secret, Unique::Digest(Vec::new()))
        }
    };
    let needs_seed = p.is_storage() || matches!(p.kind, alg::SYMCIPHER | alg::KEYEDHASH);
    let seed = if needs_seed {
        take(rng, name_alg.size())
    } else {
        Zeroizing::new(Vec::new())
    };
    let unique = match unique {
        Unique::Digest(_) => Unique::Digest(symmetric_unique(name_alg, &seed, &secret)),
        u => u,
    };
    Ok(Made {
        private,
        secret,
        seed,
        unique,
    })
}

// ------------------------------------------------------- protected storage

type SecretPair = (Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>);

/// Parent secrets for wrapping a child (Part 1 §24: the parent's seedValue,
/// nameAlg and symmetric definition).
pub struct ParentProtection<'a> {
    pub name_alg: HashAlg,
    pub seed: &'a [u8],
    pub sym: SymDef,
}

impl<'a> ParentProtection<'a> {
    pub fn of(parent: &'a KeyObject) -> CmdResult<Self> {
        let sym = parent.public.sym().ok_or(Rc::new(rc::TYPE))?;
        let seed = parent
            .sensitive
            .as_ref()
            .map(|s| s.seed.as_slice())
            .ok_or(Rc::new(rc::TYPE))?;
        Ok(Self {
            name_alg: parent.public.hash(),
            seed,
            sym,
        })
    }

    /// (symmetric key, HMAC key) for a child named `name`.
    fn keys(&self, name: &[u8]) -> CmdResult<SecretPair> {
        let h = self.name_alg;
        let bits = u32::from(self.sym.key_bits);
        let sym = kdfa(h, self.seed, STORAGE, name, &[], bits).map_err(|e| alg_rc(e, rc::KEY))?;
        let hmac_bits = u32::try_from(h.size() * 8).unwrap_or(0);
        let mac =
            kdfa(h, self.seed, INTEGRITY, &[], &[], hmac_bits).map_err(|e| alg_rc(e, rc::KEY))?;
        Ok((Zeroizing::new(sym), Zeroizing::new(mac)))
    }

    /// TPM2B(outerHMAC) || AES-CFB(TPM2B(payload)): the body of a
    /// TPM2B_PRIVATE (payload = TPMT_SENSITIVE) or of a TPM2B_ID_OBJECT
    /// (payload = the credential), Part 1 §24.
    pub fn protect(&self, name: &[u8], payload: &[u8]) -> CmdResult<Vec<u8>> {
        let mut plain = Writer::new();
        plain.tpm2b(payload);
        let plain = Zeroizing::new(plain.buf);
        let (sym, mac) = self.keys(name)?;
        let iv = [0u8; 16];
        let enc = aes_encrypt(SymMode::Cfb, &sym, &iv, &plain)
            .map_err(|e| alg_rc(e, rc::KEY))?
            .data;
        let outer = self.name_alg.hmac(&mac, &[&enc, name]);
        let mut w = Writer::new();
        w.tpm2b(&outer);
        w.bytes(&enc);
        Ok(w.buf)
    }

    /// Check the outer HMAC and decrypt: the payload (TPM_RC_INTEGRITY on a
    /// mismatch, TPM_RC_INSUFFICIENT without an HMAC).
    pub fn unprotect(&self, name: &[u8], blob: &[u8]) -> CmdResult<Zeroizing<Vec<u8>>> {
        let mut r = Reader::new(blob);
        let outer = r
            .tpm2b(crate::spec::MAX_DIGEST)
            .map_err(|_| Rc::new(rc::INSUFFICIENT))?;
        let enc = r.rest();
        let (sym, mac) = self.keys(name)?;
        if outer.len() != self.name_alg.size()
            || !ct_eq(&self.name_alg.hmac(&mac, &[enc, name]), outer)
        {
            return Err(Rc::new(rc::INTEGRITY));
        }
        let iv = [0u8; 16];
        let plain = Zeroizing::new(
            aes_decrypt(SymMode::Cfb, &sym, &iv, enc)
                .map_err(|_| Rc::new(rc::INTEGRITY))?
                .data,
        );
        let mut pr = Reader::new(&plain);
        let body = pr.tpm2b(MAX_PRIVATE).map_err(|_| Rc::new(rc::INTEGRITY))?;
        pr.finish().map_err(|_| Rc::new(rc::INTEGRITY))?;
        Ok(Zeroizing::new(body.to_vec()))
    }

    /// TPM2B_PRIVATE contents for a child's sensitive area.
    pub fn wrap(&self, kind: u16, name: &[u8], s: &Sensitive) -> CmdResult<Vec<u8>> {
        let mut inner = Writer::new();
        s.write(kind, &mut inner);
        let inner = Zeroizing::new(inner.buf);
        self.protect(name, &inner)
    }

    /// A child's sensitive area from its TPM2B_PRIVATE contents.
    pub fn unwrap(&self, kind: u16, name: &[u8], private: &[u8]) -> CmdResult<Sensitive> {
        let body = self.unprotect(name, private)?;
        let mut br = Reader::new(&body);
        let s = Sensitive::read(&mut br, kind)?;
        br.finish()?;
        Ok(s)
    }
}

/// The seed an asymmetric decryption key receives in a TPM2B_ENCRYPTED_SECRET
/// (Part 1 §24.3 "Secret sharing"): RSA-OAEP with `label` (and its NUL), or an
/// ECC point for ECDH whose Z goes through KDFe(nameAlg, Z.x, label, Qe.x, Qs.x).
/// Errors carry no location: TPM_RC_VALUE (RSA), TPM_RC_ECC_POINT /
/// TPM_RC_INSUFFICIENT / TPM_RC_NO_RESULT (ECC), TPM_RC_TYPE (not asymmetric).
pub fn decrypt_seed(
    cx: &mut Ctx,
    k: &KeyObject,
    encrypted: &[u8],
    label: &[u8],
) -> CmdResult<Zeroizing<Vec<u8>>> {
    let hash = k.public.hash();
    match (&k.private, &k.public.unique) {
        (Some(PrivateKey::Rsa(private)), _) => {
            let mut l = label.to_vec();
            l.push(0);
            let mut rng = fresh_rng(cx, b"secret")?;
            let seed = crate::alg::asym_enc::rsa_decrypt(
                &mut rng,
                private,
                crate::alg::asym_enc::RsaEncScheme::Oaep(hash),
                &l,
                encrypted,
            )
            .map_err(|_| Rc::new(rc::VALUE))?;
            Ok(Zeroizing::new(seed))
        }
        (Some(PrivateKey::Ecc(private)), Unique::Ecc(ours)) => {
            let mut r = Reader::new(encrypted);
            let x = r.tpm2b(MAX_ECC_BYTES)?.to_vec();
            let y = r.tpm2b(MAX_ECC_BYTES)?.to_vec();
            r.finish().map_err(|_| Rc::new(rc::SIZE))?;
            let point = EccPoint { x, y };
            let z = crate::alg::asym_enc::ecdh_zgen(private, &point)
                .map_err(|e| alg_rc(e, rc::ECC_POINT))?;
            let bits = u32::try_from(hash.size() * 8).unwrap_or(0);
            let seed = crate::alg::kdfe(hash, &z.x, label, &point.x, &ours.x, bits)
                .map_err(|e| alg_rc(e, rc::NO_RESULT))?;
            Ok(Zeroizing::new(seed))
        }
        _ => Err(Rc::new(rc::TYPE)),
    }
}

/// Make a seed for an asymmetric key's public part and its encrypted form
/// (the sender's side of [`decrypt_seed`], as TPM2_MakeCredential does).
pub fn encrypt_seed(
    cx: &mut Ctx,
    k: &KeyObject,
    label: &[u8],
) -> CmdResult<(Zeroizing<Vec<u8>>, Vec<u8>)> {
    let hash = k.public.hash();
    let mut rng = fresh_rng(cx, b"seed")?;
    match k.public.kind {
        alg::RSA => {
            let mut seed = Zeroizing::new(alloc::vec![0u8; hash.size()]);
            rng.fill(&mut seed);
            let mut l = label.to_vec();
            l.push(0);
            let public = k.rsa_public()?;
            let enc = crate::alg::asym_enc::rsa_encrypt(
                &mut rng,
                &public,
                crate::alg::asym_enc::RsaEncScheme::Oaep(hash),
                &l,
                &seed,
            )
            .map_err(|e| alg_rc(e, rc::KEY))?;
            Ok((seed, enc))
        }
        alg::ECC => {
            let public = k.ecc_public()?;
            let (z, q) = crate::alg::asym_enc::ecdh_keygen(&mut rng, &public)
                .map_err(|e| alg_rc(e, rc::KEY))?;
            let ours = public.point();
            let bits = u32::try_from(hash.size() * 8).unwrap_or(0);
            let seed = crate::alg::kdfe(hash, &z.x, label, &q.x, &ours.x, bits)
                .map_err(|e| alg_rc(e, rc::NO_RESULT))?;
            let mut w = Writer::new();
            w.tpm2b(&q.x);
            w.tpm2b(&q.y);
            Ok((Zeroizing::new(seed), w.buf))
        }
        _ => Err(Rc::new(rc::TYPE)),
    }
}

// ----------------------------------------------------- volatile key state

struct NullSecrets {
    seed: Zeroizing<[u8; SEED_LEN]>,
    proof: Zeroizing<[u8; SEED_LEN]>,
}

/// Key state that lives only while powered: the null hierarchy's seed and
/// proof (new after every _TPM_Init), decoded persistent objects, derived
/// primary keys by template, and the context-save sequence.
#[derive(Default)]
pub struct KeyState {
    null: Option<NullSecrets>,
    persistent: Vec<(u32, Vec<u8>, Arc<KeyObject>)>,
    primaries: Vec<(Vec<u8>, Made)>,
    pub context_sequence: u64,
}

/// How many derived primary keys are kept (the EK templates, an SRK, an AK).
const PRIMARY_CACHE: usize = 6;

impl KeyState {
    pub fn cached_primary(&self, id: &[u8]) -> Option<Made> {
        self.primaries
            .iter()
            .find(|(k, _)| ct_eq(k, id))
            .map(|(_, m)| m.clone())
    }

    pub fn cache_primary(&mut self, id: Vec<u8>, made: Made) {
        if self.primaries.len() >= PRIMARY_CACHE {
            self.primaries.remove(0);
        }
        self.primaries.push((id, made));
    }
}

fn ensure_null(cx: &mut Ctx) -> CmdResult<()> {
    if cx.core.vol.keys.null.is_none() {
        let mut seed = Zeroizing::new([0u8; SEED_LEN]);
        let mut proof = Zeroizing::new([0u8; SEED_LEN]);
        crate::command::random(cx, seed.as_mut())?;
        crate::command::random(cx, proof.as_mut())?;
        cx.core.vol.keys.null = Some(NullSecrets { seed, proof });
    }
    Ok(())
}

/// The primary seed of a hierarchy (the null seed is made on first use after _TPM_Init).
pub fn seed(cx: &mut Ctx, h: Hierarchy) -> CmdResult<Zeroizing<[u8; SEED_LEN]>> {
    if let Some(s) = h.seed(cx.core) {
        return Ok(Zeroizing::new(*s));
    }
    ensure_null(cx)?;
    let n = cx.core.vol.keys.null.as_ref().ok_or(Rc::new(rc::FAILURE))?;
    Ok(Zeroizing::new(*n.seed))
}

/// The proof value of a hierarchy (nullProof for the null hierarchy).
pub fn proof(cx: &mut Ctx, h: Hierarchy) -> CmdResult<Zeroizing<[u8; SEED_LEN]>> {
    if h != Hierarchy::Null {
        return Ok(Zeroizing::new(h.proof(cx.core)));
    }
    ensure_null(cx)?;
    let n = cx.core.vol.keys.null.as_ref().ok_or(Rc::new(rc::FAILURE))?;
    Ok(Zeroizing::new(*n.proof))
}

/// A fresh KDFa stream seeded from the DRBG, for ordinary (non-primary) keys.
pub fn fresh_rng(cx: &mut Ctx, label: &[u8]) -> CmdResult<KdfRng> {
    let mut s = Zeroizing::new([0u8; 64]);
    crate::command::random(cx, s.as_mut())?;
    Ok(KdfRng::new(HashAlg::Sha256, s.as_ref(), label, &[], &[]))
}

// ------------------------------------------------------- handle lookups

fn persistent_bytes(core: &Core, handle: u32) -> Option<&[u8]> {
    core.ps
        .persistent_objects
        .iter()
        .find(|(h, _)| *h == handle)
        .map(|(_, b)| b.as_slice())
}

/// The key object at a transient or persistent handle (TPM_RC_HANDLE if none:
/// the dispatcher has already checked that the handle is loaded).
pub fn get(core: &mut Core, handle: u32) -> CmdResult<Arc<KeyObject>> {
    match crate::spec::handle_type(handle) {
        ht::TRANSIENT => match core.vol.objects.get(handle) {
            Some(crate::object::Object {
                kind: crate::object::Kind::Key(k),
                ..
            }) => Ok(k.clone()),
            _ => Err(Rc::new(rc::HANDLE)),
        },
        ht::PERSISTENT => {
            let bytes = persistent_bytes(core, handle).ok_or(Rc::new(rc::HANDLE))?;
            let cache = &core.vol.keys.persistent;
            if let Some((_, _, k)) = cache
                .iter()
                .find(|(h, b, _)| *h == handle && b.as_slice() == bytes)
            {
                return Ok(k.clone());
            }
            let bytes = bytes.to_vec();
            let k = Arc::new(KeyObject::from_persistent(&bytes).map_err(|_| Rc::new(rc::HANDLE))?);
            let cache = &mut core.vol.keys.persistent;
            cache.retain(|(h, _, _)| *h != handle);
            cache.push((handle, bytes, k.clone()));
            Ok(k)
        }
        _ => Err(Rc::new(rc::HANDLE)),
    }
}

/// The public area, Name and authValue of an object handle without building
/// its private key (for authorization and Names, which only see `&Core`).
fn peek(core: &Core, handle: u32) -> Option<(Public, Vec<u8>, Vec<u8>)> {
    match crate::spec::handle_type(handle) {
        ht::TRANSIENT => match core.vol.objects.get(handle) {
            Some(crate::object::Object {
                kind: crate::object::Kind::Key(k),
                ..
            }) => Some((k.public.clone(), k.name.clone(), k.auth().to_vec())),
            _ => None,
        },
        ht::PERSISTENT => {
            let bytes = persistent_bytes(core, handle)?;
            if let Some((_, _, k)) = core
                .vol
                .keys
                .persistent
                .iter()
                .find(|(h, b, _)| *h == handle && b.as_slice() == bytes)
            {
                return Some((k.public.clone(), k.name.clone(), k.auth().to_vec()));
            }
            let k = KeyObject::decode(bytes, false).ok()?;
            let auth = k.auth().to_vec();
            Some((k.public, k.name, auth))
        }
        _ => None,
    }
}

/// The Name of an object handle (transient or persistent key), for HMAC
/// sessions; None for sequence objects and unknown handles.
pub fn object_name(core: &Core, handle: u32) -> Option<Vec<u8>> {
    peek(core, handle).map(|(_, name, _)| name)
}

/// Whether the authorized handle at `index` of command `code` has the ADMIN
/// role (Part 3 "Auth Role"); the others that take an object authorization
/// are USER. Without an index (None), a command whose first handle is ADMIN
/// counts as ADMIN for all its handles.
fn admin_role(code: u32, index: Option<usize>) -> bool {
    matches!(
        code,
        cc::OBJECT_CHANGE_AUTH | cc::CERTIFY | cc::ACTIVATE_CREDENTIAL
    ) && index.is_none_or(|i| i == 0)
}

/// What authorizing a key object needs.
pub struct ObjectAuth {
    pub auth: Vec<u8>,
    /// (nameAlg, authPolicy) when the object has a policy.
    pub policy: Option<(HashAlg, Vec<u8>)>,
    pub da_exempt: bool,
    /// A password or HMAC may authorize this role (userWithAuth SET for
    /// USER, adminWithPolicy CLEAR for ADMIN); else only a policy session.
    pub auth_allowed: bool,
}

/// The authorization facts of a key object for command `code`, or None when
/// the handle is not a key (sequence objects keep their own authValue).
pub fn object_auth(core: &Core, code: u32, handle: u32) -> Option<ObjectAuth> {
    object_auth_at(core, code, handle, None)
}

/// [`object_auth`] for the handle at `index` of the handle area, so that a
/// command with an ADMIN and a USER handle (Certify, ActivateCredential)
/// checks each by its own role.
pub fn object_auth_at(
    core: &Core,
    code: u32,
    handle: u32,
    index: Option<usize>,
) -> Option<ObjectAuth> {
    let (p, _, auth) = peek(core, handle)?;
    let auth_allowed = if admin_role(code, index) {
        !p.has(oa::ADMIN_WITH_POLICY)
    } else {
        p.has(oa::USER_WITH_AUTH)
    };
    let policy = match p.name_alg {
        Some(h) if !p.auth_policy.is_empty() => Some((h, p.auth_policy.clone())),
        _ => None,
    };
    Some(ObjectAuth {
        auth,
        policy,
        da_exempt: p.has(oa::NO_DA),
        auth_allowed,
    })
}

/// The hierarchy a persistent object's stored form belongs to.
fn persistent_hierarchy(bytes: &[u8]) -> Option<Hierarchy> {
    let h = bytes.get(..4)?;
    Hierarchy::from_handle(u32::from_be_bytes([h[0], h[1], h[2], h[3]]))
}

/// Whether the persistent object at `handle` can be used: it exists and its
/// hierarchy is enabled (platform handles need phEnable, the others shEnable,
/// endorsement objects ehEnable too), as the reference's ObjectLoadEvict.
pub fn persistent_usable(core: &Core, handle: u32) -> bool {
    let Some(bytes) = persistent_bytes(core, handle) else {
        return false;
    };
    let v = &core.vol;
    let range_enabled = if handle >= 0x8180_0000 {
        v.ph_enable
    } else {
        v.sh_enable
    };
    range_enabled && (persistent_hierarchy(bytes) != Some(Hierarchy::Endorsement) || v.eh_enable)
}

/// Flush the transient key objects of hierarchy `h`, and with `persistent`
/// also drop its persistent objects (TPM2_Clear, ChangeEPS, ChangePPS;
/// HierarchyControl flushes only the transient ones).
pub fn flush_hierarchy(core: &mut Core, h: Hierarchy, persistent: bool) {
    let objects = &mut core.vol.objects;
    let doomed: Vec<u32> = objects
        .handles()
        .filter(|handle| {
            matches!(
                objects.get(*handle),
                Some(crate::object::Object {
                    kind: crate::object::Kind::Key(k),
                    ..
                }) if k.hierarchy == h
            )
        })
        .collect();
    for handle in doomed {
        objects.remove(handle);
    }
    if persistent {
        let before = core.ps.persistent_objects.len();
        core.ps
            .persistent_objects
            .retain(|(_, b)| persistent_hierarchy(b) != Some(h));
        if core.ps.persistent_objects.len() != before {
            core.dirty = true;
        }
    }
}

/// Name of a hierarchy handle as a parent (its handle, big-endian).
pub fn handle_name(h: u32) -> [u8; 4] {
    h.to_be_bytes()
}

/// TPMT_TK_CREATION / VERIFIED digest: HMAC_contextHash(proof, parts).
pub fn ticket(cx: &mut Ctx, h: Hierarchy, parts: &[&[u8]]) -> CmdResult<Vec<u8>> {
    let p = proof(cx, h)?;
    Ok(crate::command::CONTEXT_HASH.hmac(p.as_ref(), parts))
}
