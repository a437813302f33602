//! Object commands (Part 3 §12, §24 CreatePrimary, §28 EvictControl):
//! CreatePrimary, Create, CreateLoaded, Load, LoadExternal, ReadPublic,
//! ObjectChangeAuth, Unseal and EvictControl. The key model is `crate::key`.

use alloc::sync::Arc;
use alloc::vec::Vec;

use zeroize::Zeroizing;

use crate::alg::KdfRng;
use crate::alg::keys::PRIMARY_OBJECT_CREATION;
use crate::command::attestation::pcr_digest;
use crate::crypto::{HashAlg, trim_auth};
use crate::dispatch::{Call, Ctx};
use crate::hierarchy::Hierarchy;
use crate::key::{self, KeyObject, MAX_DATA, MAX_PRIVATE, ParentProtection, Public, Sensitive, oa};
use crate::marshal::{Reader, Writer};
use crate::object::{Kind, Object};
use crate::pcr::{Selection, read_selection, write_selection};
use crate::rc::{self, CmdResult, Locate, Rc};
use crate::spec::{self, alg, ht, rh, st};

/// Most persistent objects the TPM keeps (TPM_PT_HR_PERSISTENT_AVAIL counts down from it).
pub const MAX_PERSISTENT: usize = 7;

/// Put a key object into a transient slot.
pub fn insert(cx: &mut Ctx, k: KeyObject) -> CmdResult<u32> {
    let auth = trim_auth(k.auth()).to_vec();
    cx.core.vol.objects.insert(Object {
        auth,
        kind: Kind::Key(Arc::new(k)),
        ticket_safe: None,
    })
}

/// The inputs CreatePrimary, Create and CreateLoaded share.
struct CreateIn {
    auth: Vec<u8>,
    data: Zeroizing<Vec<u8>>,
    public: Public,
    outside: Vec<u8>,
    pcrs: Vec<Selection>,
}

fn read_create_in(call: &mut Call, with_creation_data: bool) -> CmdResult<CreateIn> {
    let (auth, data) = key::read_sensitive_create(&mut call.params).p(1)?;
    let (public, _) = key::read_public_2b(&mut call.params, false).p(2)?;
    let (outside, pcrs) = if with_creation_data {
        let o = call.params.tpm2b(MAX_DATA).p(3)?.to_vec();
        (o, read_selection(&mut call.params).p(4)?)
    } else {
        (Vec::new(), Vec::new())
    };
    call.done()?;
    if auth.len() > public.hash().size() {
        return Err(Rc::param(rc::SIZE, 1));
    }
    Ok(CreateIn {
        auth: trim_auth(&auth).to_vec(),
        data,
        public,
        outside,
        pcrs,
    })
}

/// The parent of a new object: a hierarchy (primary) or a loaded storage key.
enum Parent {
    Hierarchy(Hierarchy, u32),
    Key(Arc<KeyObject>),
}

impl Parent {
    fn public(&self) -> Option<&Public> {
        match self {
            Self::Hierarchy(..) => None,
            Self::Key(k) => Some(&k.public),
        }
    }
    fn hierarchy(&self) -> Hierarchy {
        match self {
            Self::Hierarchy(h, _) => *h,
            Self::Key(k) => k.hierarchy,
        }
    }
    fn name(&self) -> Vec<u8> {
        match self {
            Self::Hierarchy(_, h) => key::handle_name(*h).to_vec(),
            Self::Key(k) => k.name.clone(),
        }
    }
    fn qualified_name(&self) -> Vec<u8> {
        match self {
            Self::Hierarchy(_, h) => key::handle_name(*h).to_vec(),
            Self::Key(k) => k.qualified_name.clone(),
        }
    }
    fn name_alg(&self) -> u16 {
        match self {
            Self::Hierarchy(..) => alg::NULL,
            Self::Key(k) => k.public.name_alg.map_or(alg::NULL, HashAlg::id),
        }
    }
}

fn parent_of(cx: &mut Ctx, handle: u32) -> CmdResult<Parent> {
    if let Some(h) = Hierarchy::from_handle(handle) {
        return Ok(Parent::Hierarchy(h, handle));
    }
    let k = key::get(cx.core, handle).map_err(|e| Rc::handle(e.base, 1))?;
    if !k.public.is_storage() || k.sensitive.is_none() {
        return Err(Rc::handle(rc::TYPE, 1));
    }
    Ok(Parent::Key(k))
}

/// The cache id of a derived primary key: a hash of everything derivation reads.
fn primary_id(seed: &[u8], template_name: &[u8], data: &[u8]) -> Vec<u8> {
    HashAlg::Sha256.digest(&[b"Rivet primary", seed, template_name, data])
}

/// Make the object: derive a primary from the hierarchy seed, or generate
/// an ordinary object from the DRBG.
fn make_object(cx: &mut Ctx, parent: &Parent, inp: &CreateIn) -> CmdResult<KeyObject> {
    let p = &inp.public;
    let made = match parent {
        Parent::Hierarchy(h, _) => {
            let seed = key::seed(cx, *h)?;
            let template_name = key::name_of(p.name_alg, &p.to_bytes());
            let id = primary_id(seed.as_ref(), &template_name, &inp.data);
            match cx.core.vol.keys.cached_primary(&id) {
                Some(m) => m,
                None => {
                    let mut rng = KdfRng::new(
                        p.hash(),
                        seed.as_ref(),
                        PRIMARY_OBJECT_CREATION,
                        &template_name,
                        &inp.data,
                    );
                    let m = key::make(p, &inp.data, &mut rng)?;
                    cx.core.vol.keys.cache_primary(id, m.clone());
                    m
                }
            }
        }
        Parent::Key(_) => {
            let mut rng = key::fresh_rng(cx, b"Create")?;
            key::make(p, &inp.data, &mut rng)?
        }
    };
    let mut public = p.clone();
    public.unique = made.unique.clone();
    let sensitive = Sensitive {
        auth: inp.auth.clone(),
        seed: made.seed.clone(),
        secret: made.secret.clone(),
    };
    Ok(KeyObject::new(
        public,
        Some(sensitive),
        Some(made.private),
        parent.hierarchy(),
        &parent.qualified_name(),
        matches!(parent, Parent::Hierarchy(..)),
    ))
}

/// TPMS_CREATION_DATA, its hash and ticket, written after outPublic.
fn write_creation(
    cx: &mut Ctx,
    out: &mut Writer,
    parent: &Parent,
    k: &KeyObject,
    inp: &CreateIn,
) -> CmdResult<()> {
    let h = k.public.hash();
    let mut sel = inp.pcrs.clone();
    let pcr_digest = pcr_digest(cx.core, h, &mut sel);
    let mut cd = Writer::new();
    write_selection(&mut cd, &sel);
    cd.tpm2b(&pcr_digest);
    cd.u8(1u8 << cx.locality.min(4));
    cd.u16(parent.name_alg());
    cd.tpm2b(&parent.name());
    cd.tpm2b(&parent.qualified_name());
    cd.tpm2b(&inp.outside);
    let creation_hash = h.digest(&[&cd.buf]);
    out.tpm2b(&cd.buf);
    out.tpm2b(&creation_hash);
    write_creation_ticket(cx, out, k.hierarchy, &k.name, &creation_hash)
}

/// TPMT_TK_CREATION: HMAC(proof, TPM_ST_CREATION || name || creationHash).
pub fn write_creation_ticket(
    cx: &mut Ctx,
    out: &mut Writer,
    h: Hierarchy,
    name: &[u8],
    creation_hash: &[u8],
) -> CmdResult<()> {
    let tag = st::CREATION.to_be_bytes();
    let digest = key::ticket(cx, h, &[&tag, name, creation_hash])?;
    out.u16(st::CREATION);
    out.u32(h.handle());
    out.tpm2b(&digest);
    Ok(())
}

pub fn create_primary(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let inp = read_create_in(call, true)?;
    key::check_create(None, &inp.public, inp.data.len()).p(2)?;
    let parent = parent_of(cx, call.handle(0))?;
    let k = make_object(cx, &parent, &inp)?;
    let mut out = Writer::new();
    out.tpm2b(&k.public_bytes);
    write_creation(cx, &mut out, &parent, &k, &inp)?;
    out.tpm2b(&k.name);
    call.out_handle = Some(insert(cx, k)?);
    call.out.bytes(&out.buf);
    Ok(())
}

pub fn create(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let inp = read_create_in(call, true)?;
    let parent = parent_of(cx, call.handle(0))?;
    key::check_create(parent.public(), &inp.public, inp.data.len()).p(2)?;
    let k = make_object(cx, &parent, &inp)?;
    let Parent::Key(pk) = &parent else {
        return Err(Rc::handle(rc::TYPE, 1));
    };
    let private = wrap(pk, &k)?;
    call.out.tpm2b(&private);
    call.out.tpm2b(&k.public_bytes);
    let mut out = Writer::new();
    write_creation(cx, &mut out, &parent, &k, &inp)?;
    call.out.bytes(&out.buf);
    Ok(())
}

fn wrap(parent: &KeyObject, k: &KeyObject) -> CmdResult<Vec<u8>> {
    let s = k.sensitive.as_ref().ok_or(Rc::new(rc::TYPE))?;
    ParentProtection::of(parent)?.wrap(k.public.kind, &k.name, s)
}

/// TPM2_CreateLoaded: a primary under a hierarchy, or an ordinary object
/// under a storage parent, loaded at once (derived objects are not supported).
pub fn create_loaded(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let (auth, data) = key::read_sensitive_create(&mut call.params).p(1)?;
    // inPublic is a TPM2B_TEMPLATE: the same TPMT_PUBLIC bytes.
    let (public, _) = key::read_public_2b(&mut call.params, false).p(2)?;
    call.done()?;
    if auth.len() > public.hash().size() {
        return Err(Rc::param(rc::SIZE, 1));
    }
    let inp = CreateIn {
        auth: trim_auth(&auth).to_vec(),
        data,
        public,
        outside: Vec::new(),
        pcrs: Vec::new(),
    };
    let parent = parent_of(cx, call.handle(0))?;
    key::check_create(parent.public(), &inp.public, inp.data.len()).p(2)?;
    let k = make_object(cx, &parent, &inp)?;
    let private = match &parent {
        Parent::Key(pk) => wrap(pk, &k)?,
        Parent::Hierarchy(..) => Vec::new(),
    };
    let mut out = Writer::new();
    out.tpm2b(&private);
    out.tpm2b(&k.public_bytes);
    out.tpm2b(&k.name);
    call.out_handle = Some(insert(cx, k)?);
    call.out.bytes(&out.buf);
    Ok(())
}

/// Key validation errors of a loaded sensitive area: TPM_RC_BINDING carries
/// no parameter number (as the reference's CryptValidateKeys answers), the
/// others belong to the sensitive area (parameter 1).
fn binding_plain(e: Rc) -> Rc {
    if e.base == rc::BINDING {
        Rc::new(rc::BINDING)
    } else {
        Rc::param(e.base, 1)
    }
}

/// Checks of a loaded sensitive area against its public area (ObjectLoad).
fn check_sensitive(p: &Public, s: &Sensitive) -> CmdResult<()> {
    if s.auth.len() > p.hash().size() {
        return Err(Rc::new(rc::SIZE));
    }
    if p.is_storage() && s.seed.len() != p.hash().size() {
        return Err(Rc::new(rc::KEY_SIZE));
    }
    Ok(())
}

pub fn load(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let private = call.params.tpm2b(MAX_PRIVATE).p(1)?.to_vec();
    let (public, _) = key::read_public_2b(&mut call.params, false).p(2)?;
    call.done()?;
    let parent = parent_of(cx, call.handle(0))?;
    let Parent::Key(pk) = &parent else {
        return Err(Rc::handle(rc::TYPE, 1));
    };
    key::check_attributes(Some(&pk.public), &public).p(2)?;
    let name = key::name_of(public.name_alg, &public.to_bytes());
    let s = ParentProtection::of(pk)?
        .unwrap(public.kind, &name, &private)
        .p(1)?;
    check_sensitive(&public, &s).p(1)?;
    let private_key = key::private_from_sensitive(&public, &s).map_err(binding_plain)?;
    let k = KeyObject::new(
        public,
        Some(s),
        Some(private_key),
        pk.hierarchy,
        &pk.qualified_name,
        false,
    );
    let name = k.name.clone();
    call.out_handle = Some(insert(cx, k)?);
    call.out.tpm2b(&name);
    Ok(())
}

pub fn load_external(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let sens = call.params.tpm2b(MAX_PRIVATE).p(1)?;
    let (public, _) = key::read_public_2b(&mut call.params, true).p(2)?;
    let hierarchy = crate::command::read_hierarchy_or_null(&mut call.params).p(3)?;
    call.done()?;
    let h = Hierarchy::from_handle(hierarchy).ok_or(Rc::param(rc::VALUE, 3))?;
    if !h.enabled(cx.core) {
        return Err(Rc::param(rc::HIERARCHY, 3));
    }
    let sensitive = if sens.is_empty() {
        None
    } else {
        let mut r = Reader::new(sens);
        let s = Sensitive::read(&mut r, public.kind)
            .map_err(key::sized)
            .p(1)?;
        r.finish().p(1)?;
        Some(s)
    };
    if sensitive.is_some() {
        if hierarchy != rh::NULL {
            return Err(Rc::param(rc::HIERARCHY, 3));
        }
        if public.has(oa::FIXED_TPM) || public.has(oa::FIXED_PARENT) {
            return Err(Rc::param(rc::ATTRIBUTES, 2));
        }
    }
    if public.name_alg.is_some() {
        key::scheme_checks_external(&public).p(2)?;
    }
    let private = match &sensitive {
        Some(s) => {
            check_sensitive(&public, s).p(1)?;
            Some(key::private_from_sensitive(&public, s).map_err(binding_plain)?)
        }
        None => None,
    };
    let mut k = KeyObject::new(
        public,
        sensitive,
        private,
        h,
        &key::handle_name(hierarchy),
        false,
    );
    // An external object's Qualified Name is its Name (the reference's ObjectSetLoadedAttributes).
    k.qualified_name = k.name.clone();
    match k.public.kind {
        alg::RSA if k.sensitive.is_none() => {
            k.rsa_public().p(2)?;
        }
        alg::ECC if k.sensitive.is_none() => {
            k.ecc_public().map_err(|_| Rc::new(rc::ECC_POINT)).p(2)?;
        }
        _ => {}
    }
    let name = k.name.clone();
    call.out_handle = Some(insert(cx, k)?);
    call.out.tpm2b(&name);
    Ok(())
}

/// The key object at a handle the dispatcher checked; a sequence object
/// there is TPM_RC_SEQUENCE.
pub fn key_at(cx: &mut Ctx, handle: u32, n: u8) -> CmdResult<Arc<KeyObject>> {
    key::get(cx.core, handle).map_err(|_| {
        if spec::handle_type(handle) == ht::TRANSIENT {
            Rc::new(rc::SEQUENCE)
        } else {
            Rc::handle(rc::HANDLE, n)
        }
    })
}

pub fn read_public(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    call.done()?;
    let k = key_at(cx, call.handle(0), 1)?;
    call.out.tpm2b(&k.public_bytes);
    call.out.tpm2b(&k.name);
    call.out.tpm2b(&k.qualified_name);
    Ok(())
}

pub fn object_change_auth(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let new_auth = call.params.tpm2b(spec::MAX_DIGEST).p(1)?.to_vec();
    call.done()?;
    let k = key_at(cx, call.handle(0), 1)?;
    let parent = key_at(cx, call.handle(1), 2)?;
    if k.primary
        || key::qualified_name(k.public.name_alg, &parent.qualified_name, &k.name)
            != k.qualified_name
    {
        return Err(Rc::handle(rc::TYPE, 2));
    }
    if trim_auth(&new_auth).len() > k.public.hash().size() {
        return Err(Rc::param(rc::SIZE, 1));
    }
    let mut s = k.sensitive.clone().ok_or(Rc::handle(rc::TYPE, 1))?;
    s.auth = trim_auth(&new_auth).to_vec();
    let private = ParentProtection::of(&parent)
        .map_err(|_| Rc::handle(rc::TYPE, 2))?
        .wrap(k.public.kind, &k.name, &s)?;
    call.out.tpm2b(&private);
    Ok(())
}

pub fn unseal(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    call.done()?;
    let k = key_at(cx, call.handle(0), 1)?;
    if k.public.kind != alg::KEYEDHASH {
        return Err(Rc::handle(rc::TYPE, 1));
    }
    if k.public.has(oa::DECRYPT) || k.public.has(oa::SIGN) || k.public.has(oa::RESTRICTED) {
        return Err(Rc::handle(rc::ATTRIBUTES, 1));
    }
    call.out.tpm2b(k.secret());
    Ok(())
}

pub fn evict_control(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let persistent = call.params.u32().p(1)?;
    call.done()?;
    if spec::handle_type(persistent) != ht::PERSISTENT {
        return Err(Rc::param(rc::VALUE, 1));
    }
    let auth = call.handle(0);
    let object = call.handle(1);
    let k = key_at(cx, object, 2)?;
    let platform_range = persistent >= 0x8180_0000;
    let owner_ok = auth == rh::OWNER && k.hierarchy != Hierarchy::Platform;
    let platform_ok = auth == rh::PLATFORM && k.hierarchy == Hierarchy::Platform;
    if !(owner_ok || platform_ok) {
        return Err(Rc::handle(rc::HIERARCHY, 2));
    }
    if platform_range != (auth == rh::PLATFORM) {
        return Err(Rc::param(rc::RANGE, 1));
    }
    let list = &mut cx.core.ps.persistent_objects;
    if spec::handle_type(object) == ht::PERSISTENT {
        if object != persistent {
            return Err(Rc::param(rc::HANDLE, 1));
        }
        list.retain(|(h, _)| *h != persistent);
    } else {
        if k.public.has(oa::ST_CLEAR) || k.hierarchy == Hierarchy::Null || k.sensitive.is_none() {
            return Err(Rc::handle(rc::ATTRIBUTES, 2));
        }
        if list.iter().any(|(h, _)| *h == persistent) {
            return Err(Rc::new(rc::NV_DEFINED));
        }
        if list.len() >= MAX_PERSISTENT {
            return Err(Rc::new(rc::NV_SPACE));
        }
        list.push((persistent, k.to_persistent()));
        list.sort_by_key(|(h, _)| *h);
    }
    cx.core.dirty = true;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use alloc::vec::Vec;

    use crate::Tpm;
    use crate::testutil::{Cmd, TestPlatform, platform, rc_of, started};

    pub const OWNER: u32 = 0x4000_0001;
    pub const ENDORSEMENT: u32 = 0x4000_000B;
    pub const NULL: u32 = 0x4000_0007;
    const CREATE_PRIMARY: u32 = 0x131;
    const CREATE: u32 = 0x153;
    const LOAD: u32 = 0x157;
    const READ_PUBLIC: u32 = 0x173;
    const UNSEAL: u32 = 0x15E;
    const OBJECT_CHANGE_AUTH: u32 = 0x150;
    const FLUSH: u32 = 0x165;
    const LOAD_EXTERNAL: u32 = 0x167;
    const CREATE_LOADED: u32 = 0x191;

    /// The EK policy (PolicySecret(TPM_RH_ENDORSEMENT)) of the EK templates.
    pub const EK_POLICY: [u8; 32] = [
        0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7,
        0x24, 0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14,
        0x69, 0xAA,
    ];

    /// EK Credential Profile template L-1 (RSA 2048, AES-128-CFB).
    pub fn ek_rsa() -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&[0x00, 0x01, 0x00, 0x0B, 0x00, 0x03, 0x00, 0xB2, 0x00, 0x20]);
        t.extend_from_slice(&EK_POLICY);
        t.extend_from_slice(&[0x00, 0x06, 0x00, 0x80, 0x00, 0x43, 0x00, 0x10, 0x08, 0x00]);
        t.extend_from_slice(&[0, 0, 0, 0, 0x01, 0x00]);
        t.extend_from_slice(&[0u8; 256]);
        t
    }

    /// EK Credential Profile template L-2 (ECC NIST P-256, AES-128-CFB).
    pub fn ek_ecc() -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&[0x00, 0x23, 0x00, 0x0B, 0x00, 0x03, 0x00, 0xB2, 0x00, 0x20]);
        t.extend_from_slice(&EK_POLICY);
        t.extend_from_slice(&[0x00, 0x06, 0x00, 0x80, 0x00, 0x43, 0x00, 0x10, 0x00, 0x03]);
        t.extend_from_slice(&[0x00, 0x10, 0x00, 0x20]);
        t.extend_from_slice(&[0u8; 32]);
        t.extend_from_slice(&[0x00, 0x20]);
        t.extend_from_slice(&[0u8; 32]);
        t
    }

    /// A template: type, attributes and the parameters + unique bytes.
    pub fn template(kind: u16, attributes: u32, parms_unique: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&kind.to_be_bytes());
        t.extend_from_slice(&0x000Bu16.to_be_bytes());
        t.extend_from_slice(&attributes.to_be_bytes());
        t.extend_from_slice(&[0, 0]);
        t.extend_from_slice(parms_unique);
        t
    }

    /// fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|restricted|decrypt.
    pub const SRK_ATTRS: u32 = 0x0003_0072;
    /// fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|restricted|sign.
    pub const AK_ATTRS: u32 = 0x0005_0072;
    /// fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|sign.
    pub const SIGN_ATTRS: u32 = 0x0004_0072;

    /// ECC P-256 storage parent (AES-128-CFB).
    pub fn srk_ecc() -> Vec<u8> {
        let mut p = alloc::vec![
            0x00, 0x06, 0x00, 0x80, 0x00, 0x43, 0x00, 0x10, 0x00, 0x03, 0x00, 0x10
        ];
        p.extend_from_slice(&[0, 0, 0, 0]);
        template(0x23, SRK_ATTRS, &p)
    }

    /// ECC P-256 signing key with ECDSA-SHA256 (`attrs` chooses restricted or not).
    pub fn ecc_signer(attrs: u32) -> Vec<u8> {
        template(
            0x23,
            attrs,
            &[
                0x00, 0x10, 0x00, 0x18, 0x00, 0x0B, 0x00, 0x03, 0x00, 0x10, 0, 0, 0, 0,
            ],
        )
    }

    /// RSA 2048 signing key with scheme `scheme` (+ SHA-256) or NULL.
    pub fn rsa_signer(attrs: u32, scheme: u16) -> Vec<u8> {
        let mut p = alloc::vec![0x00, 0x10];
        p.extend_from_slice(&scheme.to_be_bytes());
        if scheme != 0x10 {
            p.extend_from_slice(&[0x00, 0x0B]);
        }
        p.extend_from_slice(&[0x08, 0x00, 0, 0, 0, 0, 0, 0]);
        template(0x01, attrs, &p)
    }

    pub fn sensitive(auth: &[u8], data: &[u8]) -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(&u16::try_from(auth.len()).unwrap().to_be_bytes());
        s.extend_from_slice(auth);
        s.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
        s.extend_from_slice(data);
        s
    }

    /// Split a response with sessions: (rc, response handle if any, parameters).
    pub fn split(resp: &[u8], handle: bool) -> (u32, u32, Vec<u8>) {
        let rc = rc_of(resp);
        if rc != 0 {
            return (rc, 0, Vec::new());
        }
        let mut pos = 10;
        let mut h = 0;
        if handle {
            h = u32::from_be_bytes(resp[10..14].try_into().unwrap());
            pos = 14;
        }
        let size = u32::from_be_bytes(resp[pos..pos + 4].try_into().unwrap()) as usize;
        (rc, h, resp[pos + 4..pos + 4 + size].to_vec())
    }

    /// Read a TPM2B at `pos`, returning it and the position after it.
    pub fn tpm2b(b: &[u8], pos: usize) -> (Vec<u8>, usize) {
        let n = u16::from_be_bytes([b[pos], b[pos + 1]]) as usize;
        (b[pos + 2..pos + 2 + n].to_vec(), pos + 2 + n)
    }

    pub fn create_primary_cmd(hierarchy: u32, sens: &[u8], public: &[u8]) -> Cmd {
        Cmd::new(CREATE_PRIMARY)
            .h(hierarchy)
            .pw(b"")
            .tpm2b(sens)
            .tpm2b(public)
            .tpm2b(b"")
            .u32(0)
    }

    /// CreatePrimary: (rc, handle, outPublic, rest of the response parameters).
    pub fn primary(
        tpm: &mut Tpm<TestPlatform>,
        hierarchy: u32,
        auth: &[u8],
        public: &[u8],
    ) -> (u32, u32, Vec<u8>, Vec<u8>) {
        let cmd = create_primary_cmd(hierarchy, &sensitive(auth, b""), public);
        let (rc, h, body) = split(&tpm.execute(0, &cmd.bytes()), true);
        if rc != 0 {
            return (rc, 0, Vec::new(), Vec::new());
        }
        let (out_public, pos) = tpm2b(&body, 0);
        (rc, h, out_public, body[pos..].to_vec())
    }

    /// Create under `parent` (password `parent_auth`): (rc, outPrivate, outPublic).
    pub fn create(
        tpm: &mut Tpm<TestPlatform>,
        parent: u32,
        sens: &[u8],
        public: &[u8],
    ) -> (u32, Vec<u8>, Vec<u8>) {
        let cmd = Cmd::new(CREATE)
            .h(parent)
            .pw(b"")
            .tpm2b(sens)
            .tpm2b(public)
            .tpm2b(b"")
            .u32(0);
        let (rc, _, body) = split(&tpm.execute(0, &cmd.bytes()), false);
        if rc != 0 {
            return (rc, Vec::new(), Vec::new());
        }
        let (private, pos) = tpm2b(&body, 0);
        let (public, _) = tpm2b(&body, pos);
        (rc, private, public)
    }

    pub fn load(
        tpm: &mut Tpm<TestPlatform>,
        parent: u32,
        private: &[u8],
        public: &[u8],
    ) -> (u32, u32) {
        let cmd = Cmd::new(LOAD)
            .h(parent)
            .pw(b"")
            .tpm2b(private)
            .tpm2b(public);
        let (rc, h, _) = split(&tpm.execute(0, &cmd.bytes()), true);
        (rc, h)
    }

    pub fn flush(tpm: &mut Tpm<TestPlatform>, h: u32) {
        assert_eq!(rc_of(&tpm.execute(0, &Cmd::new(FLUSH).u32(h).bytes())), 0);
    }

    #[test]
    fn ek_templates_are_deterministic_across_reboots() {
        let mut tpm = started();
        let (rc, h1, rsa1, rest) = primary(&mut tpm, ENDORSEMENT, b"", &ek_rsa());
        assert_eq!(rc, 0, "{rc:#x}");
        assert_eq!(h1, 0x8000_0000);
        // outPublic: the template with a 256-byte modulus in unique.
        assert_eq!(&rsa1[..rsa1.len() - 256], &ek_rsa()[..ek_rsa().len() - 256]);
        assert!(rsa1[rsa1.len() - 256..].iter().any(|&b| b != 0));
        // creationData, creationHash, creationTicket, name.
        let (cd, pos) = tpm2b(&rest, 0);
        assert_eq!(&cd[..4], &[0, 0, 0, 0]);
        let (ch, pos) = tpm2b(&rest, pos);
        assert_eq!(ch, crate::crypto::HashAlg::Sha256.digest(&[&cd]));
        assert_eq!(&rest[pos..pos + 6], &[0x80, 0x21, 0x40, 0, 0, 0x0B]);
        let (ticket, pos) = tpm2b(&rest, pos + 6);
        assert_eq!(ticket.len(), 48);
        let (name, pos) = tpm2b(&rest, pos);
        assert_eq!(pos, rest.len());
        let mut expect = alloc::vec![0x00, 0x0B];
        expect.extend_from_slice(&crate::crypto::HashAlg::Sha256.digest(&[&rsa1]));
        assert_eq!(name, expect);
        let (rc, h2, ecc1, _) = primary(&mut tpm, ENDORSEMENT, b"", &ek_ecc());
        assert_eq!(rc, 0, "{rc:#x}");
        flush(&mut tpm, h1);
        flush(&mut tpm, h2);
        let (_, _, rsa2, _) = primary(&mut tpm, ENDORSEMENT, b"", &ek_rsa());
        assert_eq!(rsa1, rsa2);
        // A simulated reboot: the state blob restored into a new TPM.
        let blob = tpm.state();
        let mut tpm2 = Tpm::restore(platform(), &blob).unwrap();
        assert_eq!(rc_of(&tpm2.execute(0, &Cmd::new(0x144).u16(0).bytes())), 0);
        let (_, _, rsa3, _) = primary(&mut tpm2, ENDORSEMENT, b"", &ek_rsa());
        let (_, _, ecc3, _) = primary(&mut tpm2, ENDORSEMENT, b"", &ek_ecc());
        assert_eq!(rsa1, rsa3);
        assert_eq!(ecc1, ecc3);
        // Another TPM (other seeds) gives another key; the owner hierarchy too.
        let (_, _, other, _) = primary(&mut tpm2, OWNER, b"", &ek_ecc());
        assert_ne!(other, ecc1);
    }

    /// EK Credential Profile high-range templates H-1 (RSA 2048), H-2 (P-256)
    /// and H-3 (P-384, SHA-384): userWithAuth|adminWithPolicy, PolicyB, empty unique.
    fn ek_high(n: u8) -> Vec<u8> {
        const POLICY_B_256: &str =
            "CA3D0A99A2B93906F7A3342414EFCFB3A385D44CD1FD459089D19B5071C0B7A0";
        const POLICY_B_384: &str = "B26E7D28D11A50BC53D882BCF5FD3A1A074148BB35D3B4E4CB1C0AD9BDE419CACB47BA09699646150F9FC000F3F80E12";
        let hex = |s: &str| crate::alg::testing::hex(s);
        let (kind, name_alg, policy, aes_bits): (u16, u16, Vec<u8>, u16) = match n {
            1 => (0x01, 0x0B, hex(POLICY_B_256), 128),
            2 => (0x23, 0x0B, hex(POLICY_B_256), 128),
            _ => (0x23, 0x0C, hex(POLICY_B_384), 256),
        };
        let mut t = Vec::new();
        t.extend_from_slice(&kind.to_be_bytes());
        t.extend_from_slice(&name_alg.to_be_bytes());
        t.extend_from_slice(&0x0003_00F2u32.to_be_bytes());
        t.extend_from_slice(&u16::try_from(policy.len()).unwrap().to_be_bytes());
        t.extend_from_slice(&policy);
        t.extend_from_slice(&[0x00, 0x06]);
        t.extend_from_slice(&aes_bits.to_be_bytes());
        t.extend_from_slice(&[0x00, 0x43, 0x00, 0x10]);
        match n {
            1 => t.extend_from_slice(&[0x08, 0x00, 0, 0, 0, 0, 0, 0]),
            2 => t.extend_from_slice(&[0, 3, 0, 0x10, 0, 0, 0, 0]),
            _ => t.extend_from_slice(&[0, 4, 0, 0x10, 0, 0, 0, 0]),
        }
        t
    }

    #[test]
    fn high_range_ek_templates_are_deterministic() {
        let mut tpm = started();
        for n in 1..=3 {
            let (rc, h, a, _) = primary(&mut tpm, ENDORSEMENT, b"", &ek_high(n));
            assert_eq!(rc, 0, "H-{n}: {rc:#x}");
            flush(&mut tpm, h);
            let blob = tpm.state();
            let mut again = Tpm::restore(platform(), &blob).unwrap();
            assert_eq!(rc_of(&again.execute(0, &Cmd::new(0x144).u16(0).bytes())), 0);
            let (rc, _, b, _) = primary(&mut again, ENDORSEMENT, b"", &ek_high(n));
            assert_eq!(rc, 0);
            assert_eq!(a, b, "H-{n}");
        }
        // H-4 (P-521, SHA-512) and H-5 (SM2, SM3) need algorithms this TPM lacks.
        let mut t = ek_high(3);
        t[3] = 0x0D;
        assert_eq!(primary(&mut tpm, ENDORSEMENT, b"", &t).0, 0x2C3);
    }

    #[test]
    fn create_primary_rejects_bad_templates() {
        let mut tpm = started();
        let bad = |attrs: u32| {
            let mut t = ek_ecc();
            t[4..8].copy_from_slice(&attrs.to_be_bytes());
            t
        };
        // fixedTPM without fixedParent; restricted with sign and decrypt;
        // no sensitiveDataOrigin for an asymmetric key; reserved bit.
        for (attrs, code) in [
            (0x0003_00A2, 0x2C2),
            (0x0007_00B2, 0x2C2),
            (0x0003_0092, 0x2C2),
            (0x0003_00B3, 0x2E1),
        ] {
            assert_eq!(
                primary(&mut tpm, ENDORSEMENT, b"", &bad(attrs)).0,
                code,
                "{attrs:#x}"
            );
        }
        // A restricted decryption key without a symmetric algorithm.
        let t = template(
            0x23,
            SRK_ATTRS,
            &[0, 0x10, 0, 0x10, 0, 3, 0, 0x10, 0, 0, 0, 0],
        );
        assert_eq!(primary(&mut tpm, OWNER, b"", &t).0, 0x2D6);
        // A signing key with a symmetric algorithm; an unrestricted signer with ECDH.
        let t = template(
            0x23,
            SIGN_ATTRS,
            &[0, 6, 0, 0x80, 0, 0x43, 0, 0x10, 0, 3, 0, 0x10, 0, 0, 0, 0],
        );
        assert_eq!(primary(&mut tpm, OWNER, b"", &t).0, 0x2D6);
        let t = template(
            0x23,
            SIGN_ATTRS,
            &[0, 0x10, 0, 0x19, 0, 0x0B, 0, 3, 0, 0x10, 0, 0, 0, 0],
        );
        assert_eq!(primary(&mut tpm, OWNER, b"", &t).0, 0x2D2);
        // A restricted signer needs a signing scheme.
        assert_eq!(
            primary(&mut tpm, OWNER, b"", &rsa_signer(AK_ATTRS, 0x10)).0,
            0x2D2
        );
        // Unknown curve, unknown type, NULL nameAlg, bad auth policy size.
        let mut t = ek_ecc();
        t[51] = 0x09;
        assert_eq!(primary(&mut tpm, ENDORSEMENT, b"", &t).0, 0x2E6);
        let mut t = ek_ecc();
        t[1] = 0x24;
        assert_eq!(primary(&mut tpm, ENDORSEMENT, b"", &t).0, 0x2CA);
        let mut t = ek_ecc();
        t[3] = 0x10;
        assert_eq!(primary(&mut tpm, ENDORSEMENT, b"", &t).0, 0x2C3);
        // Trailing bytes inside TPM2B_PUBLIC; an empty TPM2B_PUBLIC.
        let mut t = ek_ecc();
        t.push(0);
        assert_eq!(primary(&mut tpm, ENDORSEMENT, b"", &t).0, 0x2D5);
        assert_eq!(primary(&mut tpm, ENDORSEMENT, b"", &[]).0, 0x2D5);
        // userAuth longer than the nameAlg digest.
        assert_eq!(primary(&mut tpm, OWNER, &[1; 33], &srk_ecc()).0, 0x1D5);
        // A disabled hierarchy cannot be used, wrong hierarchy auth fails.
        let cmd = Cmd::new(CREATE_PRIMARY)
            .h(OWNER)
            .pw(b"x")
            .tpm2b(&sensitive(b"", b""))
            .tpm2b(&srk_ecc())
            .tpm2b(b"")
            .u32(0);
        assert_eq!(rc_of(&tpm.execute(0, &cmd.bytes())), 0x9A2);
        // Objects fill the three slots.
        for _ in 0..3 {
            assert_eq!(primary(&mut tpm, NULL, b"", &srk_ecc()).0, 0);
        }
        assert_eq!(primary(&mut tpm, NULL, b"", &srk_ecc()).0, 0x902);
    }

    #[test]
    fn create_load_readpublic_unseal_changeauth() {
        let mut tpm = started();
        let (rc, srk, _, _) = primary(&mut tpm, OWNER, b"", &srk_ecc());
        assert_eq!(rc, 0);
        // A sealed data object (keyedhash, no sign/decrypt, user data).
        let seal = template(8, 0x0000_0052, &[0x00, 0x10, 0x00, 0x00]);
        let (rc, private, public) = create(&mut tpm, srk, &sensitive(b"pw", b"secret"), &seal);
        assert_eq!(rc, 0, "{rc:#x}");
        // Data with sensitiveDataOrigin SET is refused; so is no data without it.
        let seal_origin = template(8, 0x0000_0072, &[0x00, 0x10, 0x00, 0x00]);
        assert_eq!(
            create(&mut tpm, srk, &sensitive(b"", b"x"), &seal_origin).0,
            0x2C2
        );
        assert_eq!(create(&mut tpm, srk, &sensitive(b"", b""), &seal).0, 0x2C2);
        let (rc, item) = load(&mut tpm, srk, &private, &public);
        assert_eq!(rc, 0, "{rc:#x}");
        // ReadPublic: the public area, its Name and Qualified Name.
        let resp = tpm.execute(0, &Cmd::new(READ_PUBLIC).h(item).bytes());
        assert_eq!(rc_of(&resp), 0);
        let (out, pos) = tpm2b(&resp, 10);
        assert_eq!(out, public);
        let (name, pos) = tpm2b(&resp, pos);
        assert_eq!(
            &name[2..],
            crate::crypto::HashAlg::Sha256.digest(&[&public]).as_slice()
        );
        let (qn, pos) = tpm2b(&resp, pos);
        assert_eq!(qn.len(), 34);
        assert_eq!(pos, resp.len());
        // A sequence object has no public area.
        let seq = tpm.execute(0, &Cmd::new(0x186).tpm2b(b"").u16(0x0B).bytes());
        let seq = u32::from_be_bytes(seq[10..14].try_into().unwrap());
        let resp = tpm.execute(0, &Cmd::new(READ_PUBLIC).h(seq).bytes());
        assert_eq!(rc_of(&resp), 0x103);
        flush(&mut tpm, seq);
        let unseal = |tpm: &mut Tpm<TestPlatform>, pw: &[u8]| {
            let cmd = Cmd::new(UNSEAL).h(item).pw(pw);
            split(&tpm.execute(0, &cmd.bytes()), false)
        };
        assert_eq!(unseal(&mut tpm, b"wrong").0, 0x98E);
        let (rc, _, out) = unseal(&mut tpm, b"pw");
        assert_eq!(rc, 0);
        assert_eq!(out, [&[0, 6][..], b"secret"].concat());
        // A tampered private blob fails the integrity check.
        let mut bad = private.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(load(&mut tpm, srk, &bad, &public).0, 0x1DF);
        // Another public area for the same private: integrity fails too.
        let mut other = public.clone();
        other[4] ^= 0x04; // flip userWithAuth... fixedParent bit differs
        assert_ne!(load(&mut tpm, srk, &private, &other).0, 0);
        // ObjectChangeAuth gives a new private that loads with the new auth.
        let cmd = Cmd::new(OBJECT_CHANGE_AUTH)
            .h(item)
            .h(srk)
            .pw(b"pw")
            .tpm2b(b"new");
        let (rc, _, body) = split(&tpm.execute(0, &cmd.bytes()), false);
        assert_eq!(rc, 0, "{rc:#x}");
        let (new_private, _) = tpm2b(&body, 0);
        flush(&mut tpm, item);
        let (rc, item2) = load(&mut tpm, srk, &new_private, &public);
        assert_eq!(rc, 0);
        let cmd = Cmd::new(UNSEAL).h(item2).pw(b"new");
        assert_eq!(split(&tpm.execute(0, &cmd.bytes()), false).0, 0);
        // A primary cannot change its auth; a signing key cannot be a parent.
        let cmd = Cmd::new(OBJECT_CHANGE_AUTH)
            .h(srk)
            .h(srk)
            .pw(b"")
            .tpm2b(b"n");
        assert_eq!(rc_of(&tpm.execute(0, &cmd.bytes())), 0x28A);
        flush(&mut tpm, item2);
        let (rc, signer, _, _) = primary(&mut tpm, OWNER, b"", &ecc_signer(SIGN_ATTRS));
        assert_eq!(rc, 0);
        assert_eq!(
            create(&mut tpm, signer, &sensitive(b"", b"x"), &seal).0,
            0x18A
        );
        // Unseal of a non-data object.
        let cmd = Cmd::new(UNSEAL).h(signer).pw(b"");
        assert_eq!(rc_of(&tpm.execute(0, &cmd.bytes())), 0x18A);
    }

    #[test]
    fn create_loaded_and_load_external() {
        let mut tpm = started();
        let cmd = Cmd::new(CREATE_LOADED)
            .h(OWNER)
            .pw(b"")
            .tpm2b(&sensitive(b"", b""))
            .tpm2b(&srk_ecc());
        let (rc, srk, _) = split(&tpm.execute(0, &cmd.bytes()), true);
        assert_eq!(rc, 0, "{rc:#x}");
        let cmd = Cmd::new(CREATE_LOADED)
            .h(srk)
            .pw(b"")
            .tpm2b(&sensitive(b"", b""))
            .tpm2b(&ecc_signer(SIGN_ATTRS));
        let (rc, key, body) = split(&tpm.execute(0, &cmd.bytes()), true);
        assert_eq!(rc, 0, "{rc:#x}");
        let (private, pos) = tpm2b(&body, 0);
        let (public, _) = tpm2b(&body, pos);
        assert!(!private.is_empty());
        flush(&mut tpm, key);
        assert_eq!(load(&mut tpm, srk, &private, &public).0, 0);
        // LoadExternal of the public part alone, in the owner hierarchy.
        let cmd = Cmd::new(LOAD_EXTERNAL).u16(0).tpm2b(&public).u32(OWNER);
        let resp = tpm.execute(0, &cmd.bytes());
        assert_eq!(rc_of(&resp), 0);
        let ext = u32::from_be_bytes(resp[10..14].try_into().unwrap());
        // An external object's Qualified Name is its Name.
        let rp = tpm.execute(0, &Cmd::new(READ_PUBLIC).h(ext).bytes());
        let (_, pos) = tpm2b(&rp, 10);
        let (name, pos) = tpm2b(&rp, pos);
        assert_eq!(tpm2b(&rp, pos).0, name);
        flush(&mut tpm, ext);
        // With a sensitive area it must be in the null hierarchy.
        let mut sens = alloc::vec![0x00, 0x08, 0, 0, 0, 0, 0, 4];
        sens.extend_from_slice(b"abcd");
        let seal = template(8, 0x0000_0040, &[0x00, 0x10, 0x00, 0x00]);
        let cmd = Cmd::new(LOAD_EXTERNAL).tpm2b(&sens).tpm2b(&seal).u32(OWNER);
        assert_eq!(rc_of(&tpm.execute(0, &cmd.bytes())), 0x3C5);
        let cmd = Cmd::new(LOAD_EXTERNAL).tpm2b(&sens).tpm2b(&seal).u32(NULL);
        let resp = tpm.execute(0, &cmd.bytes());
        assert_eq!(rc_of(&resp), 0);
        let h = u32::from_be_bytes(resp[10..14].try_into().unwrap());
        let cmd = Cmd::new(UNSEAL).h(h).pw(b"");
        assert_eq!(split(&tpm.execute(0, &cmd.bytes()), false).2, b"\0\x04abcd");
        flush(&mut tpm, h);
        // A point off the curve is refused.
        let mut off = public.clone();
        let n = off.len();
        off[n - 1] ^= 1;
        let cmd = Cmd::new(LOAD_EXTERNAL).u16(0).tpm2b(&off).u32(OWNER);
        assert_eq!(rc_of(&tpm.execute(0, &cmd.bytes())), 0x2E7);
    }
}

#[cfg(test)]
mod evict_tests {
    use super::tests::*;
    use crate::Tpm;
    use crate::testutil::{Cmd, platform, rc_of, started};

    const EVICT: u32 = 0x120;
    const PLATFORM: u32 = 0x4000_000C;

    #[test]
    fn evict_control_persists_across_restore() {
        let mut tpm = started();
        let (rc, srk, srk_pub, _) = primary(&mut tpm, OWNER, b"pw", &srk_ecc());
        assert_eq!(rc, 0);
        let evict = |owner: u32, obj: u32, p: u32| Cmd::new(EVICT).h(owner).h(obj).pw(b"").u32(p);
        // Owner handles are 0x81000000..=0x817FFFFF.
        assert_eq!(
            rc_of(&tpm.execute(0, &evict(OWNER, srk, 0x8180_0001).bytes())),
            0x1CD
        );
        assert_eq!(
            rc_of(&tpm.execute(0, &evict(PLATFORM, srk, 0x8180_0001).bytes())),
            0x285
        );
        assert_eq!(
            rc_of(&tpm.execute(0, &evict(OWNER, srk, 0x8100_0001).bytes())),
            0
        );
        assert_eq!(
            rc_of(&tpm.execute(0, &evict(OWNER, srk, 0x8100_0001).bytes())),
            0x14C
        );
        // Null-hierarchy objects cannot be made persistent.
        let (_, tmp, _, _) = primary(&mut tpm, NULL, b"", &srk_ecc());
        assert_eq!(
            rc_of(&tpm.execute(0, &evict(OWNER, tmp, 0x8100_0002).bytes())),
            0x282
        );
        flush(&mut tpm, tmp);
        flush(&mut tpm, srk);
        // The persistent key works as a parent (with its password) after a restore.
        let blob = tpm.state();
        let mut tpm = Tpm::restore(platform(), &blob).unwrap();
        assert_eq!(rc_of(&tpm.execute(0, &Cmd::new(0x144).u16(0).bytes())), 0);
        let resp = tpm.execute(0, &Cmd::new(0x173).h(0x8100_0001).bytes());
        assert_eq!(rc_of(&resp), 0);
        assert_eq!(tpm2b(&resp, 10).0, srk_pub);
        let seal = template(8, 0x0000_0052, &[0x00, 0x10, 0x00, 0x00]);
        let cmd = |pw: &[u8]| {
            Cmd::new(0x153)
                .h(0x8100_0001)
                .pw(pw)
                .tpm2b(&sensitive(b"", b"data"))
                .tpm2b(&seal)
                .tpm2b(b"")
                .u32(0)
        };
        assert_eq!(rc_of(&tpm.execute(0, &cmd(b"").bytes())), 0x98E);
        assert_eq!(split(&tpm.execute(0, &cmd(b"pw").bytes()), false).0, 0);
        // GetCapability(TPM_CAP_HANDLES, persistent) lists it.
        let resp = tpm.execute(0, &Cmd::new(0x17A).u32(1).u32(0x8100_0000).u32(8).bytes());
        assert_eq!(&resp[resp.len() - 8..], &[0, 0, 0, 1, 0x81, 0, 0, 1]);
        // Evict it again: gone.
        let c = Cmd::new(EVICT)
            .h(OWNER)
            .h(0x8100_0001)
            .pw(b"")
            .u32(0x8100_0002);
        assert_eq!(rc_of(&tpm.execute(0, &c.bytes())), 0x1CB);
        let c = Cmd::new(EVICT)
            .h(OWNER)
            .h(0x8100_0001)
            .pw(b"")
            .u32(0x8100_0001);
        assert_eq!(rc_of(&tpm.execute(0, &c.bytes())), 0);
        assert_eq!(
            rc_of(&tpm.execute(0, &Cmd::new(0x173).h(0x8100_0001).bytes())),
            0x18B
        );
        assert!(tpm.core.ps.persistent_objects.is_empty());
    }
}

/// Timings of the key commands (printed, never asserted): run with
/// `cargo test -p rivet-tpm --release key_command_timings -- --nocapture`.
#[cfg(test)]
mod timing_tests {
    use std::time::{Duration, Instant};
    use std::vec::Vec;

    use super::tests::*;
    use crate::testutil::{Cmd, rc_of, started};

    fn median(mut v: Vec<Duration>) -> Duration {
        v.sort();
        v[v.len() / 2]
    }

    #[test]
    fn key_command_timings() {
        let mut tpm = started();
        let time = |f: &mut dyn FnMut(usize)| {
            let runs: Vec<Duration> = (0..7)
                .map(|i| {
                    let t = Instant::now();
                    f(i);
                    t.elapsed()
                })
                .collect();
            median(runs)
        };
        // Uncached EK creation: another unique byte gives another template each run.
        let rsa = time(&mut |i| {
            let mut t = ek_rsa();
            let n = t.len();
            t[n - 1] = i as u8 + 1;
            let (rc, h, _, _) = primary(&mut tpm, ENDORSEMENT, b"", &t);
            assert_eq!(rc, 0);
            flush(&mut tpm, h);
        });
        let rsa_cached = time(&mut |_| {
            let (rc, h, _, _) = primary(&mut tpm, ENDORSEMENT, b"", &ek_rsa());
            assert_eq!(rc, 0);
            flush(&mut tpm, h);
        });
        let ecc = time(&mut |i| {
            let mut t = ek_ecc();
            let n = t.len();
            t[n - 1] = i as u8 + 1;
            let (rc, h, _, _) = primary(&mut tpm, ENDORSEMENT, b"", &t);
            assert_eq!(rc, 0);
            flush(&mut tpm, h);
        });
        let (_, ecc_key, _, _) = primary(&mut tpm, OWNER, b"", &ecc_signer(SIGN_ATTRS));
        let (_, rsa_key, _, _) = primary(&mut tpm, OWNER, b"", &rsa_signer(SIGN_ATTRS, 0x14));
        let digest = [0x5Au8; 32];
        let null_ticket = [0x80, 0x24, 0x40, 0, 0, 7, 0, 0];
        let mut sign = |k: u32| {
            let cmd = Cmd::new(0x15D)
                .h(k)
                .pw(b"")
                .tpm2b(&digest)
                .u16(0x10)
                .b(&null_ticket);
            assert_eq!(rc_of(&tpm.execute(0, &cmd.bytes())), 0);
        };
        let mut runs = Vec::new();
        for _ in 0..15 {
            let t = Instant::now();
            sign(ecc_key);
            runs.push(t.elapsed());
        }
        let sign_ecc = median(runs);
        let mut runs = Vec::new();
        for _ in 0..15 {
            let t = Instant::now();
            sign(rsa_key);
            runs.push(t.elapsed());
        }
        let sign_rsa = median(runs);
        flush(&mut tpm, rsa_key);
        flush(&mut tpm, ecc_key);
        let (_, ak, _, _) = primary(&mut tpm, OWNER, b"", &ecc_signer(AK_ATTRS));
        let sel = [0, 0, 0, 1, 0, 0x0B, 3, 0xFF, 0xFF, 0xFF];
        let mut runs = Vec::new();
        for _ in 0..15 {
            let cmd = Cmd::new(0x158)
                .h(ak)
                .pw(b"")
                .tpm2b(&[1; 32])
                .u16(0x10)
                .b(&sel);
            let t = Instant::now();
            assert_eq!(rc_of(&tpm.execute(0, &cmd.bytes())), 0);
            runs.push(t.elapsed());
        }
        let quote = median(runs);
        // Create + Load of an ECC P-256 signing key under an ECC storage primary.
        let (_, srk, _, _) = primary(&mut tpm, OWNER, b"", &srk_ecc());
        let mut runs = Vec::new();
        for _ in 0..15 {
            let t = Instant::now();
            let (rc, private, public) =
                create(&mut tpm, srk, &sensitive(b"", b""), &ecc_signer(SIGN_ATTRS));
            assert_eq!(rc, 0);
            let (rc, h) = load(&mut tpm, srk, &private, &public);
            assert_eq!(rc, 0);
            runs.push(t.elapsed());
            flush(&mut tpm, h);
        }
        let create_load = median(runs);
        flush(&mut tpm, srk);
        std::println!("Create+Load ECC P-256: {create_load:?}");
        // NV_Write of 1 KiB (a commit of the whole state blob each time) and the blob alone.
        let nv = 0x0150_0010u32;
        let mut public = nv.to_be_bytes().to_vec();
        public.extend_from_slice(&[0, 0x0B, 0x00, 0x06, 0x00, 0x04, 0, 0, 0x04, 0x00]);
        let def = Cmd::new(0x12A).h(OWNER).pw(b"").tpm2b(b"").tpm2b(&public);
        assert_eq!(rc_of(&tpm.execute(0, &def.bytes())), 0);
        let write = Cmd::new(0x137)
            .h(nv)
            .h(nv)
            .pw(b"")
            .tpm2b(&[7; 1024])
            .u16(0)
            .bytes();
        let mut runs = Vec::new();
        for _ in 0..51 {
            let t = Instant::now();
            assert_eq!(rc_of(&tpm.execute(0, &write)), 0);
            runs.push(t.elapsed());
        }
        let nv_write = median(runs);
        let mut runs = Vec::new();
        for _ in 0..51 {
            let t = Instant::now();
            std::hint::black_box(tpm.state());
            runs.push(t.elapsed());
        }
        let blob = median(runs);
        std::println!("NV_Write 1 KiB: {nv_write:?}; state blob alone: {blob:?}");
        std::println!(
            "CreatePrimary RSA-2048 EK: {rsa:?} (cached template: {rsa_cached:?})\n\
             CreatePrimary ECC P-256 EK: {ecc:?}\n\
             Sign ECDSA P-256: {sign_ecc:?}\nSign RSA-2048 RSASSA: {sign_rsa:?}\n\
             Quote ECDSA P-256, 24 PCRs: {quote:?}"
        );
    }
}

/// Truncated and corrupted key commands get a well-formed response, never a panic.
#[cfg(test)]
mod mangled_input_tests {
    use std::vec::Vec;

    use super::tests::*;
    use crate::testutil::{Cmd, rc_of, started};

    #[test]
    fn no_panic_on_mangled_key_commands() {
        let mut tpm = started();
        let (_, srk, _, _) = primary(&mut tpm, OWNER, b"", &srk_ecc());
        let (rc, private, public) =
            create(&mut tpm, srk, &sensitive(b"", b""), &ecc_signer(SIGN_ATTRS));
        assert_eq!(rc, 0);
        let (_, key) = load(&mut tpm, srk, &private, &public);
        let ctx = tpm.execute(0, &Cmd::new(0x162).h(key).bytes())[10..].to_vec();
        let digest = [1u8; 32];
        let null_ticket = [0x80, 0x24, 0x40, 0, 0, 7, 0, 0];
        let sel = [0, 0, 0, 1, 0, 0x0B, 3, 0xFF, 0, 0];
        let cmds: Vec<Cmd> = std::vec![
            create_primary_cmd(NULL, &sensitive(b"a", b""), &ecc_signer(SIGN_ATTRS)),
            Cmd::new(0x153)
                .h(srk)
                .pw(b"")
                .tpm2b(&sensitive(b"", b"x"))
                .tpm2b(&template(8, 0x52, &[0, 0x10, 0, 0]))
                .tpm2b(b"")
                .u32(0),
            Cmd::new(0x157)
                .h(srk)
                .pw(b"")
                .tpm2b(&private)
                .tpm2b(&public),
            Cmd::new(0x15D)
                .h(key)
                .pw(b"")
                .tpm2b(&digest)
                .u16(0x10)
                .b(&null_ticket),
            Cmd::new(0x177)
                .h(key)
                .tpm2b(&digest)
                .b(&[0, 0x18, 0, 0x0B, 0, 1, 5, 0, 1, 6]),
            Cmd::new(0x158).h(key).pw(b"").tpm2b(b"n").u16(0x10).b(&sel),
            Cmd::new(0x148)
                .h(key)
                .h(key)
                .pw(b"")
                .pw(b"")
                .tpm2b(b"n")
                .u16(0x10),
            Cmd::new(0x167).u16(0).tpm2b(&public).u32(OWNER),
            Cmd::new(0x161).b(&ctx),
            Cmd::new(0x154)
                .h(key)
                .pw(b"")
                .tpm2b(&[0, 2, 1, 2, 0, 2, 3, 4]),
            Cmd::new(0x174).h(key).tpm2b(b"m").u16(0x10).tpm2b(b""),
            Cmd::new(0x164)
                .h(key)
                .pw(b"")
                .u8(0)
                .u16(0x43)
                .tpm2b(&[0; 16])
                .tpm2b(b"data"),
            Cmd::new(0x120).h(OWNER).h(key).pw(b"").u32(0x8100_0005),
            Cmd::new(0x150).h(key).h(srk).pw(b"").tpm2b(b"new"),
        ];
        let mut seed = 0x2545_F491u32;
        for c in &cmds {
            let bytes = c.bytes();
            for n in 0..bytes.len() {
                rc_of(&tpm.execute(0, &bytes[..n]));
            }
            for _ in 0..200 {
                let mut b = bytes.clone();
                for _ in 0..1 + (seed >> 29) {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    let i = (seed >> 8) as usize % b.len();
                    b[i] ^= (seed >> 24) as u8 | 1;
                }
                let resp = tpm.execute(0, &b);
                rc_of(&resp);
                // Keep the slots for the next attempts.
                if resp.len() >= 14 && rc_of(&resp) == 0 {
                    let h = u32::from_be_bytes(resp[10..14].try_into().unwrap());
                    if h & 0xFF00_0000 == 0x8000_0000 && h != srk && h != key {
                        let _ = tpm.execute(0, &Cmd::new(0x165).u32(h).bytes());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod seed_change_tests {
    use super::tests::*;
    use crate::testutil::{Cmd, rc_of, started};

    const PLATFORM: u32 = 0x4000_000C;

    #[test]
    fn change_eps_gives_new_ek_and_clear_keeps_platform_objects() {
        let mut tpm = started();
        let (_, ek, before, _) = primary(&mut tpm, ENDORSEMENT, b"", &ek_ecc());
        let (_, pk, _, _) = primary(&mut tpm, PLATFORM, b"", &srk_ecc());
        let evict = |a: u32, o: u32, p: u32| Cmd::new(0x120).h(a).h(o).pw(b"").u32(p);
        assert_eq!(
            rc_of(&tpm.execute(0, &evict(OWNER, ek, 0x8101_0001).bytes())),
            0
        );
        assert_eq!(
            rc_of(&tpm.execute(0, &evict(PLATFORM, pk, 0x8180_0001).bytes())),
            0
        );
        // ChangeEPS flushes the EK (transient and persistent), a new EK differs.
        assert_eq!(
            rc_of(&tpm.execute(0, &Cmd::new(0x124).h(PLATFORM).pw(b"").bytes())),
            0
        );
        assert_eq!(
            rc_of(&tpm.execute(0, &Cmd::new(0x173).h(ek).bytes())),
            0x910
        );
        assert_eq!(
            rc_of(&tpm.execute(0, &Cmd::new(0x173).h(0x8101_0001).bytes())),
            0x18B
        );
        let (rc, _, after, _) = primary(&mut tpm, ENDORSEMENT, b"", &ek_ecc());
        assert_eq!(rc, 0);
        assert_ne!(before, after);
        // Clear drops owner/endorsement objects; the platform's persistent key stays.
        assert_eq!(
            rc_of(&tpm.execute(0, &Cmd::new(0x126).h(PLATFORM).pw(b"").bytes())),
            0
        );
        assert_eq!(
            rc_of(&tpm.execute(0, &Cmd::new(0x173).h(0x8180_0001).bytes())),
            0
        );
        assert_eq!(rc_of(&tpm.execute(0, &Cmd::new(0x173).h(pk).bytes())), 0);
        // HierarchyControl disabling the platform hierarchy flushes its transient objects.
        let hc = Cmd::new(0x121).h(PLATFORM).pw(b"").u32(PLATFORM).u8(0);
        assert_eq!(rc_of(&tpm.execute(0, &hc.bytes())), 0);
        assert_eq!(
            rc_of(&tpm.execute(0, &Cmd::new(0x173).h(pk).bytes())),
            0x910
        );
    }
}

#[cfg(test)]
mod dictionary_attack_tests {
    use super::tests::*;
    use crate::testutil::{Cmd, rc_of, started};

    /// Wrong passwords on a key without noDA count toward lockout; a noDA key's do not.
    #[test]
    fn wrong_object_passwords_lock_out_unless_no_da() {
        let mut tpm = started();
        let (_, srk, _, _) = primary(&mut tpm, OWNER, b"", &srk_ecc());
        let seal = template(8, 0x0000_0052, &[0x00, 0x10, 0x00, 0x00]);
        let seal_no_da = template(8, 0x0000_0452, &[0x00, 0x10, 0x00, 0x00]);
        let (_, p1, u1) = create(&mut tpm, srk, &sensitive(b"pw", b"a"), &seal);
        let (_, p2, u2) = create(&mut tpm, srk, &sensitive(b"pw", b"b"), &seal_no_da);
        let (_, da) = load(&mut tpm, srk, &p1, &u1);
        flush(&mut tpm, srk);
        let (_, srk, _, _) = primary(&mut tpm, OWNER, b"", &srk_ecc());
        let (_, no_da) = load(&mut tpm, srk, &p2, &u2);
        let unseal = |h: u32, pw: &[u8]| Cmd::new(0x15E).h(h).pw(pw).bytes();
        for _ in 0..5 {
            // DA-exempt: TPM_RC_BAD_AUTH rather than TPM_RC_AUTH_FAIL.
            assert_eq!(rc_of(&tpm.execute(0, &unseal(no_da, b"x"))), 0x9A2);
        }
        assert_eq!(rc_of(&tpm.execute(0, &unseal(no_da, b"pw"))), 0);
        for _ in 0..3 {
            assert_eq!(rc_of(&tpm.execute(0, &unseal(da, b"x"))), 0x98E);
        }
        assert_eq!(rc_of(&tpm.execute(0, &unseal(da, b"pw"))), 0x921);
        // The noDA object still works while the TPM is locked out.
        assert_eq!(rc_of(&tpm.execute(0, &unseal(no_da, b"pw"))), 0);
    }
}

#[cfg(test)]
mod disabled_hierarchy_tests {
    use super::tests::*;
    use crate::testutil::{Cmd, rc_of, started};

    /// A persistent owner object is TPM_RC_HANDLE while the owner hierarchy is disabled.
    #[test]
    fn persistent_object_of_disabled_hierarchy_is_not_loaded() {
        let mut tpm = started();
        let (_, srk, _, _) = primary(&mut tpm, OWNER, b"", &srk_ecc());
        let evict = Cmd::new(0x120).h(OWNER).h(srk).pw(b"").u32(0x8100_0001);
        assert_eq!(rc_of(&tpm.execute(0, &evict.bytes())), 0);
        let read = Cmd::new(0x173).h(0x8100_0001).bytes();
        assert_eq!(rc_of(&tpm.execute(0, &read)), 0);
        let off = Cmd::new(0x121).h(OWNER).pw(b"").u32(OWNER).u8(0);
        assert_eq!(rc_of(&tpm.execute(0, &off.bytes())), 0);
        assert_eq!(rc_of(&tpm.execute(0, &read)), 0x18B);
    }
}
