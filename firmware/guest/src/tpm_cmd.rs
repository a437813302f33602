//! TPM 2.0 commands the guest sends, built by hand (big-endian), and the
//! vTPM protocol's request framing (little-endian). Pure byte work, tested
//! on the host.

/// TPM_ST_NO_SESSIONS.
pub const ST_NO_SESSIONS: u16 = 0x8001;
/// TPM_ST_SESSIONS.
pub const ST_SESSIONS: u16 = 0x8002;
/// TPM_ALG_SHA256.
pub const ALG_SHA256: u16 = 0x000B;
/// TPM_RS_PW.
pub const RS_PW: u32 = 0x4000_0009;

/// A command being built in a fixed buffer.
pub struct Command {
    buf: [u8; 512],
    len: usize,
}

impl Command {
    /// The bytes so far (for a structure built without a header).
    pub fn raw(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Starts a command: tag, size (patched by `finish`), code.
    pub fn new(tag: u16, code: u32) -> Self {
        let mut c = Self {
            buf: [0; 512],
            len: 0,
        };
        c.u16(tag).u32(0).u32(code);
        c
    }

    /// Appends bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
        self
    }

    /// Appends a u8.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes(&[v])
    }

    /// Appends a big-endian u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// Appends a big-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// An empty password authorization area (for one handle).
    pub fn password_auth(&mut self) -> &mut Self {
        self.u32(9).u32(RS_PW).u16(0).u8(0).u16(0)
    }

    /// Patches the size and returns the command bytes.
    pub fn finish(&mut self) -> &[u8] {
        let size = (self.len as u32).to_be_bytes();
        self.buf[2..6].copy_from_slice(&size);
        &self.buf[..self.len]
    }
}

/// TPM2_Startup(CLEAR).
pub fn startup_clear() -> Command {
    let mut c = Command::new(ST_NO_SESSIONS, 0x144);
    c.u16(0);
    c
}

/// TPM2_GetRandom.
pub fn get_random(bytes: u16) -> Command {
    let mut c = Command::new(ST_NO_SESSIONS, 0x17B);
    c.u16(bytes);
    c
}

/// TPM2_GetCapability(TPM_PROPERTIES, property, 1).
pub fn get_tpm_property(property: u32) -> Command {
    let mut c = Command::new(ST_NO_SESSIONS, 0x17A);
    c.u32(6).u32(property).u32(1);
    c
}

/// TPM2_PCR_Extend of one SHA-256 digest.
pub fn pcr_extend_sha256(pcr: u32, digest: &[u8; 32]) -> Command {
    let mut c = Command::new(ST_SESSIONS, 0x182);
    c.u32(pcr)
        .password_auth()
        .u32(1)
        .u16(ALG_SHA256)
        .bytes(digest);
    c
}

/// TPM2_PCR_Read of one SHA-256 PCR (0..=23).
pub fn pcr_read_sha256(pcr: u32) -> Command {
    let mut c = Command::new(ST_NO_SESSIONS, 0x17E);
    let mut select = [0u8; 3];
    select[(pcr / 8) as usize] = 1 << (pcr % 8);
    c.u32(1).u16(ALG_SHA256).u8(3).bytes(&select);
    c
}

/// TPMT_PUBLIC of the guest's attestation key: ECC NIST P-256, restricted
/// signing, ECDSA with SHA-256, made in the endorsement hierarchy.
pub fn ak_template() -> Command {
    let mut t = Command {
        buf: [0; 512],
        len: 0,
    };
    t.u16(0x0023).u16(ALG_SHA256);
    // fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted | sign
    t.u32(0x0005_0072);
    t.u16(0); // no authPolicy
    t.u16(0x0010); // symmetric: NULL
    t.u16(0x0018).u16(ALG_SHA256); // ECDSA, SHA-256
    t.u16(0x0003); // NIST P-256
    t.u16(0x0010); // kdf: NULL
    t.u16(0).u16(0); // unique: empty x and y
    t
}

/// TPM2_CreatePrimary(TPM_RH_ENDORSEMENT, empty sensitive, `template`).
pub fn create_primary_endorsement(template: &[u8]) -> Command {
    let mut c = Command::new(ST_SESSIONS, 0x131);
    c.u32(0x4000_000B).password_auth();
    c.u16(4).u16(0).u16(0);
    c.u16(template.len() as u16).bytes(template);
    c.u16(0).u32(0);
    c
}

/// TPM2_Quote by `key` over SHA-256 PCRs in `pcrs` (a 3-byte bitmap) with `nonce`.
pub fn quote(key: u32, nonce: &[u8], pcrs: [u8; 3]) -> Command {
    let mut c = Command::new(ST_SESSIONS, 0x158);
    c.u32(key).password_auth();
    c.u16(nonce.len() as u16).bytes(nonce);
    c.u16(0x0010); // the key's own scheme
    c.u32(1).u16(ALG_SHA256).u8(3).bytes(&pcrs);
    c
}

/// TPM2_FlushContext.
pub fn flush_context(handle: u32) -> Command {
    let mut c = Command::new(ST_NO_SESSIONS, 0x165);
    c.u32(handle);
    c
}

/// TPM2_NV_ReadPublic.
pub fn nv_read_public(index: u32) -> Command {
    let mut c = Command::new(ST_NO_SESSIONS, 0x169);
    c.u32(index);
    c
}

/// TPM2_NV_Read of `size` bytes at `offset`, authorized by the index itself
/// (TPMA_NV_AUTHREAD, empty password).
pub fn nv_read(index: u32, size: u16, offset: u16) -> Command {
    let mut c = Command::new(ST_SESSIONS, 0x14E);
    c.u32(index)
        .u32(index)
        .password_auth()
        .u16(size)
        .u16(offset);
    c
}

/// NV_ReadPublic's response: (attributes, dataSize).
pub fn parse_nv_read_public(r: &[u8]) -> Option<(u32, u16)> {
    let size = be16(r, 10)?;
    let public = r.get(12..12 + size)?;
    let attributes = u32::from_be_bytes(public.get(6..10)?.try_into().ok()?);
    let policy = be16(public, 10)?;
    let data_size = be16(public, 12 + policy)?;
    Some((attributes, data_size as u16))
}

/// NV_Read's response (sessions tag): the data.
pub fn parse_nv_read(r: &[u8]) -> Option<&[u8]> {
    let size = be16(r, 14)?;
    r.get(16..16 + size)
}

fn be16(b: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes(
        b.get(at..at + 2)?.try_into().ok()?,
    )))
}

/// CreatePrimary's response: (handle, TPMT_PUBLIC).
pub fn parse_create_primary(r: &[u8]) -> Option<(u32, &[u8])> {
    let handle = u32::from_be_bytes(r.get(10..14)?.try_into().ok()?);
    let size = be16(r, 18)?;
    Some((handle, r.get(20..20 + size)?))
}

/// Quote's response: (TPMS_ATTEST, TPMT_SIGNATURE).
pub fn parse_quote(r: &[u8]) -> Option<(&[u8], &[u8])> {
    let param_size = u32::from_be_bytes(r.get(10..14)?.try_into().ok()?) as usize;
    let params = r.get(14..14 + param_size)?;
    let size = be16(params, 0)?;
    let attest = params.get(2..2 + size)?;
    Some((attest, params.get(2 + size..)?))
}

/// PCR_Read's response: the digests, in PCR order.
pub fn parse_pcr_read<'a>(r: &'a [u8], out: &mut [&'a [u8]; 8]) -> Option<usize> {
    // header, pcrUpdateCounter, TPML_PCR_SELECTION (one bank: 4 + 2 + 1 + 3)
    let mut at = 10 + 4 + 10;
    let count = u32::from_be_bytes(r.get(at..at + 4)?.try_into().ok()?) as usize;
    at += 4;
    for slot in out.iter_mut().take(count) {
        let size = be16(r, at)?;
        *slot = r.get(at + 2..at + 2 + size)?;
        at += 2 + size;
    }
    Some(count.min(8))
}

/// A response's code, if it has a well-formed header whose size matches.
pub fn response_code(resp: &[u8]) -> Option<u32> {
    let size = u32::from_be_bytes(resp.get(2..6)?.try_into().ok()?);
    if size as usize != resp.len() {
        return None;
    }
    Some(u32::from_be_bytes(resp.get(6..10)?.try_into().ok()?))
}

/// The vTPM protocol request for `command`: {u32 8, u8 locality, u32 size, command}.
pub fn frame(command: &[u8], locality: u8, size_field: u32, out: &mut [u8; 4096]) {
    out.fill(0);
    out[0..4].copy_from_slice(&8u32.to_le_bytes());
    out[4] = locality;
    out[5..9].copy_from_slice(&size_field.to_le_bytes());
    out[9..9 + command.len()].copy_from_slice(command);
}

/// The response in a vTPM buffer: {u32 size, response}, if the size fits.
pub fn unframe(buf: &[u8; 4096]) -> Option<&[u8]> {
    let size = u32::from_le_bytes(buf[0..4].try_into().ok()?) as usize;
    buf.get(4..4 + size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_bytes() {
        assert_eq!(
            startup_clear().finish(),
            [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0]
        );
    }

    #[test]
    fn pcr_commands() {
        let mut e = pcr_extend_sha256(8, &[0xAB; 32]);
        let e = e.finish();
        assert_eq!(e.len(), 10 + 4 + 4 + 9 + 4 + 2 + 32);
        assert_eq!(&e[10..14], &8u32.to_be_bytes());
        let mut r = pcr_read_sha256(8);
        assert_eq!(&r.finish()[10..], [0, 0, 0, 1, 0, 0x0B, 3, 0, 1, 0]);
    }

    #[test]
    fn quote_and_parsers() {
        let mut q = quote(0x8000_0000, &[1, 2], [0xFF, 0x03, 0]);
        let q = q.finish();
        assert_eq!(&q[6..10], &0x158u32.to_be_bytes());
        assert_eq!(&q[q.len() - 10..], &[0, 0, 0, 1, 0, 0x0B, 3, 0xFF, 0x03, 0]);
        let mut resp = std::vec![
            0x80, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 2, 0xAA, 0xBB, 0, 0x18, 9
        ];
        let n = resp.len() as u32;
        resp[2..6].copy_from_slice(&n.to_be_bytes());
        assert_eq!(
            parse_quote(&resp),
            Some((&[0xAA, 0xBB][..], &[0, 0x18, 9][..]))
        );
        assert_eq!(parse_quote(&resp[..15]), None);
        assert_eq!(ak_template().raw().len(), 2 + 2 + 4 + 2 + 2 + 4 + 2 + 2 + 4);
    }

    #[test]
    fn nv_commands_and_parsers() {
        let mut c = nv_read_public(0x01C0_0002);
        assert_eq!(
            c.finish(),
            [0x80, 1, 0, 0, 0, 14, 0, 0, 1, 0x69, 1, 0xC0, 0, 2]
        );
        let mut c = nv_read(0x01C0_000A, 1024, 2048);
        let c = c.finish();
        assert_eq!(c.len(), 10 + 8 + 4 + 9 + 4);
        assert_eq!(&c[10..18], &[1, 0xC0, 0, 0x0A, 1, 0xC0, 0, 0x0A]);
        assert_eq!(&c[c.len() - 4..], &[4, 0, 8, 0]);
        // NV_ReadPublic: TPM2B_NV_PUBLIC {index, nameAlg, attributes, empty policy, dataSize}, name.
        let mut r = std::vec![0x80, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 14];
        r.extend_from_slice(&[
            1, 0xC0, 0, 2, 0, 0x0B, 0x62, 0x07, 0x28, 0x01, 0, 0, 0x05, 0xDC,
        ]);
        r.extend_from_slice(&[0, 2, 0xAA, 0xBB]);
        assert_eq!(parse_nv_read_public(&r), Some((0x6207_2801, 1500)));
        assert_eq!(parse_nv_read_public(&r[..20]), None);
        let r = [
            0x80, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 3, 7, 8, 9, 0, 0, 1, 0, 0,
        ];
        assert_eq!(parse_nv_read(&r), Some(&[7, 8, 9][..]));
        assert_eq!(parse_nv_read(&r[..17]), None);
    }

    #[test]
    fn framing_round_trip_and_codes() {
        let mut buf = [0u8; 4096];
        frame(b"xyz", 0, 3, &mut buf);
        assert_eq!(&buf[..12], b"\x08\0\0\0\0\x03\0\0\0xyz");
        buf[0..4].copy_from_slice(&10u32.to_le_bytes());
        buf[4..14].copy_from_slice(&[0x80, 1, 0, 0, 0, 10, 0, 0, 1, 0]);
        assert_eq!(response_code(unframe(&buf).unwrap()), Some(0x100));
        buf[0..4].copy_from_slice(&5000u32.to_le_bytes());
        assert_eq!(unframe(&buf), None);
        assert_eq!(response_code(&[0x80, 1, 0, 0, 0, 99, 0, 0, 0, 0]), None);
    }
}
