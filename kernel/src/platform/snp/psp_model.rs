//! A software model of the AMD Secure Processor's guest messages, and of a
//! hostile hypervisor carrying them, for host tests of the guest-request
//! channel (test builds only).
//!
//! References: SEV-SNP Firmware ABI (AMD 56860), "Guest Messages" (header,
//! AEAD, sequence numbers), SNP_GUEST_REQUEST, MSG_REPORT_REQ/RSP,
//! MSG_KEY_REQ/RSP and the ATTESTATION_REPORT layout; GHCB specification
//! (AMD 56421), "SNP Guest Request" (SW_EXITINFO2 error codes).
//!
//! The model is written from the specification, independently of
//! `guest_request` (it shares only the layout constants), and behaves like the
//! firmware:
//! - It copies the request page once, checks the header (HDR_VERSION 1,
//!   HDR_SZ 0x60, ALGO AES-256-GCM, a known MSG_TYPE, a VMPCK id 0..=3,
//!   MSG_SZ within the page, reserved bytes in the AAD zero), requires MSG_SEQNO
//!   to be exactly one above the last it saw for that VMPCK and decrypts with
//!   that VMPCK (IV = sequence number, AAD = header bytes 0x30..0x60). Any of
//!   these failing fails the SNP_GUEST_REQUEST command itself: no response
//!   is written and the hypervisor gets a firmware status, which it reports
//!   in SW_EXITINFO2 bits 31:0. The model uses INVALID_PARAM (0x16) for all of
//!   them; a guest cannot act differently on the exact code (it must wipe the
//!   key either way).
//! - An authenticated request is answered, encrypted under the same VMPCK
//!   with the next sequence number, and only then is the count advanced.
//!   Requests the firmware refuses on their content get an encrypted response
//!   with STATUS INVALID_PARAM (bad VMPL, reserved bits, unknown KEY_SEL,
//!   guest SVN or TCB above the launch values, a missing VM root key) or
//!   INVALID_KEY (KEY_SEL = VLEK with no VLEK installed).
//! - Reports are in the SNP layout (`snp_report`), signed with a P-384 VCEK
//!   (or VLEK) the model holds; derived keys are SHA-256 over a model root
//!   secret and the selected fields (the real KDF is the firmware's secret;
//!   what matters to the channel is that the answer depends on exactly the
//!   fields requested).

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Tag};
use p384::ecdsa::SigningKey;
use sha2::{Digest, Sha256};

use super::guest_request::{
    ALGO_AES_256_GCM, AUTHTAG_LEN, DerivedKeyRequest, GuestRequestTransport, HDR_VERSION,
    KeySelect, MAX_PAYLOAD, PAGE_SIZE, RootKey, TransportError, VMM_ERR_BUSY, field_select, header,
    key_req, key_rsp, msg_type, report_req, report_rsp, status,
};
use crate::platform::snp_report::{self, REPORT_LEN, ReportFields};

/// Status the model gives the hypervisor when SNP_GUEST_REQUEST itself fails.
pub const FW_REJECT: u32 = status::INVALID_PARAM;

/// What the guest was launched with.
#[derive(Clone, Copy, Debug)]
pub struct Launch {
    /// MEASUREMENT.
    pub measurement: [u8; 48],
    /// Guest policy.
    pub policy: u64,
    /// FAMILY_ID.
    pub family_id: [u8; 16],
    /// IMAGE_ID.
    pub image_id: [u8; 16],
    /// Guest SVN from the ID block.
    pub guest_svn: u32,
    /// CommittedTcb.
    pub committed_tcb: u64,
    /// REPORT_ID.
    pub report_id: [u8; 32],
}

/// The model PSP.
#[derive(Clone)]
pub struct PspModel {
    vmpck: [[u8; 32]; 4],
    last_seqno: [u64; 4],
    vcek: SigningKey,
    vlek: Option<SigningKey>,
    vmrk: Option<[u8; 32]>,
    root_secret: [u8; 32],
    /// The launch values reports and keys reflect.
    pub launch: Launch,
    /// Messages answered (authenticated and processed).
    pub answered: u32,
}

impl PspModel {
    /// A model with the given VMPCKs, a fixed VCEK, no VLEK, no VMRK.
    pub fn new(vmpck: [[u8; 32]; 4]) -> Self {
        Self {
            vmpck,
            last_seqno: [0; 4],
            vcek: SigningKey::from_slice(&[0x5C; 48]).unwrap(),
            vlek: None,
            vmrk: None,
            root_secret: [0xA7; 32],
            launch: Launch {
                measurement: [0x3E; 48],
                policy: snp_report::SIMULATED_POLICY,
                family_id: [0xF1; 16],
                image_id: [0x1D; 16],
                guest_svn: 7,
                committed_tcb: 0x0300_0000_0000_0A12,
                report_id: [0x99; 32],
            },
            answered: 0,
        }
    }

    /// The VCEK.
    pub fn vcek(&self) -> &SigningKey {
        &self.vcek
    }

    /// Installs a VLEK.
    pub fn install_vlek(&mut self, key: SigningKey) {
        self.vlek = Some(key);
    }

    /// The last sequence number used with VMPCK `id`.
    pub fn last_seqno(&self, id: usize) -> u64 {
        self.last_seqno[id]
    }

    /// SNP_GUEST_REQUEST as the hypervisor issues it: `Ok` with the response
    /// page written, or the failed command's status.
    pub fn guest_request(
        &mut self,
        request_page: &[u8; PAGE_SIZE],
        response_page: &mut [u8; PAGE_SIZE],
    ) -> Result<(), u32> {
        // The firmware reads the guest's page once.
        let mut msg = Box::new(*request_page);
        let (id, ty, seqno, len) = self.check_request_header(&msg[..header::LEN])?;
        let key = self.vmpck[usize::from(id)];
        {
            let (hdr, body) = msg.split_at_mut(header::LEN);
            let mut tag = [0u8; AUTHTAG_LEN];
            tag.copy_from_slice(&hdr[..AUTHTAG_LEN]);
            Aes256Gcm::new_from_slice(&key)
                .unwrap()
                .decrypt_inout_detached(
                    &nonce(seqno),
                    &hdr[header::AAD],
                    (&mut body[..len]).into(),
                    &Tag::from(tag),
                )
                .map_err(|_| FW_REJECT)?;
        }
        let version = msg[header::MSG_VERSION];
        if version != 1 {
            return Err(FW_REJECT);
        }
        let body = &msg[header::LEN..header::LEN + len];
        let answer: Vec<u8> = match ty {
            msg_type::REPORT_REQ => self.answer_report(id, body),
            _ => self.answer_key(id, body),
        };
        // Accepted: the count moves on by two (request and response).
        let rsp_seqno = seqno + 1;
        self.last_seqno[usize::from(id)] = rsp_seqno;
        self.answered += 1;
        let mut out = Box::new([0u8; PAGE_SIZE]);
        put(&mut out[..], header::MSG_SEQNO, &rsp_seqno.to_le_bytes());
        out[header::ALGO] = ALGO_AES_256_GCM;
        out[header::HDR_VERSION] = HDR_VERSION;
        put(
            &mut out[..],
            header::HDR_SZ,
            &(header::LEN as u16).to_le_bytes(),
        );
        out[header::MSG_TYPE] = ty + 1;
        out[header::MSG_VERSION] = version;
        put(
            &mut out[..],
            header::MSG_SZ,
            &(answer.len() as u16).to_le_bytes(),
        );
        out[header::MSG_VMPCK] = id;
        {
            let (hdr, body) = out.split_at_mut(header::LEN);
            let body = &mut body[..answer.len()];
            body.copy_from_slice(&answer);
            let tag = Aes256Gcm::new_from_slice(&key)
                .unwrap()
                .encrypt_inout_detached(&nonce(rsp_seqno), &hdr[header::AAD], body.into())
                .unwrap();
            hdr[..AUTHTAG_LEN].copy_from_slice(&tag);
        }
        *response_page = *out;
        Ok(())
    }

    fn check_request_header(&self, h: &[u8]) -> Result<(u8, u8, u64, usize), u32> {
        let hdr_sz = u16::from_le_bytes([h[header::HDR_SZ], h[header::HDR_SZ + 1]]);
        let len = usize::from(u16::from_le_bytes([
            h[header::MSG_SZ],
            h[header::MSG_SZ + 1],
        ]));
        let id = h[header::MSG_VMPCK];
        let ty = h[header::MSG_TYPE];
        let ok = h[header::HDR_VERSION] == 1
            && usize::from(hdr_sz) == header::LEN
            && h[header::ALGO] == 1
            && id <= 3
            && (ty == msg_type::REPORT_REQ || ty == msg_type::KEY_REQ)
            && len <= MAX_PAYLOAD
            && h[0x38..0x3C].iter().chain(&h[0x3D..0x60]).all(|b| *b == 0);
        if !ok {
            return Err(FW_REJECT);
        }
        let seqno = u64::from_le_bytes(
            h[header::MSG_SEQNO..header::MSG_SEQNO + 8]
                .try_into()
                .unwrap(),
        );
        // Exactly one above the last: a replayed or reused number (and 0) is
        // refused.
        if Some(seqno) != self.last_seqno[usize::from(id)].checked_add(1) {
            return Err(FW_REJECT);
        }
        if seqno.checked_add(1).is_none() {
            return Err(FW_REJECT);
        }
        Ok((id, ty, seqno, len))
    }

    fn answer_report(&self, requester_vmpl: u8, body: &[u8]) -> Vec<u8> {
        let mut rsp = alloc::vec![0u8; report_rsp::LEN];
        let status = self.make_report(requester_vmpl, body, &mut rsp);
        put(&mut rsp, report_rsp::STATUS, &status.to_le_bytes());
        rsp
    }

    fn make_report(&self, requester_vmpl: u8, body: &[u8], rsp: &mut [u8]) -> u32 {
        if body.len() != report_req::LEN {
            return status::INVALID_PARAM;
        }
        let vmpl = u32_at(body, report_req::VMPL);
        let sel = u32_at(body, report_req::KEY_SEL);
        if vmpl > 3
            || vmpl < u32::from(requester_vmpl)
            || sel >> 2 != 0
            || body[report_req::KEY_SEL + 4..].iter().any(|b| *b != 0)
        {
            return status::INVALID_PARAM;
        }
        let key = match self.signing_key(sel & 3) {
            Ok(k) => k,
            Err(s) => return s,
        };
        let mut report_data = [0u8; 64];
        report_data.copy_from_slice(&body[..64]);
        let fields = ReportFields {
            measurement: self.launch.measurement,
            policy: self.launch.policy,
            vmpl,
            report_id: self.launch.report_id,
        };
        let report = snp_report::build_and_sign(&fields, &report_data, key).unwrap();
        put(
            rsp,
            report_rsp::REPORT_SIZE,
            &(REPORT_LEN as u32).to_le_bytes(),
        );
        put(rsp, report_rsp::REPORT, &report);
        status::SUCCESS
    }

    fn signing_key(&self, key_sel: u32) -> Result<&SigningKey, u32> {
        match key_sel {
            0 => Ok(self.vlek.as_ref().unwrap_or(&self.vcek)),
            1 => Ok(&self.vcek),
            2 => self.vlek.as_ref().ok_or(status::INVALID_KEY),
            _ => Err(status::INVALID_PARAM),
        }
    }

    fn answer_key(&self, requester_vmpl: u8, body: &[u8]) -> Vec<u8> {
        let mut rsp = alloc::vec![0u8; key_rsp::LEN];
        let status = if body.len() != key_req::LEN {
            status::INVALID_PARAM
        } else {
            let select = u32_at(body, key_req::SELECT);
            let request = DerivedKeyRequest {
                root_key: if select & 1 == 0 {
                    RootKey::Vcek
                } else {
                    RootKey::Vmrk
                },
                key_select: match (select >> 1) & 3 {
                    0 => KeySelect::Default,
                    1 => KeySelect::Vcek,
                    2 => KeySelect::Vlek,
                    _ => return with_status(rsp, status::INVALID_PARAM),
                },
                guest_field_select: u64_at(body, key_req::GUEST_FIELD_SELECT),
                vmpl: u32_at(body, key_req::VMPL),
                guest_svn: u32_at(body, key_req::GUEST_SVN),
                tcb_version: u64_at(body, key_req::TCB_VERSION),
            };
            if select >> 3 != 0 || u32_at(body, 4) != 0 {
                status::INVALID_PARAM
            } else {
                match self.derive(requester_vmpl, &request) {
                    Ok(key) => {
                        put(&mut rsp, key_rsp::DERIVED_KEY, &key);
                        status::SUCCESS
                    }
                    Err(s) => s,
                }
            }
        };
        with_status(rsp, status)
    }

    /// The key the model derives for a request from VMPL `requester_vmpl`.
    pub fn derive(&self, requester_vmpl: u8, r: &DerivedKeyRequest) -> Result<[u8; 32], u32> {
        if r.vmpl > 3
            || r.vmpl < u32::from(requester_vmpl)
            || r.guest_field_select & !field_select::ALL != 0
            || r.guest_svn > self.launch.guest_svn
            || r.tcb_version > self.launch.committed_tcb
        {
            return Err(status::INVALID_PARAM);
        }
        let root: [u8; 32] = match r.root_key {
            RootKey::Vmrk => self.vmrk.ok_or(status::INVALID_PARAM)?,
            RootKey::Vcek => {
                let signer = self.signing_key(r.key_select as u32)?;
                let mut h = Sha256::new();
                h.update(self.root_secret);
                h.update(signer.to_bytes());
                h.finalize().into()
            }
        };
        let f = r.guest_field_select;
        let mut h = Sha256::new();
        h.update(b"rivet psp model derived key");
        h.update(root);
        h.update(r.vmpl.to_le_bytes());
        h.update(f.to_le_bytes());
        if f & field_select::GUEST_POLICY != 0 {
            h.update(self.launch.policy.to_le_bytes());
        }
        if f & field_select::IMAGE_ID != 0 {
            h.update(self.launch.image_id);
        }
        if f & field_select::FAMILY_ID != 0 {
            h.update(self.launch.family_id);
        }
        if f & field_select::MEASUREMENT != 0 {
            h.update(self.launch.measurement);
        }
        if f & field_select::GUEST_SVN != 0 {
            h.update(r.guest_svn.to_le_bytes());
        }
        if f & field_select::TCB_VERSION != 0 {
            h.update(r.tcb_version.to_le_bytes());
        }
        Ok(h.finalize().into())
    }
}

fn with_status(mut rsp: Vec<u8>, status: u32) -> Vec<u8> {
    put(&mut rsp, 0, &status.to_le_bytes());
    rsp
}

fn nonce(seqno: u64) -> aes_gcm::Nonce<aes_gcm::aead::consts::U12> {
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(&seqno.to_le_bytes());
    iv.into()
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// A change a hypervisor makes to a response page.
pub type Tamperer = Box<dyn FnMut(&mut [u8; PAGE_SIZE])>;

/// What the hypervisor does with the next guest request.
pub enum Action {
    /// Passes it to the PSP and returns its answer.
    Forward,
    /// Says BUSY without passing it on (legitimate throttling).
    Busy,
    /// Passes it on, then lies that it was BUSY.
    BusyAfterForwarding,
    /// Fails the exit with this SW_EXITINFO2, without passing it on.
    ExitInfo2(u64),
    /// Fails the exit at the GHCB level.
    Protocol,
    /// Returns a page of pseudo-random bytes (seeded).
    Garbage(u64),
    /// Returns the previous response it carried again, without passing the
    /// request on.
    Replay,
    /// Passes it on, then changes the response.
    Tamper(Tamperer),
    /// Changes the request, then passes it on.
    TamperRequest(Tamperer),
    /// Returns this page, without passing the request on.
    Canned(Box<[u8; PAGE_SIZE]>),
}

/// A hypervisor between the channel and the model PSP.
pub struct Host {
    /// The PSP.
    pub psp: PspModel,
    /// What to do with the next requests (then [`Action::Forward`]).
    pub plan: VecDeque<Action>,
    /// Every request page the guest handed over.
    pub requests: Vec<Box<[u8; PAGE_SIZE]>>,
    /// Every response page given back.
    pub responses: Vec<Box<[u8; PAGE_SIZE]>>,
    /// The `attempt` arguments of the back-off calls.
    pub backoffs: Vec<u32>,
    /// Extended requests: None, the event is unknown (nothing is sent);
    /// `Some(Ok(bytes))`, forwarded and `bytes` written to the certificate
    /// buffer; `Some(Err(n))`, refused as too small, `n` pages needed.
    pub ext: Option<Result<Vec<u8>, u64>>,
    /// Every extended request's page count.
    pub ext_pages: Vec<usize>,
}

impl Host {
    /// An honest hypervisor in front of `psp`.
    pub fn new(psp: PspModel) -> Self {
        Self {
            psp,
            plan: VecDeque::new(),
            requests: Vec::new(),
            responses: Vec::new(),
            backoffs: Vec::new(),
            ext: None,
            ext_pages: Vec::new(),
        }
    }

    /// Adds to the plan.
    pub fn then(mut self, action: Action) -> Self {
        self.plan.push_back(action);
        self
    }

    fn forward(
        &mut self,
        request: &[u8; PAGE_SIZE],
        response: &mut [u8; PAGE_SIZE],
    ) -> Result<(), TransportError> {
        self.psp
            .guest_request(request, response)
            .map_err(|fw| TransportError::ExitInfo2(u64::from(fw)))
    }
}

impl GuestRequestTransport for Host {
    fn guest_request(
        &mut self,
        request: &[u8; PAGE_SIZE],
        response: &mut [u8; PAGE_SIZE],
    ) -> Result<(), TransportError> {
        self.requests.push(Box::new(*request));
        let action = self.plan.pop_front().unwrap_or(Action::Forward);
        let result = match action {
            Action::Forward => self.forward(request, response),
            Action::Busy => Err(TransportError::ExitInfo2(VMM_ERR_BUSY)),
            Action::BusyAfterForwarding => {
                let mut scratch = [0u8; PAGE_SIZE];
                let _ = self.forward(request, &mut scratch);
                Err(TransportError::ExitInfo2(VMM_ERR_BUSY))
            }
            Action::ExitInfo2(v) => Err(TransportError::ExitInfo2(v)),
            Action::Protocol => Err(TransportError::Protocol),
            Action::Garbage(seed) => {
                let mut x = seed | 1;
                for b in response.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
                Ok(())
            }
            Action::Replay => match self.responses.last() {
                Some(old) => {
                    *response = **old;
                    Ok(())
                }
                None => Err(TransportError::Protocol),
            },
            Action::Tamper(mut f) => {
                let r = self.forward(request, response);
                f(response);
                r
            }
            Action::TamperRequest(mut f) => {
                let mut changed = *request;
                f(&mut changed);
                self.forward(&changed, response)
            }
            Action::Canned(page) => {
                *response = *page;
                Ok(())
            }
        };
        if result.is_ok() {
            self.responses.push(Box::new(*response));
        }
        result
    }

    fn extended_guest_request(
        &mut self,
        request: &[u8; PAGE_SIZE],
        response: &mut [u8; PAGE_SIZE],
        certs: &mut [u8],
    ) -> Result<(), TransportError> {
        let Some(ext) = self.ext.clone() else {
            return Err(TransportError::Protocol);
        };
        self.ext_pages.push(certs.len() / PAGE_SIZE);
        match ext {
            Err(pages) => {
                self.requests.push(Box::new(*request));
                Err(TransportError::CertsTooSmall(pages))
            }
            Ok(bytes) => {
                self.guest_request(request, response)?;
                let n = bytes.len().min(certs.len());
                certs[..n].copy_from_slice(&bytes[..n]);
                Ok(())
            }
        }
    }

    fn busy_backoff(&mut self, attempt: u32) {
        self.backoffs.push(attempt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::snp::guest_request::{
        GuestRequestChannel, GuestRequestError, MAX_BUSY_RETRIES, ResponseFault,
        VMM_ERR_INVALID_LEN,
    };
    use crate::platform::snp::secrets::Vmpck;
    use crate::platform::snp_report::offset;
    use p384::ecdsa::signature::hazmat::PrehashVerifier;
    use p384::ecdsa::{Signature, VerifyingKey};
    use sha2::Sha384;

    const KEYS: [[u8; 32]; 4] = [[0x01; 32], [0x02; 32], [0x03; 32], [0x04; 32]];
    const DATA: [u8; 64] = [0xD4; 64];

    type Channel = GuestRequestChannel<Host>;

    fn host() -> Host {
        // Making the P-384 keys is the slow part; do it once.
        static PSP: std::sync::OnceLock<PspModel> = std::sync::OnceLock::new();
        Host::new(PSP.get_or_init(|| PspModel::new(KEYS)).clone())
    }

    fn channel(host: Host) -> Channel {
        GuestRequestChannel::new(host, Vmpck::new(KEYS[0])).unwrap()
    }

    fn key_request() -> DerivedKeyRequest {
        DerivedKeyRequest {
            root_key: RootKey::Vcek,
            key_select: KeySelect::Default,
            guest_field_select: field_select::MEASUREMENT | field_select::GUEST_POLICY,
            vmpl: 0,
            guest_svn: 0,
            tcb_version: 0,
        }
    }

    fn verifies(report: &[u8; REPORT_LEN], key: &SigningKey) -> bool {
        let be = |o: usize| {
            let mut v = [0u8; 48];
            for i in 0..48 {
                v[47 - i] = report[o + i];
            }
            v
        };
        let Ok(sig) = Signature::from_scalars(be(offset::SIGNATURE_R), be(offset::SIGNATURE_S))
        else {
            return false;
        };
        VerifyingKey::from(key)
            .verify_prehash(&Sha384::digest(&report[..snp_report::SIGNED_LEN]), &sig)
            .is_ok()
    }

    fn seqno_of(page: &[u8; PAGE_SIZE]) -> u64 {
        u64_at(page, header::MSG_SEQNO)
    }

    /// The channel has destroyed its key and sends nothing any more.
    fn assert_dead(ch: &mut Channel) {
        assert!(ch.is_disabled());
        assert!(ch.key_is_wiped());
        let sent = ch.transport().requests.len();
        assert_eq!(ch.report(&DATA, 0), Err(GuestRequestError::Disabled));
        assert_eq!(
            ch.derived_key(&key_request()).unwrap_err(),
            GuestRequestError::Disabled
        );
        assert_eq!(
            ch.transport().requests.len(),
            sent,
            "a disabled channel sent"
        );
    }

    #[test]
    fn report_round_trip_verifies_on_the_host() {
        let mut ch = channel(host());
        let report = ch.report(&DATA, 0).unwrap();
        let psp = &ch.transport().psp;
        assert!(verifies(&report, psp.vcek()));
        assert_eq!(
            &report[offset::REPORT_DATA..offset::REPORT_DATA + 64],
            &DATA
        );
        assert_eq!(
            &report[offset::MEASUREMENT..offset::MEASUREMENT + 48],
            &[0x3E; 48]
        );
        assert_eq!(u32_at(&report, offset::VMPL), 0);
        let mut forged = report;
        forged[offset::REPORT_DATA] ^= 1;
        assert!(!verifies(&forged, psp.vcek()));
        // The guest's VMPL can be asked for too.
        let report = ch.report(&[7; 64], 2).unwrap();
        assert!(verifies(&report, ch.transport().psp.vcek()));
        assert_eq!(u32_at(&report, offset::VMPL), 2);
        assert_eq!(
            &report[offset::REPORT_DATA..offset::REPORT_DATA + 64],
            &[7; 64]
        );
        assert!(!ch.is_disabled());
    }

    #[test]
    fn the_request_page_carries_the_abi_header_and_only_ciphertext() {
        let mut ch = channel(host());
        ch.report(&DATA, 0).unwrap();
        let page = &ch.transport().requests[0];
        assert_eq!(seqno_of(page), 1);
        assert_eq!(page[0x30], 1, "ALGO");
        assert_eq!(page[0x31], 1, "HDR_VERSION");
        assert_eq!(&page[0x32..0x34], &[0x60, 0], "HDR_SZ");
        assert_eq!(page[0x34], msg_type::REPORT_REQ);
        assert_eq!(page[0x35], 1, "MSG_VERSION");
        assert_eq!(&page[0x36..0x38], &[0x60, 0], "MSG_SZ");
        assert_eq!(page[0x3C], 0, "MSG_VMPCK");
        assert!(page[0x10..0x20].iter().all(|b| *b == 0));
        assert!(page[0x28..0x30].iter().all(|b| *b == 0));
        assert!(
            page[0x38..0x3C]
                .iter()
                .chain(&page[0x3D..0x60])
                .all(|b| *b == 0)
        );
        assert!(page[..0x10].iter().any(|b| *b != 0), "no tag");
        assert!(
            !page.windows(8).any(|w| w == &DATA[..8]),
            "plaintext on the page"
        );
        assert!(page[0x60 + 0x60..].iter().all(|b| *b == 0));
    }

    #[test]
    fn sequence_numbers_advance_by_two_and_stay_in_step_with_the_psp() {
        let mut ch = channel(host());
        for i in 1..=5u64 {
            if i % 2 == 0 {
                ch.derived_key(&key_request()).unwrap();
            } else {
                ch.report(&DATA, 0).unwrap();
            }
            assert_eq!(ch.last_seqno(), 2 * i);
            let h = ch.transport();
            assert_eq!(h.psp.last_seqno(0), 2 * i);
            assert_eq!(seqno_of(&h.requests[i as usize - 1]), 2 * i - 1);
            assert_eq!(seqno_of(&h.responses[i as usize - 1]), 2 * i);
        }
        assert_eq!(ch.transport().psp.answered, 5);
        // The other keys' counts are untouched.
        assert_eq!(ch.transport().psp.last_seqno(1), 0);
    }

    #[test]
    fn the_psp_refuses_a_reused_replayed_or_skipped_sequence_number() {
        let mut ch = channel(host());
        ch.report(&DATA, 0).unwrap();
        ch.report(&DATA, 0).unwrap();
        let first = ch.transport().requests[0].clone();
        let second = ch.transport().requests[1].clone();
        let psp = &mut ch.transport_mut().psp;
        let mut out = [0u8; PAGE_SIZE];
        assert_eq!(psp.guest_request(&first, &mut out), Err(FW_REJECT));
        assert_eq!(psp.guest_request(&second, &mut out), Err(FW_REJECT));
        assert!(
            out.iter().all(|b| *b == 0),
            "a refused request was answered"
        );
        assert_eq!((psp.last_seqno(0), psp.answered), (4, 2));
        // The channel still works: the refusals did not move the count.
        ch.report(&DATA, 0).unwrap();
        assert_eq!(ch.last_seqno(), 6);

        // A guest that skips numbers is refused by the PSP, and the channel
        // then destroys its key.
        let mut ch = channel(host()).starting_after(4);
        assert_eq!(
            ch.report(&DATA, 0),
            Err(GuestRequestError::Transport(TransportError::ExitInfo2(
                u64::from(FW_REJECT)
            )))
        );
        assert_eq!(ch.transport().psp.last_seqno(0), 0);
        assert_dead(&mut ch);
    }

    #[test]
    fn the_psp_refuses_a_message_under_the_wrong_key() {
        let mut psp = PspModel::new(KEYS);
        // The guest encrypts under VMPCK2 but claims VMPCK0.
        let mut ch = GuestRequestChannel::with_vmpck(host(), 0, Vmpck::new(KEYS[2])).unwrap();
        assert!(ch.report(&DATA, 0).is_err());
        assert_dead(&mut ch);
        let mut out = [0u8; PAGE_SIZE];
        let page = ch.transport().requests[0].clone();
        assert_eq!(psp.guest_request(&page, &mut out), Err(FW_REJECT));
        assert_eq!(psp.answered, 0);
    }

    #[test]
    fn the_count_never_moves_back() {
        let mut ch = channel(host());
        ch.report(&DATA, 0).unwrap();
        let mut ch = ch.starting_after(0);
        assert_eq!(ch.last_seqno(), 2);
        ch.report(&DATA, 0).unwrap();
        assert_eq!(seqno_of(&ch.transport().requests[1]), 3);
    }

    #[test]
    fn the_sequence_space_runs_out_without_sending() {
        let mut ch = channel(host()).starting_after(u64::MAX - 1);
        assert_eq!(
            ch.report(&DATA, 0),
            Err(GuestRequestError::SequenceExhausted)
        );
        assert!(ch.transport().requests.is_empty());
        assert_dead(&mut ch);
    }

    #[test]
    fn a_missing_key_or_id_is_refused() {
        assert_eq!(
            GuestRequestChannel::new(host(), Vmpck::new([0; 32])).unwrap_err(),
            GuestRequestError::InvalidKey
        );
        assert_eq!(
            GuestRequestChannel::with_vmpck(host(), 4, Vmpck::new(KEYS[0])).unwrap_err(),
            GuestRequestError::InvalidKey
        );
    }

    #[test]
    fn key_request_returns_the_key_the_psp_derives_for_those_fields() {
        let mut ch = channel(host());
        let req = key_request();
        let key = ch.derived_key(&req).unwrap();
        assert_eq!(*key, ch.transport().psp.derive(0, &req).unwrap());
        assert_eq!(*ch.derived_key(&req).unwrap(), *key, "not deterministic");
        for other in [
            DerivedKeyRequest { vmpl: 1, ..req },
            DerivedKeyRequest {
                guest_field_select: field_select::MEASUREMENT,
                ..req
            },
            DerivedKeyRequest {
                guest_field_select: req.guest_field_select | field_select::GUEST_SVN,
                guest_svn: 3,
                ..req
            },
            DerivedKeyRequest {
                key_select: KeySelect::Vcek,
                guest_field_select: field_select::ALL,
                tcb_version: 0x0300_0000_0000_0A12,
                ..req
            },
        ] {
            let k = ch.derived_key(&other).unwrap();
            assert_ne!(*k, *key, "{other:?}");
            assert_eq!(*k, ch.transport().psp.derive(0, &other).unwrap());
        }
        // A guest at VMPL2 with VMPCK2 gets keys for VMPL2 and above.
        let mut guest = GuestRequestChannel::with_vmpck(host(), 2, Vmpck::new(KEYS[2])).unwrap();
        let r2 = DerivedKeyRequest { vmpl: 2, ..req };
        assert_eq!(
            *guest.derived_key(&r2).unwrap(),
            guest.transport().psp.derive(2, &r2).unwrap()
        );
        assert_eq!(guest.transport().psp.last_seqno(2), 2);
    }

    #[test]
    fn firmware_error_answers_are_reported_and_keep_the_channel() {
        let mut ch = channel(host());
        let invalid = GuestRequestError::Firmware(status::INVALID_PARAM);
        let no_key = GuestRequestError::Firmware(status::INVALID_KEY);
        assert_eq!(ch.report(&DATA, 4), Err(invalid));
        assert_eq!(ch.report_with_key(&DATA, 0, KeySelect::Vlek), Err(no_key));
        let req = key_request();
        for (bad, expected) in [
            (DerivedKeyRequest { vmpl: 4, ..req }, invalid),
            (
                DerivedKeyRequest {
                    guest_svn: 8,
                    ..req
                },
                invalid,
            ),
            (
                DerivedKeyRequest {
                    tcb_version: 0x0300_0000_0000_0A13,
                    ..req
                },
                invalid,
            ),
            (
                DerivedKeyRequest {
                    guest_field_select: 1 << 6,
                    ..req
                },
                invalid,
            ),
            (
                DerivedKeyRequest {
                    root_key: RootKey::Vmrk,
                    ..req
                },
                invalid,
            ),
            (
                DerivedKeyRequest {
                    key_select: KeySelect::Vlek,
                    ..req
                },
                no_key,
            ),
        ] {
            assert_eq!(ch.derived_key(&bad).unwrap_err(), expected, "{bad:?}");
        }
        assert!(!ch.is_disabled());
        assert_eq!(ch.last_seqno(), 16);
        ch.report(&DATA, 0).unwrap();
        assert_eq!(ch.last_seqno(), 18);
        // A requester may not ask for a more privileged VMPL than its key's.
        let mut guest = GuestRequestChannel::with_vmpck(host(), 2, Vmpck::new(KEYS[2])).unwrap();
        assert_eq!(guest.report(&DATA, 1), Err(invalid));
        assert_eq!(
            guest
                .derived_key(&DerivedKeyRequest { vmpl: 1, ..req })
                .unwrap_err(),
            invalid
        );
        let report = guest.report(&DATA, 3).unwrap();
        assert_eq!(u32_at(&report, offset::VMPL), 3);
    }

    #[test]
    fn reports_are_signed_by_the_selected_key() {
        let vlek = SigningKey::from_slice(&[0x1E; 48]).unwrap();
        let mut h = host();
        h.psp.install_vlek(vlek.clone());
        let mut ch = channel(h);
        let by_default = ch.report(&DATA, 0).unwrap();
        assert!(verifies(&by_default, &vlek));
        assert!(!verifies(&by_default, ch.transport().psp.vcek()));
        let by_vcek = ch.report_with_key(&DATA, 0, KeySelect::Vcek).unwrap();
        assert!(verifies(&by_vcek, ch.transport().psp.vcek()));
        let by_vlek = ch.report_with_key(&DATA, 0, KeySelect::Vlek).unwrap();
        assert!(verifies(&by_vlek, &vlek));
    }

    #[test]
    fn busy_is_retried_with_the_identical_message_and_one_sequence_number() {
        let h = host()
            .then(Action::Busy)
            .then(Action::Busy)
            .then(Action::Busy);
        let mut ch = channel(h);
        let report = ch.report(&DATA, 0).unwrap();
        let h = ch.transport();
        assert!(verifies(&report, h.psp.vcek()));
        assert_eq!(h.requests.len(), 4);
        assert!(h.requests.iter().all(|r| r == &h.requests[0]));
        assert_eq!(h.backoffs, [1, 2, 3]);
        assert_eq!((ch.last_seqno(), h.psp.last_seqno(0)), (2, 2));
        ch.report(&DATA, 0).unwrap();
        assert_eq!(seqno_of(&ch.transport().requests[4]), 3);
    }

    #[test]
    fn a_refused_certificate_buffer_resends_the_identical_message_plain() {
        use crate::platform::snp::guest_request::CertsAnswer;
        let mut h = host();
        h.ext = Some(Err(7));
        let mut ch = channel(h);
        let mut certs = std::vec![0u8; 2 * PAGE_SIZE];
        let (report, answer) = ch.report_with_certificates(&DATA, 0, &mut certs).unwrap();
        assert_eq!(answer, CertsAnswer::TooSmall(7));
        let h = ch.transport();
        assert!(verifies(&report, h.psp.vcek()));
        assert_eq!(h.ext_pages, [2]);
        // The extended request and the plain resend: the same ciphertext,
        // one sequence number.
        assert_eq!(h.requests.len(), 2);
        assert_eq!(h.requests[0], h.requests[1]);
        assert_eq!((ch.last_seqno(), h.psp.last_seqno(0)), (2, 2));

        // A host without the event: nothing sent on it, the plain request
        // carries the message.
        ch.transport_mut().ext = None;
        let (_, answer) = ch.report_with_certificates(&DATA, 0, &mut certs).unwrap();
        assert_eq!(answer, CertsAnswer::NotServed);
        assert_eq!(ch.transport().requests.len(), 3);
        assert_eq!((ch.last_seqno(), ch.transport().psp.last_seqno(0)), (4, 4));

        // A host that serves it.
        ch.transport_mut().ext = Some(Ok(std::vec![0xAB; 100]));
        let (report, answer) = ch.report_with_certificates(&DATA, 0, &mut certs).unwrap();
        assert_eq!(answer, CertsAnswer::Written);
        assert!(verifies(&report, ch.transport().psp.vcek()));
        assert_eq!(&certs[..100], &[0xAB; 100][..]);
        assert_eq!(ch.last_seqno(), 6);

        // Buffers that are not whole pages are refused before anything is
        // sent, and cost nothing.
        for len in [0, 100, PAGE_SIZE + 1] {
            let mut b = std::vec![0u8; len];
            assert_eq!(
                ch.report_with_certificates(&DATA, 0, &mut b),
                Err(GuestRequestError::InvalidRequest)
            );
        }
        assert!(!ch.is_disabled());
        assert_eq!(ch.transport().requests.len(), 4);
    }

    #[test]
    fn endless_busy_gives_up_and_wipes() {
        let mut h = host();
        for _ in 0..=MAX_BUSY_RETRIES {
            h = h.then(Action::Busy);
        }
        let mut ch = channel(h);
        assert_eq!(
            ch.report(&DATA, 0),
            Err(GuestRequestError::Busy {
                attempts: MAX_BUSY_RETRIES + 1
            })
        );
        let h = ch.transport();
        assert_eq!(h.requests.len(), MAX_BUSY_RETRIES as usize + 1);
        assert!(h.requests.iter().all(|r| r == &h.requests[0]));
        assert_eq!(h.backoffs, (1..=MAX_BUSY_RETRIES).collect::<Vec<_>>());
        assert_eq!(h.psp.answered, 0);
        assert_dead(&mut ch);
    }

    fn tamper(f: impl FnMut(&mut [u8; PAGE_SIZE]) + 'static) -> Action {
        Action::Tamper(Box::new(f))
    }

    #[test]
    fn every_hostile_hypervisor_ends_in_a_wiped_key_and_a_refused_next_request() {
        use GuestRequestError::{BadResponse, Transport};
        use ResponseFault::*;
        use TransportError::{ExitInfo2, Protocol};
        let set_u16 =
            |at: usize, v: u16| tamper(move |p| p[at..at + 2].copy_from_slice(&v.to_le_bytes()));
        let set_u8 = |at: usize, v: u8| tamper(move |p| p[at] = v);
        let flip = |at: usize| tamper(move |p| p[at] ^= 0x04);
        type Check = fn(&GuestRequestError) -> bool;
        let cases: Vec<(&str, Action, Check)> = vec![
            ("garbage", Action::Garbage(1), |e| {
                matches!(e, BadResponse(_))
            }),
            ("garbage 2", Action::Garbage(0xDEAD_BEEF), |e| {
                matches!(e, BadResponse(_))
            }),
            ("zero page", Action::Canned(Box::new([0; PAGE_SIZE])), |e| {
                *e == BadResponse(HeaderVersion(0))
            }),
            ("seqno + 2", tamper(|p| p[0x20] += 2), |e| {
                *e == BadResponse(SequenceNumber(6))
            }),
            ("seqno = request's", tamper(|p| p[0x20] = 1), |e| {
                *e == BadResponse(SequenceNumber(1))
            }),
            ("replayed response", Action::Replay, |e| {
                *e == BadResponse(SequenceNumber(2))
            }),
            ("msg_sz truncated", set_u16(0x36, 0x10), |e| {
                *e == BadResponse(MessageSize(0x10))
            }),
            ("msg_sz shortened", set_u16(0x36, 0x20), |e| {
                *e == BadResponse(Authentication)
            }),
            ("msg_sz too large", set_u16(0x36, 0xFFFF), |e| {
                *e == BadResponse(MessageSize(0xFFFF))
            }),
            ("msg_sz page end", set_u16(0x36, 4001), |e| {
                *e == BadResponse(MessageSize(4001))
            }),
            ("type = request", set_u8(0x34, msg_type::REPORT_REQ), |e| {
                *e == BadResponse(MessageType(5))
            }),
            ("type = key rsp", set_u8(0x34, msg_type::KEY_RSP), |e| {
                *e == BadResponse(MessageType(4))
            }),
            ("msg version", set_u8(0x35, 2), |e| {
                *e == BadResponse(MessageVersion(2))
            }),
            ("vmpck id", set_u8(0x3C, 1), |e| *e == BadResponse(Vmpck(1))),
            ("algo", set_u8(0x30, 0), |e| *e == BadResponse(Algorithm(0))),
            ("hdr version", set_u8(0x31, 2), |e| {
                *e == BadResponse(HeaderVersion(2))
            }),
            ("hdr size", set_u16(0x32, 0x40), |e| {
                *e == BadResponse(HeaderSize(0x40))
            }),
            ("reserved in AAD", set_u8(0x50, 1), |e| {
                *e == BadResponse(Reserved)
            }),
            ("ciphertext bit", flip(0x60 + 0x100), |e| {
                *e == BadResponse(Authentication)
            }),
            ("report bit", flip(0x60 + 0x20 + 0x50), |e| {
                *e == BadResponse(Authentication)
            }),
            ("tag bit", flip(0x05), |e| *e == BadResponse(Authentication)),
            ("AAD bit (msg_sz)", flip(0x36), |e| {
                *e == BadResponse(Authentication)
            }),
            ("firmware error", Action::ExitInfo2(0x16), |e| {
                *e == Transport(ExitInfo2(0x16))
            }),
            ("invalid len", Action::ExitInfo2(VMM_ERR_INVALID_LEN), |e| {
                *e == Transport(ExitInfo2(1 << 32))
            }),
            ("generic vmm error", Action::ExitInfo2(1 << 63), |e| {
                *e == Transport(ExitInfo2(1 << 63))
            }),
            (
                "busy with firmware bits",
                Action::ExitInfo2(VMM_ERR_BUSY | 0x16),
                |e| *e == Transport(ExitInfo2((2 << 32) | 0x16)),
            ),
            ("ghcb protocol", Action::Protocol, |e| {
                *e == Transport(Protocol)
            }),
            ("busy after forwarding", Action::BusyAfterForwarding, |e| {
                *e == Transport(ExitInfo2(u64::from(FW_REJECT)))
            }),
        ];
        for (name, action, check) in cases {
            // One honest exchange first, so that a replay has something old.
            let mut ch = channel(host().then(Action::Forward).then(action));
            ch.report(&DATA, 0).unwrap();
            let err = ch.report(&DATA, 0).unwrap_err();
            assert!(check(&err), "{name}: {err:?}");
            assert_dead(&mut ch);
        }
    }

    #[test]
    fn the_psp_refuses_a_request_the_host_changed_and_the_channel_wipes() {
        let cases: Vec<(&str, Tamperer)> = vec![
            ("ciphertext bit", Box::new(|p| p[0x60 + 3] ^= 0x80)),
            ("tag bit", Box::new(|p| p[0x0F] ^= 1)),
            ("AAD: msg_sz", Box::new(|p| p[0x36] ^= 1)),
            ("AAD: vmpck id", Box::new(|p| p[0x3C] = 1)),
            ("AAD: reserved", Box::new(|p| p[0x5F] = 1)),
            ("AAD: type", Box::new(|p| p[0x34] = msg_type::KEY_REQ)),
            ("AAD: msg version", Box::new(|p| p[0x35] = 2)),
            ("seqno", Box::new(|p| p[0x20] = 3)),
            ("seqno zero", Box::new(|p| p[0x20] = 0)),
            ("algo", Box::new(|p| p[0x30] = 2)),
        ];
        for (name, change) in cases {
            let mut ch = channel(host().then(Action::TamperRequest(change)));
            let err = ch.report(&DATA, 0).unwrap_err();
            assert_eq!(
                err,
                GuestRequestError::Transport(TransportError::ExitInfo2(u64::from(FW_REJECT))),
                "{name}"
            );
            assert_eq!(ch.transport().psp.answered, 0, "{name}");
            assert_eq!(ch.transport().psp.last_seqno(0), 0, "{name}");
            assert_dead(&mut ch);
        }
    }

    #[test]
    fn a_key_taken_from_the_secrets_page_drives_the_channel() {
        use crate::platform::snp::secrets::{SECRETS_PAGE_SIZE, SecretsPage, wipe_vmpck_in_page};
        let mut page = [0u8; SECRETS_PAGE_SIZE];
        page[0..4].copy_from_slice(&3u32.to_le_bytes());
        for (i, k) in KEYS.iter().enumerate() {
            page[0x20 + 32 * i..0x40 + 32 * i].copy_from_slice(k);
        }
        let mut secrets = SecretsPage::copy_from(&page).unwrap();
        let key = secrets.take_vmpck(0).unwrap();
        wipe_vmpck_in_page(0, &mut page).unwrap();
        assert!(page[0x20..0x40].iter().all(|b| *b == 0));
        let mut ch = GuestRequestChannel::new(host(), key).unwrap();
        let report = ch.report(&DATA, 0).unwrap();
        assert!(verifies(&report, ch.transport().psp.vcek()));
    }

    /// The honest response page to the first report request.
    fn honest_first_response() -> (Box<[u8; PAGE_SIZE]>, [u8; REPORT_LEN]) {
        let mut ch = channel(host());
        let report = ch.report(&DATA, 0).unwrap();
        (ch.transport().responses[0].clone(), report)
    }

    #[test]
    fn every_single_bit_flip_in_header_and_payload_is_refused() {
        let (honest, report) = honest_first_response();
        let end = header::LEN + usize::from(u16::from_le_bytes([honest[0x36], honest[0x37]]));
        assert_eq!(end, header::LEN + report_rsp::LEN);
        // Outside the AEAD and never read: the tag's upper half, reserved 0x28.
        let ignored = |i: usize| (0x10..0x20).contains(&i) || (0x28..0x30).contains(&i);
        let mut refused = 0;
        for i in (0..end).chain([end, end + 1, 0x800, PAGE_SIZE - 1]) {
            let mut page = honest.clone();
            page[i] ^= 1 << (i % 8);
            let mut ch = channel(host().then(Action::Canned(page)));
            match ch.report(&DATA, 0) {
                Ok(r) => {
                    assert!(ignored(i) || i >= end, "flip at {i:#x} accepted");
                    assert_eq!(r, report);
                }
                Err(e) => {
                    assert!(!ignored(i) && i < end, "flip at {i:#x} refused: {e:?}");
                    assert!(ch.is_disabled() && ch.key_is_wiped());
                    refused += 1;
                }
            }
        }
        assert_eq!(refused, end - 24);
    }

    #[test]
    fn random_bytes_from_the_host_never_panic_and_never_pass() {
        let (honest, report) = honest_first_response();
        let mut x = 0x1234_5678_9ABC_DEF1u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..400 {
            let action = if round % 2 == 0 {
                Action::Garbage(next())
            } else {
                // A few random bytes of a valid response changed.
                let mut page = honest.clone();
                for _ in 0..1 + next() % 6 {
                    let at = (next() % 0x560) as usize;
                    page[at] = next() as u8;
                }
                Action::Canned(page)
            };
            let mut ch = channel(host().then(action));
            match ch.report(&DATA, 0) {
                Ok(r) => assert_eq!(r, report, "round {round}: a changed report passed"),
                Err(_) => assert!(ch.is_disabled() && ch.key_is_wiped()),
            }
        }
    }
}
