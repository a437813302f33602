//! Attestation commands (Part 3 §18): Quote, Certify, CertifyCreation and
//! GetTime. Each fills a TPMS_ATTEST (TPM_GENERATED_VALUE, the signer's
//! Qualified Name, extraData, clock info, firmware version, the attested
//! structure) and signs its digest with the signing key's scheme.

use alloc::vec::Vec;

use crate::Core;
use crate::alg::kdfa;
use crate::command::object::key_at;
use crate::command::signature::{
    SigScheme, check_signer, read_sig_scheme, select_scheme, sign_digest,
};
use crate::crypto::{HashAlg, ct_eq};
use crate::dispatch::{Call, Ctx};
use crate::hierarchy::Hierarchy;
use crate::key::{self, KeyObject, MAX_DATA};
use crate::marshal::Writer;
use crate::pcr::{Selection, read_selection, write_selection};
use crate::rc::{self, CmdResult, Locate, Rc};
use crate::spec::{self, PCR_COUNT, TPM_GENERATED, alg, rh, st};

/// TPM_PT_FIRMWARE_VERSION_1 || _2 (command/capability.rs reports 1 and 0).
const FIRMWARE_VERSION: u64 = 1 << 32;

/// H(selected PCR values in selection order); unallocated PCRs are dropped
/// from the selection first.
pub fn pcr_digest(core: &Core, h: HashAlg, sel: &mut [Selection]) -> Vec<u8> {
    let banks = &core.vol.pcrs;
    let mut hasher = crate::crypto::Hasher::new(h);
    for s in sel.iter_mut() {
        for pcr in 0..PCR_COUNT {
            let bit = 1u32 << pcr;
            if s.bits & bit == 0 {
                continue;
            }
            if !banks.is_allocated(s.alg, pcr) {
                s.bits &= !bit;
                continue;
            }
            hasher.update(banks.get(s.alg, pcr));
        }
    }
    hasher.finish()
}

/// The signer of an attestation: a signing key and its scheme, or none
/// (signHandle = TPM_RH_NULL: the structure is returned unsigned).
struct Signer {
    key: Option<(alloc::sync::Arc<KeyObject>, SigScheme)>,
}

impl Signer {
    /// Resolve the sign handle (`hn`: its handle number, `pn`: inScheme's parameter number).
    fn new(
        cx: &mut Ctx,
        handle: u32,
        requested: Option<SigScheme>,
        hn: u8,
        pn: u8,
    ) -> CmdResult<Self> {
        if handle == rh::NULL {
            return Ok(Self { key: None });
        }
        let k = key_at(cx, handle, hn)?;
        check_signer(&k, hn)?;
        let scheme = select_scheme(&k, requested).p(pn)?;
        Ok(Self {
            key: Some((k, scheme)),
        })
    }

    fn hash(&self) -> HashAlg {
        self.key.as_ref().map_or(HashAlg::Sha256, |(_, s)| s.hash)
    }
}

/// Write TPMS_CLOCK_INFO.
fn clock_info(core: &Core, w: &mut Writer, reset: u32, restart: u32) {
    w.u64(core.vol.now_clock);
    w.u32(reset);
    w.u32(restart);
    w.u8(u8::from(core.vol.clock_safe));
}

/// Milliseconds since _TPM_Init (TPMS_TIME_INFO.time).
fn time_ms(core: &Core) -> u64 {
    let v = &core.vol;
    v.clock_anchor
        .1
        .saturating_add(v.now_clock.saturating_sub(v.clock_anchor.0))
        .saturating_sub(v.init_ms)
}

/// Build, sign and write TPM2B_ATTEST and TPMT_SIGNATURE. The counters and
/// firmware version are obfuscated for signers outside the endorsement and
/// platform hierarchies (Part 1 §36.7; KDFa(shProof, "OBFUSCATE", signer QN)).
fn attest(
    cx: &mut Ctx,
    call: &mut Call,
    signer: &Signer,
    kind: u16,
    extra: &[u8],
    attested: &[u8],
) -> CmdResult<()> {
    let qualified_signer = signer
        .key
        .as_ref()
        .map_or_else(Vec::new, |(k, _)| k.qualified_name.clone());
    let mut reset = cx.core.ps.reset_count;
    let mut restart = cx.core.ps.restart_count;
    let mut firmware = FIRMWARE_VERSION;
    if let Some((k, _)) = &signer.key
        && !matches!(k.hierarchy, Hierarchy::Endorsement | Hierarchy::Platform)
    {
        let o = kdfa(
            crate::command::CONTEXT_HASH,
            &cx.core.ps.sh_proof,
            b"OBFUSCATE",
            &qualified_signer,
            &[],
            128,
        )
        .map_err(|e| key::alg_rc(e, rc::FAILURE))?;
        let word = |i: usize| {
            let mut b = [0u8; 8];
            if let Some(src) = o.get(i..i + 8) {
                b.copy_from_slice(src);
            }
            u64::from_le_bytes(b)
        };
        firmware = firmware.wrapping_add(word(0));
        let second = word(8);
        reset = reset.wrapping_add(u32::try_from(second >> 32).unwrap_or(0));
        restart = restart.wrapping_add(u32::try_from(second & 0xFFFF_FFFF).unwrap_or(0));
    }
    let mut a = Writer::new();
    a.bytes(&TPM_GENERATED);
    a.u16(kind);
    a.tpm2b(&qualified_signer);
    a.tpm2b(extra);
    clock_info(cx.core, &mut a, reset, restart);
    a.u64(firmware);
    a.bytes(attested);
    call.out.tpm2b(&a.buf);
    match &signer.key {
        None => call.out.u16(alg::NULL),
        Some((k, scheme)) => {
            let digest = scheme.hash.digest(&[&a.buf]);
            let mut sig = Writer::new();
            sign_digest(cx, k, *scheme, &digest, &mut sig)?;
            call.out.bytes(&sig.buf);
        }
    }
    Ok(())
}

pub fn quote(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let extra = call.params.tpm2b(MAX_DATA).p(1)?.to_vec();
    let requested = read_sig_scheme(&mut call.params).p(2)?;
    let mut sel = read_selection(&mut call.params).p(3)?;
    call.done()?;
    let signer = Signer::new(cx, call.handle(0), requested, 1, 2)?;
    // The PCR digest needs the signing scheme's hash: no signer, no quote
    // (the reference answers TPM_RC_SCHEME to signHandle = TPM_RH_NULL).
    if signer.key.is_none() {
        return Err(Rc::param(rc::SCHEME, 2));
    }
    let digest = pcr_digest(cx.core, signer.hash(), &mut sel);
    let mut info = Writer::new();
    write_selection(&mut info, &sel);
    info.tpm2b(&digest);
    attest(cx, call, &signer, st::ATTEST_QUOTE, &extra, &info.buf)
}

pub fn certify(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let extra = call.params.tpm2b(MAX_DATA).p(1)?.to_vec();
    let requested = read_sig_scheme(&mut call.params).p(2)?;
    call.done()?;
    let object = key_at(cx, call.handle(0), 1)?;
    let signer = Signer::new(cx, call.handle(1), requested, 2, 2)?;
    let mut info = Writer::new();
    info.tpm2b(&object.name);
    info.tpm2b(&object.qualified_name);
    attest(cx, call, &signer, st::ATTEST_CERTIFY, &extra, &info.buf)
}

pub fn certify_creation(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let extra = call.params.tpm2b(MAX_DATA).p(1)?.to_vec();
    let creation_hash = call.params.tpm2b(spec::MAX_DIGEST).p(2)?.to_vec();
    let requested = read_sig_scheme(&mut call.params).p(3)?;
    if call.params.u16().p(4)? != st::CREATION {
        return Err(Rc::param(rc::TAG, 4));
    }
    let ticket_h = crate::command::read_hierarchy_or_null(&mut call.params).p(4)?;
    let ticket = call.params.tpm2b(spec::MAX_DIGEST).p(4)?.to_vec();
    call.done()?;
    let signer = Signer::new(cx, call.handle(0), requested, 1, 3)?;
    let object = key_at(cx, call.handle(1), 2)?;
    let h = Hierarchy::from_handle(ticket_h).ok_or(Rc::param(rc::TICKET, 4))?;
    let tag = st::CREATION.to_be_bytes();
    let expect = key::ticket(cx, h, &[&tag, &object.name, &creation_hash])?;
    if !ct_eq(&expect, &ticket) {
        return Err(Rc::param(rc::TICKET, 4));
    }
    let mut info = Writer::new();
    info.tpm2b(&object.name);
    info.tpm2b(&creation_hash);
    attest(cx, call, &signer, st::ATTEST_CREATION, &extra, &info.buf)
}

pub fn get_time(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let extra = call.params.tpm2b(MAX_DATA).p(1)?.to_vec();
    let requested = read_sig_scheme(&mut call.params).p(2)?;
    call.done()?;
    let signer = Signer::new(cx, call.handle(1), requested, 2, 2)?;
    let mut info = Writer::new();
    info.u64(time_ms(cx.core));
    clock_info(
        cx.core,
        &mut info,
        cx.core.ps.reset_count,
        cx.core.ps.restart_count,
    );
    info.u64(FIRMWARE_VERSION);
    attest(cx, call, &signer, st::ATTEST_TIME, &extra, &info.buf)
}

/// GetSessionAuditDigest: TPMS_SESSION_AUDIT_INFO (exclusiveSession,
/// sessionDigest) of an audit session, signed like Quote.
pub fn get_session_audit_digest(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let extra = call.params.tpm2b(MAX_DATA).p(1)?.to_vec();
    let requested = read_sig_scheme(&mut call.params).p(2)?;
    call.done()?;
    let handle = call.handle(2);
    let (exclusive, digest) = {
        let s = cx
            .core
            .vol
            .sessions
            .get(handle)
            .ok_or(Rc::handle(rc::HANDLE, 3))?;
        if !s.audit {
            return Err(Rc::handle(rc::TYPE, 3));
        }
        (
            cx.core.vol.sessions.exclusive_audit == Some(handle),
            s.audit_digest.clone(),
        )
    };
    let signer = Signer::new(cx, call.handle(1), requested, 2, 2)?;
    let mut info = Writer::new();
    info.u8(u8::from(exclusive));
    info.tpm2b(&digest);
    attest(
        cx,
        call,
        &signer,
        st::ATTEST_SESSION_AUDIT,
        &extra,
        &info.buf,
    )
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use crate::Tpm;
    use crate::command::object::tests::*;
    use crate::crypto::HashAlg;
    use crate::testutil::{Cmd, TestPlatform, rc_of, started};

    const QUOTE: u32 = 0x158;
    const CERTIFY: u32 = 0x148;
    const CERTIFY_CREATION: u32 = 0x14A;
    const GET_TIME: u32 = 0x14C;
    const VERIFY: u32 = 0x177;

    /// Check that `sig` (TPMT_SIGNATURE) signs SHA-256(attest) with `key`.
    fn verifies(tpm: &mut Tpm<TestPlatform>, key: u32, attest: &[u8], sig: &[u8]) -> u32 {
        let digest = HashAlg::Sha256.digest(&[attest]);
        rc_of(&tpm.execute(0, &Cmd::new(VERIFY).h(key).tpm2b(&digest).b(sig).bytes()))
    }

    #[test]
    fn quote_signs_pcr_digest() {
        let mut tpm = started();
        let (rc, ak, _, _) = primary(&mut tpm, OWNER, b"", &ecc_signer(AK_ATTRS));
        assert_eq!(rc, 0);
        // Extend PCR 7 (SHA-256) so the digest is not all zeros.
        let ext = Cmd::new(0x182).h(7).pw(b"").u32(1).u16(0x0B).b(&[0xAB; 32]);
        assert_eq!(rc_of(&tpm.execute(0, &ext.bytes())), 0);
        let sel = [0x00, 0x00, 0x00, 0x01, 0x00, 0x0B, 0x03, 0x81, 0x00, 0x00];
        let cmd = Cmd::new(QUOTE)
            .h(ak)
            .pw(b"")
            .tpm2b(b"nonce")
            .u16(0x10)
            .b(&sel);
        let (rc, _, body) = split(&tpm.execute(0, &cmd.bytes()), false);
        assert_eq!(rc, 0, "{rc:#x}");
        let (attest, pos) = tpm2b(&body, 0);
        let sig = body[pos..].to_vec();
        assert_eq!(&attest[..6], &[0xFF, 0x54, 0x43, 0x47, 0x80, 0x18]);
        let (signer, p) = tpm2b(&attest, 6);
        assert_eq!(signer.len(), 34);
        let (extra, p) = tpm2b(&attest, p);
        assert_eq!(extra, b"nonce");
        // clockInfo (17) and firmwareVersion (8), then TPMS_QUOTE_INFO.
        let p = p + 17 + 8;
        assert_eq!(&attest[p..p + 10], &sel);
        let (digest, end) = tpm2b(&attest, p + 10);
        assert_eq!(end, attest.len());
        let read = |tpm: &mut Tpm<TestPlatform>, n: u32| {
            let mut bits = [0u8; 3];
            bits[(n / 8) as usize] = 1 << (n % 8);
            let r = tpm.execute(0, &Cmd::new(0x17E).u32(1).u16(0x0B).u8(3).b(&bits).bytes());
            r[r.len() - 32..].to_vec()
        };
        let (p0, p7) = (read(&mut tpm, 0), read(&mut tpm, 7));
        assert_eq!(digest, HashAlg::Sha256.digest(&[&p0, &p7]));
        assert_eq!(verifies(&mut tpm, ak, &attest, &sig), 0);
        // No quote without a signer (as the reference: TPM_RC_SCHEME).
        let cmd = Cmd::new(QUOTE).h(NULL).pw(b"").tpm2b(b"").u16(0x10).b(&sel);
        assert_eq!(rc_of(&tpm.execute(0, &cmd.bytes())), 0x2D2);
        // A decryption key cannot quote.
        let (_, srk, _, _) = primary(&mut tpm, OWNER, b"", &srk_ecc());
        let cmd = Cmd::new(QUOTE).h(srk).pw(b"").tpm2b(b"").u16(0x10).b(&sel);
        assert_eq!(rc_of(&tpm.execute(0, &cmd.bytes())), 0x19C);
    }

    #[test]
    fn certify_certify_creation_get_time() {
        let mut tpm = started();
        let (rc, ak, _, _) = primary(&mut tpm, ENDORSEMENT, b"", &rsa_signer(AK_ATTRS, 0x14));
        assert_eq!(rc, 0);
        let (rc, srk, srk_pub, rest) = primary(&mut tpm, OWNER, b"", &srk_ecc());
        assert_eq!(rc, 0);
        let cmd = Cmd::new(CERTIFY)
            .h(srk)
            .h(ak)
            .pw(b"")
            .pw(b"")
            .tpm2b(b"q")
            .u16(0x10);
        let (rc, _, body) = split(&tpm.execute(0, &cmd.bytes()), false);
        assert_eq!(rc, 0, "{rc:#x}");
        let (attest, pos) = tpm2b(&body, 0);
        assert_eq!(&attest[4..6], &[0x80, 0x17]);
        let mut name = alloc::vec![0, 0x0B];
        name.extend_from_slice(&HashAlg::Sha256.digest(&[&srk_pub]));
        assert!(attest.windows(name.len()).any(|w| w == name.as_slice()));
        assert_eq!(verifies(&mut tpm, ak, &attest, &body[pos..]), 0);
        // CertifyCreation with the ticket from CreatePrimary.
        let (cd, p) = tpm2b(&rest, 0);
        let _ = cd;
        let (creation_hash, p) = tpm2b(&rest, p);
        let ticket = rest[p..p + 6 + 2 + 48].to_vec();
        let cc = |hash: &[u8], ticket: &[u8]| {
            Cmd::new(CERTIFY_CREATION)
                .h(ak)
                .h(srk)
                .pw(b"")
                .tpm2b(b"")
                .tpm2b(hash)
                .u16(0x10)
                .b(ticket)
        };
        let (rc, _, body) = split(&tpm.execute(0, &cc(&creation_hash, &ticket).bytes()), false);
        assert_eq!(rc, 0, "{rc:#x}");
        let (attest, pos) = tpm2b(&body, 0);
        assert_eq!(&attest[4..6], &[0x80, 0x1A]);
        assert_eq!(verifies(&mut tpm, ak, &attest, &body[pos..]), 0);
        let mut wrong = creation_hash.clone();
        wrong[0] ^= 1;
        assert_eq!(rc_of(&tpm.execute(0, &cc(&wrong, &ticket).bytes())), 0x4E0);
        // GetTime: endorsement auth and the signer's auth.
        let cmd = Cmd::new(GET_TIME)
            .h(ENDORSEMENT)
            .h(ak)
            .pw(b"")
            .pw(b"")
            .tpm2b(b"")
            .u16(0x10);
        let (rc, _, body) = split(&tpm.execute(0, &cmd.bytes()), false);
        assert_eq!(rc, 0, "{rc:#x}");
        let (attest, pos) = tpm2b(&body, 0);
        assert_eq!(&attest[4..6], &[0x80, 0x19]);
        assert_eq!(verifies(&mut tpm, ak, &attest, &body[pos..]), 0);
        // An endorsement signer sees the real counters; an owner signer obfuscated ones.
        let counters = |attest: &[u8]| {
            let (_, p) = tpm2b(attest, 6);
            let (_, p) = tpm2b(attest, p);
            attest[p + 8..p + 17 + 8].to_vec()
        };
        let real = counters(&attest);
        assert_eq!(&real[..8], &[0, 0, 0, 1, 0, 0, 0, 0]);
        flush(&mut tpm, srk);
        let (_, owner_ak, _, _) = primary(&mut tpm, OWNER, b"", &rsa_signer(AK_ATTRS, 0x14));
        let cmd = Cmd::new(GET_TIME)
            .h(ENDORSEMENT)
            .h(owner_ak)
            .pw(b"")
            .pw(b"")
            .tpm2b(b"")
            .u16(0x10);
        let (_, _, body) = split(&tpm.execute(0, &cmd.bytes()), false);
        let (attest, _) = tpm2b(&body, 0);
        assert_ne!(counters(&attest), real);
        let _: Vec<u8> = Vec::new();
    }
}

#[cfg(test)]
mod role_tests {
    use crate::command::object::tests::*;
    use crate::testutil::{Cmd, rc_of, started};

    /// Certify: objectHandle is ADMIN (a password works while adminWithPolicy
    /// is CLEAR), signHandle is USER (a password needs userWithAuth).
    #[test]
    fn certify_checks_each_handle_by_its_role() {
        let mut tpm = started();
        // Signing keys without userWithAuth (0x...52 instead of 0x...72).
        let (_, object, _, _) = primary(&mut tpm, OWNER, b"", &ecc_signer(0x0005_0032));
        let (_, signer_no_user, _, _) = primary(&mut tpm, OWNER, b"", &ecc_signer(0x0005_0032));
        let certify = |o: u32, s: u32| {
            Cmd::new(0x148)
                .h(o)
                .h(s)
                .pw(b"")
                .pw(b"")
                .tpm2b(b"")
                .u16(0x10)
        };
        assert_eq!(
            rc_of(&tpm.execute(0, &certify(object, signer_no_user).bytes())),
            0x12F
        );
        flush(&mut tpm, signer_no_user);
        let (_, signer, _, _) = primary(&mut tpm, OWNER, b"", &ecc_signer(AK_ATTRS));
        assert_eq!(rc_of(&tpm.execute(0, &certify(object, signer).bytes())), 0);
    }
}
