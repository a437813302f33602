//! Command builders and response parsers for the engine's own host: the
//! SVSM kernel creates the EK and an AK at boot and quotes with it through
//! [`crate::Tpm::execute`], like any TPM client, with these helpers instead of
//! a TSS. Templates are the TCG EK Credential Profile's (L-1, L-2) and an AK
//! shaped like `tpm2_createak`'s defaults.

use alloc::vec::Vec;

/// TPM_RH_ENDORSEMENT, TPM_RH_OWNER, TPM_RH_NULL.
pub const ENDORSEMENT: u32 = 0x4000_000B;
pub const OWNER: u32 = 0x4000_0001;
pub const NULL: u32 = 0x4000_0007;

/// The EK policy of the L templates: PolicySecret(TPM_RH_ENDORSEMENT).
const EK_POLICY_A: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24,
    0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA,
];

/// fixedTPM|fixedParent|sensitiveDataOrigin|adminWithPolicy|restricted|decrypt.
const EK_ATTRIBUTES: u32 = 0x0003_00B2;
/// fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|restricted|sign.
const AK_ATTRIBUTES: u32 = 0x0005_0072;

fn header(w: &mut Vec<u8>, kind: u16, attributes: u32, policy: &[u8]) {
    w.extend_from_slice(&kind.to_be_bytes());
    w.extend_from_slice(&0x000Bu16.to_be_bytes()); // nameAlg SHA-256
    w.extend_from_slice(&attributes.to_be_bytes());
    w.extend_from_slice(&u16::try_from(policy.len()).unwrap_or(0).to_be_bytes());
    w.extend_from_slice(policy);
}

/// TPMT_PUBLIC of EK template L-1: RSA 2048, AES-128-CFB, 256 zero bytes of unique.
pub fn ek_rsa2048_template() -> Vec<u8> {
    let mut t = Vec::with_capacity(320);
    header(&mut t, 0x0001, EK_ATTRIBUTES, &EK_POLICY_A);
    t.extend_from_slice(&[0x00, 0x06, 0x00, 0x80, 0x00, 0x43]); // AES-128-CFB
    t.extend_from_slice(&[0x00, 0x10, 0x08, 0x00, 0, 0, 0, 0]); // NULL scheme, 2048, e=0
    t.extend_from_slice(&256u16.to_be_bytes());
    t.extend_from_slice(&[0u8; 256]);
    t
}

/// TPMT_PUBLIC of EK template L-2: ECC NIST P-256, AES-128-CFB, 32+32 zero bytes of unique.
pub fn ek_ecc_p256_template() -> Vec<u8> {
    let mut t = Vec::with_capacity(128);
    header(&mut t, 0x0023, EK_ATTRIBUTES, &EK_POLICY_A);
    t.extend_from_slice(&[0x00, 0x06, 0x00, 0x80, 0x00, 0x43]);
    t.extend_from_slice(&[0x00, 0x10, 0x00, 0x03, 0x00, 0x10]); // NULL scheme, P-256, NULL KDF
    for _ in 0..2 {
        t.extend_from_slice(&32u16.to_be_bytes());
        t.extend_from_slice(&[0u8; 32]);
    }
    t
}

/// TPMT_PUBLIC of an attestation key: restricted ECDSA-SHA256 signer on
/// NIST P-256 with an empty authValue (`tpm2_createak -G ecc -g sha256 -s ecdsa`).
pub fn ak_ecc_p256_template() -> Vec<u8> {
    let mut t = Vec::with_capacity(64);
    header(&mut t, 0x0023, AK_ATTRIBUTES, &[]);
    t.extend_from_slice(&[0x00, 0x10]); // no symmetric
    t.extend_from_slice(&[0x00, 0x18, 0x00, 0x0B]); // ECDSA, SHA-256
    t.extend_from_slice(&[0x00, 0x03, 0x00, 0x10]); // P-256, NULL KDF
    t.extend_from_slice(&[0, 0, 0, 0]);
    t
}

/// TPMT_PUBLIC of an RSA 2048 attestation key (RSASSA-SHA256).
pub fn ak_rsa2048_template() -> Vec<u8> {
    let mut t = Vec::with_capacity(64);
    header(&mut t, 0x0001, AK_ATTRIBUTES, &[]);
    t.extend_from_slice(&[0x00, 0x10, 0x00, 0x14, 0x00, 0x0B]); // no sym, RSASSA-SHA256
    t.extend_from_slice(&[0x08, 0x00, 0, 0, 0, 0, 0, 0]);
    t
}

/// A command: tag, size, code, handles, one empty password session if
/// `authorize`, then the parameters.
fn command(code: u32, handles: &[u32], authorize: bool, params: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(32 + params.len());
    c.extend_from_slice(&(if authorize { 0x8002u16 } else { 0x8001 }).to_be_bytes());
    c.extend_from_slice(&[0; 4]);
    c.extend_from_slice(&code.to_be_bytes());
    for h in handles {
        c.extend_from_slice(&h.to_be_bytes());
    }
    if authorize {
        // TPM_RS_PW, empty nonce, continueSession, empty password.
        c.extend_from_slice(&9u32.to_be_bytes());
        c.extend_from_slice(&[0x40, 0, 0, 9, 0, 0, 1, 0, 0]);
    }
    c.extend_from_slice(params);
    let n = u32::try_from(c.len()).unwrap_or(0).to_be_bytes();
    if let Some(size) = c.get_mut(2..6) {
        size.copy_from_slice(&n);
    }
    c
}

fn tpm2b(w: &mut Vec<u8>, b: &[u8]) {
    w.extend_from_slice(&u16::try_from(b.len()).unwrap_or(0).to_be_bytes());
    w.extend_from_slice(b);
}

/// TPM2_CreatePrimary in `hierarchy` (empty hierarchy password, empty
/// userAuth and outsideInfo, no creation PCRs) with a TPMT_PUBLIC template.
pub fn create_primary(hierarchy: u32, template: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(template.len() + 16);
    tpm2b(&mut p, &[0, 0, 0, 0]); // TPM2B_SENSITIVE_CREATE: empty userAuth and data
    tpm2b(&mut p, template);
    tpm2b(&mut p, &[]);
    p.extend_from_slice(&0u32.to_be_bytes());
    command(0x131, &[hierarchy], true, &p)
}

/// TPM2_Quote with `ak` (empty password, the key's own scheme) over the PCRs
/// of `banks`: (TPM_ALG_ID of the bank, bitmap of PCRs 0..23).
pub fn quote(ak: u32, qualifying_data: &[u8], banks: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    tpm2b(&mut p, qualifying_data);
    p.extend_from_slice(&0x0010u16.to_be_bytes());
    p.extend_from_slice(&u32::try_from(banks.len()).unwrap_or(0).to_be_bytes());
    for (alg, mask) in banks {
        p.extend_from_slice(&alg.to_be_bytes());
        p.push(3);
        p.extend_from_slice(&mask.to_le_bytes()[..3]);
    }
    command(0x158, &[ak], true, &p)
}

/// TPM2_FlushContext.
pub fn flush_context(handle: u32) -> Vec<u8> {
    command(0x165, &[], false, &handle.to_be_bytes())
}

/// TPM2_EvictControl by the owner (empty password): make `object` persistent
/// at `persistent` (0x81000000..=0x817FFFFF), or remove it when `object == persistent`.
pub fn evict_control(object: u32, persistent: u32) -> Vec<u8> {
    command(0x120, &[OWNER, object], true, &persistent.to_be_bytes())
}

/// TPM_RH_PLATFORM.
pub const PLATFORM: u32 = 0x4000_000C;

/// TPM2_NV_DefineSpace by `auth` (a hierarchy, empty password) of an
/// ordinary index with an empty authValue and policy, SHA-256 name.
pub fn nv_define_space(auth: u32, index: u32, attributes: u32, size: u16) -> Vec<u8> {
    let mut public = Vec::with_capacity(14);
    public.extend_from_slice(&index.to_be_bytes());
    public.extend_from_slice(&0x000Bu16.to_be_bytes());
    public.extend_from_slice(&attributes.to_be_bytes());
    tpm2b(&mut public, &[]);
    public.extend_from_slice(&size.to_be_bytes());
    let mut p = Vec::with_capacity(public.len() + 4);
    tpm2b(&mut p, &[]);
    tpm2b(&mut p, &public);
    command(0x12A, &[auth], true, &p)
}

/// TPM2_NV_Write of `data` at `offset`, authorized by `auth` (empty password).
pub fn nv_write(auth: u32, index: u32, offset: u16, data: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(data.len() + 4);
    tpm2b(&mut p, data);
    p.extend_from_slice(&offset.to_be_bytes());
    command(0x137, &[auth, index], true, &p)
}

/// TPM2_NV_WriteLock, authorized by `auth` (empty password).
pub fn nv_write_lock(auth: u32, index: u32) -> Vec<u8> {
    command(0x138, &[auth, index], true, &[])
}

/// TPM2_NV_ReadPublic.
pub fn nv_read_public(index: u32) -> Vec<u8> {
    command(0x169, &[index], false, &[])
}

/// TPM2_NV_Read of `size` bytes at `offset`, authorized by `auth` (empty password).
pub fn nv_read(auth: u32, index: u32, size: u16, offset: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(4);
    p.extend_from_slice(&size.to_be_bytes());
    p.extend_from_slice(&offset.to_be_bytes());
    command(0x14E, &[auth, index], true, &p)
}

/// TPM2_GetCapability(TPM_CAP_TPM_PROPERTIES, `first`, `count`).
pub fn get_tpm_properties(first: u32, count: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(&6u32.to_be_bytes());
    p.extend_from_slice(&first.to_be_bytes());
    p.extend_from_slice(&count.to_be_bytes());
    command(0x17A, &[], false, &p)
}

/// A successful GetCapability(TPM_PROPERTIES) response: (property, value) pairs.
pub fn parse_tpm_properties(resp: &[u8]) -> Option<Vec<(u32, u32)>> {
    if response_code(resp)? != 0 {
        return None;
    }
    let be32 = |at: usize| -> Option<u32> {
        let b = resp.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    // header, moreData, capability, TPML_TAGGED_TPM_PROPERTY count
    if be32(11)? != 6 {
        return None;
    }
    let count = usize::try_from(be32(15)?).ok()?;
    (0..count)
        .map(|i| Some((be32(19 + 8 * i)?, be32(23 + 8 * i)?)))
        .collect()
}

/// A successful NV_ReadPublic response: (TPMS_NV_PUBLIC bytes, attributes, dataSize).
pub fn parse_nv_read_public(resp: &[u8]) -> Option<(Vec<u8>, u32, u16)> {
    if response_code(resp)? != 0 {
        return None;
    }
    let mut pos = 10;
    let public = take2b(resp, &mut pos)?;
    // nvIndex, nameAlg, attributes, authPolicy, dataSize
    let a = public.get(6..10)?;
    let attributes = u32::from_be_bytes([a[0], a[1], a[2], a[3]]);
    let mut at = 10;
    take2b(public, &mut at)?;
    let s = public.get(at..at + 2)?;
    Some((
        public.to_vec(),
        attributes,
        u16::from_be_bytes([s[0], s[1]]),
    ))
}

/// A successful NV_Read response (sessions tag): the data.
pub fn parse_nv_read(resp: &[u8]) -> Option<Vec<u8>> {
    if response_code(resp)? != 0 {
        return None;
    }
    let mut pos = 14; // header, parameterSize
    Some(take2b(resp, &mut pos)?.to_vec())
}

/// What a CreatePrimary response carries that a client needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Primary {
    pub handle: u32,
    /// TPMT_PUBLIC (the template with the public key filled in).
    pub public: Vec<u8>,
    /// nameAlg || H(TPMT_PUBLIC).
    pub name: Vec<u8>,
}

/// The response code of a response.
pub fn response_code(resp: &[u8]) -> Option<u32> {
    let b = resp.get(6..10)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn take2b<'a>(b: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let n = b.get(*pos..*pos + 2)?;
    let n = usize::from(u16::from_be_bytes([n[0], n[1]]));
    let out = b.get(*pos + 2..*pos + 2 + n)?;
    *pos += 2 + n;
    Some(out)
}

/// Parse a successful CreatePrimary response (from [`create_primary`]).
pub fn parse_create_primary(resp: &[u8]) -> Option<Primary> {
    if response_code(resp)? != 0 {
        return None;
    }
    let h = resp.get(10..14)?;
    let handle = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    let mut pos = 18; // handle, parameterSize
    let public = take2b(resp, &mut pos)?.to_vec();
    take2b(resp, &mut pos)?; // creationData
    take2b(resp, &mut pos)?; // creationHash
    pos += 2 + 4; // creationTicket tag, hierarchy
    take2b(resp, &mut pos)?;
    let name = take2b(resp, &mut pos)?.to_vec();
    Some(Primary {
        handle,
        public,
        name,
    })
}

/// Parse a successful Quote response: (TPMS_ATTEST bytes, TPMT_SIGNATURE bytes).
pub fn parse_quote(resp: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    if response_code(resp)? != 0 {
        return None;
    }
    let size = resp.get(10..14)?;
    let size = usize::try_from(u32::from_be_bytes([size[0], size[1], size[2], size[3]])).ok()?;
    let params = resp.get(14..14 + size)?;
    let mut pos = 0;
    let attest = take2b(params, &mut pos)?.to_vec();
    Some((attest, params.get(pos..)?.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::started;

    #[test]
    fn boot_flow_ek_ak_quote() {
        let mut tpm = started();
        let ek = parse_create_primary(
            &tpm.execute(0, &create_primary(ENDORSEMENT, &ek_rsa2048_template())),
        )
        .unwrap();
        assert_eq!(ek.public.len(), ek_rsa2048_template().len());
        assert_eq!(ek.name.len(), 34);
        tpm.execute(0, &flush_context(ek.handle));
        let ek2 = parse_create_primary(
            &tpm.execute(0, &create_primary(ENDORSEMENT, &ek_ecc_p256_template())),
        )
        .unwrap();
        tpm.execute(0, &flush_context(ek2.handle));
        for t in [ak_ecc_p256_template(), ak_rsa2048_template()] {
            let ak =
                parse_create_primary(&tpm.execute(0, &create_primary(ENDORSEMENT, &t))).unwrap();
            let resp = tpm.execute(0, &quote(ak.handle, b"nonce", &[(0x0B, 0x00FF_FFFF)]));
            let (attest, sig) = parse_quote(&resp).unwrap();
            assert_eq!(&attest[..4], &[0xFF, 0x54, 0x43, 0x47]);
            assert!(sig.len() > 4);
            assert_eq!(
                response_code(&tpm.execute(0, &evict_control(ak.handle, 0x8101_0002))),
                Some(0)
            );
            assert_eq!(
                response_code(&tpm.execute(0, &evict_control(0x8101_0002, 0x8101_0002))),
                Some(0)
            );
            tpm.execute(0, &flush_context(ak.handle));
        }
    }

    #[test]
    fn nv_provisioning_flow_and_properties() {
        let mut tpm = started();
        // PPWRITE|WRITEDEFINE|PPREAD|OWNERREAD|AUTHREAD|NO_DA|PLATFORMCREATE
        let attrs = 0x4207_2001;
        let data: Vec<u8> = (0..1500u32).map(|i| i as u8).collect();
        let index = 0x01C0_0002;
        let ok = |r: &[u8]| assert_eq!(response_code(r), Some(0), "{r:02x?}");
        ok(&tpm.execute(0, &nv_define_space(PLATFORM, index, attrs, 1500)));
        for (i, chunk) in data.chunks(1024).enumerate() {
            ok(&tpm.execute(0, &nv_write(PLATFORM, index, (i * 1024) as u16, chunk)));
        }
        ok(&tpm.execute(0, &nv_write_lock(PLATFORM, index)));
        let (_, a, size) = parse_nv_read_public(&tpm.execute(0, &nv_read_public(index))).unwrap();
        assert_eq!(size, 1500);
        assert_eq!(a, attrs | 0x2000_0000 | 0x800, "written and write-locked");
        let mut back = Vec::new();
        for off in (0..1500u16).step_by(1024) {
            let n = (1500 - off).min(1024);
            back.extend(parse_nv_read(&tpm.execute(0, &nv_read(index, index, n, off))).unwrap());
        }
        assert_eq!(back, data);
        // Locked: the platform cannot write again.
        assert_ne!(
            response_code(&tpm.execute(0, &nv_write(PLATFORM, index, 0, &[1]))),
            Some(0)
        );
        let props = parse_tpm_properties(&tpm.execute(0, &get_tpm_properties(0x105, 2))).unwrap();
        assert_eq!(props[0], (0x105, u32::from_be_bytes(*b"RVET")));
        assert_eq!(props.len(), 2);
    }
}
