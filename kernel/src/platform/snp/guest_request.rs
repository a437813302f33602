//! The SNP guest-request channel: MSG_REPORT_REQ and MSG_KEY_REQ to the PSP,
//! AES-256-GCM under a VMPCK (VMPCK0 for the SVSM).
//!
//! References:
//! - SEV-SNP Firmware ABI (AMD 56860), chapter "Guest Messages": the message
//!   header (AUTHTAG @0x00, MSG_SEQNO @0x20, ALGO @0x30, HDR_VERSION @0x31,
//!   HDR_SZ @0x32, MSG_TYPE @0x34, MSG_VERSION @0x35, MSG_SZ @0x36, MSG_VMPCK
//!   @0x3C; 0x60 bytes, payload after it), AES-256-GCM with the header bytes
//!   0x30..0x60 as additional data and the sequence number, little-endian,
//!   zero-padded to 12 bytes, as the IV; the firmware accepts only the
//!   sequence number one above the last it saw for that VMPCK and answers with
//!   the next one. MSG_REPORT_REQ/RSP and MSG_KEY_REQ/RSP layouts and their
//!   STATUS values (0 success, 0x16 INVALID_PARAM, 0x27 INVALID_KEY).
//! - GHCB specification (AMD 56421), "SNP Guest Request" NAE event, exit code
//!   0x8000_0011: SW_EXITINFO1 = request page GPA, SW_EXITINFO2 = response
//!   page GPA; on return SW_EXITINFO2 bits 63:32 carry the hypervisor's error
//!   (1 INVALID_LEN, 2 BUSY) and bits 31:0 the firmware's status. "SNP
//!   Extended Guest Request", 0x8000_0012: the same plus RAX/RBX naming a
//!   certificate buffer ([`GuestRequestChannel::report_with_certificates`];
//!   the table itself is checked in `certs`).
//! - Linux `arch/x86/coco/sev/core.c` (`snp_send_guest_request`) for the
//!   practice this module follows: one sequence number per message, retry the
//!   byte-identical message on BUSY, otherwise destroy the key on any error.
//!
//! Why the key is destroyed: the IV is the sequence number. A ciphertext
//! that has left private memory has spent its sequence number. Sending a
//! different message under the same number would reuse a GCM nonce (leaking
//! the keystream and the authentication key); skipping the number makes the
//! firmware refuse every later message. So once a request has been handed to
//! the hypervisor the exchange ends in exactly one of three ways: a valid
//! response (the count moves on by two), the hypervisor saying BUSY (the very
//! same bytes are sent again; nothing new is revealed), or the key is wiped
//! and the channel refuses every later request. An extended request whose
//! certificate part the hypervisor refuses (buffer too small, or the event
//! unknown) is a fourth, harmless case: the identical bytes go out again as
//! a plain request, as Linux does, so the count stays in step.
//!
//! The hardware exit is behind [`GuestRequestTransport`], which the platform's
//! GHCB code implements; everything above it is tested on the host against a
//! software model of the PSP (`psp_model`, test builds only).

use alloc::boxed::Box;
use core::fmt;
use core::ops::Range;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Tag};
use zeroize::{Zeroize, Zeroizing};

use super::secrets::Vmpck;
use crate::bytes::{le_u16, le_u32, le_u64};
use crate::platform::snp_report::REPORT_LEN;

/// Size of the request and response pages.
pub const PAGE_SIZE: usize = 4096;

/// The message header.
pub mod header {
    use core::ops::Range;

    /// Size of the header (HDR_SZ).
    pub const LEN: usize = 0x60;
    /// AUTHTAG (32 bytes; AES-256-GCM uses the first 16).
    pub const AUTHTAG: usize = 0x00;
    /// u64 MSG_SEQNO.
    pub const MSG_SEQNO: usize = 0x20;
    /// u8 ALGO.
    pub const ALGO: usize = 0x30;
    /// u8 HDR_VERSION.
    pub const HDR_VERSION: usize = 0x31;
    /// u16 HDR_SZ.
    pub const HDR_SZ: usize = 0x32;
    /// u8 MSG_TYPE.
    pub const MSG_TYPE: usize = 0x34;
    /// u8 MSG_VERSION.
    pub const MSG_VERSION: usize = 0x35;
    /// u16 MSG_SZ (payload bytes, without the tag).
    pub const MSG_SZ: usize = 0x36;
    /// u8 MSG_VMPCK.
    pub const MSG_VMPCK: usize = 0x3C;
    /// The additional authenticated data: ALGO up to the end of the header.
    pub const AAD: Range<usize> = 0x30..0x60;
    /// Reserved bytes inside the AAD (must be zero).
    pub const RESERVED_IN_AAD: [Range<usize>; 2] = [0x38..0x3C, 0x3D..0x60];
}

/// Length of the AES-GCM tag.
pub const AUTHTAG_LEN: usize = 16;
/// Largest payload a page can carry.
pub const MAX_PAYLOAD: usize = PAGE_SIZE - header::LEN;
/// HDR_VERSION this module speaks.
pub const HDR_VERSION: u8 = 1;
/// ALGO value for AES-256-GCM.
pub const ALGO_AES_256_GCM: u8 = 1;
/// MSG_VERSION of the requests this module sends.
pub const MSG_VERSION: u8 = 1;

/// MSG_TYPE values.
pub mod msg_type {
    /// MSG_KEY_REQ.
    pub const KEY_REQ: u8 = 3;
    /// MSG_KEY_RSP.
    pub const KEY_RSP: u8 = 4;
    /// MSG_REPORT_REQ.
    pub const REPORT_REQ: u8 = 5;
    /// MSG_REPORT_RSP.
    pub const REPORT_RSP: u8 = 6;
}

/// MSG_REPORT_REQ payload.
pub mod report_req {
    /// Size.
    pub const LEN: usize = 0x60;
    /// REPORT_DATA (64 bytes).
    pub const REPORT_DATA: usize = 0x00;
    /// u32 VMPL.
    pub const VMPL: usize = 0x40;
    /// u32: bits 1:0 KEY_SEL, the rest reserved.
    pub const KEY_SEL: usize = 0x44;
}

/// MSG_REPORT_RSP payload.
pub mod report_rsp {
    /// Size.
    pub const LEN: usize = REPORT + crate::platform::snp_report::REPORT_LEN;
    /// u32 STATUS.
    pub const STATUS: usize = 0x00;
    /// u32 REPORT_SIZE.
    pub const REPORT_SIZE: usize = 0x04;
    /// The report.
    pub const REPORT: usize = 0x20;
}

/// MSG_KEY_REQ payload.
pub mod key_req {
    /// Size.
    pub const LEN: usize = 0x20;
    /// u32: bit 0 ROOT_KEY_SELECT, bits 2:1 KEY_SEL, the rest reserved.
    pub const SELECT: usize = 0x00;
    /// u64 GUEST_FIELD_SELECT.
    pub const GUEST_FIELD_SELECT: usize = 0x08;
    /// u32 VMPL.
    pub const VMPL: usize = 0x10;
    /// u32 GUEST_SVN.
    pub const GUEST_SVN: usize = 0x14;
    /// u64 TCB_VERSION.
    pub const TCB_VERSION: usize = 0x18;
}

/// MSG_KEY_RSP payload.
pub mod key_rsp {
    /// Size.
    pub const LEN: usize = 0x40;
    /// u32 STATUS.
    pub const STATUS: usize = 0x00;
    /// DERIVED_KEY (32 bytes).
    pub const DERIVED_KEY: usize = 0x20;
}

/// GUEST_FIELD_SELECT bits of MSG_KEY_REQ: what is mixed into the key.
pub mod field_select {
    /// The guest policy.
    pub const GUEST_POLICY: u64 = 1 << 0;
    /// IMAGE_ID.
    pub const IMAGE_ID: u64 = 1 << 1;
    /// FAMILY_ID.
    pub const FAMILY_ID: u64 = 1 << 2;
    /// The launch measurement.
    pub const MEASUREMENT: u64 = 1 << 3;
    /// The guest SVN given in the request.
    pub const GUEST_SVN: u64 = 1 << 4;
    /// The TCB version given in the request.
    pub const TCB_VERSION: u64 = 1 << 5;
    /// All bits defined for MSG_VERSION 1.
    pub const ALL: u64 = 0x3F;
}

/// STATUS values in a response.
pub mod status {
    /// Success.
    pub const SUCCESS: u32 = 0x00;
    /// INVALID_PARAM.
    pub const INVALID_PARAM: u32 = 0x16;
    /// INVALID_KEY.
    pub const INVALID_KEY: u32 = 0x27;
}

/// Every payload starts with STATUS and reserved bytes up to 0x20.
pub const MIN_RESPONSE_LEN: usize = 0x20;
/// Length of a derived key.
pub const DERIVED_KEY_LEN: usize = 32;

/// SW_EXITINFO2 when the hypervisor refused an extended request's
/// certificate buffer as too small (GHCB spec; RBX then holds the pages it
/// needs). The transport reports it as [`TransportError::CertsTooSmall`]; on
/// a plain request, or without RBX, it is an error like any other.
pub const VMM_ERR_INVALID_LEN: u64 = 1 << 32;
/// SW_EXITINFO2 when the hypervisor throttled the request without passing it
/// to the firmware (GHCB spec): the same message must be sent again.
pub const VMM_ERR_BUSY: u64 = 2 << 32;
/// How many times a request the hypervisor answered BUSY is sent again
/// before the channel gives up (and wipes the key: the spent ciphertext can
/// only ever be followed by itself). With the transport's back-off this
/// matches Linux (2 s per retry, 60 s in all).
pub const MAX_BUSY_RETRIES: u32 = 30;

/// What went wrong below the channel, as the GHCB protocol reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// The hypervisor completed the exit with a non-zero SW_EXITINFO2 (bits
    /// 63:32 its own error, bits 31:0 the firmware's status), passed through
    /// unchanged.
    ExitInfo2(u64),
    /// The exit itself failed: no usable GHCB, SW_EXITINFO1/2 not marked
    /// valid, or the hypervisor asked for an exception to be injected.
    Protocol,
    /// Extended requests only: SW_EXITINFO2 was INVALID_LEN and RBX says the
    /// certificates need this many pages. The firmware has not seen the
    /// message (GHCB spec).
    CertsTooSmall(u64),
}

/// The hardware exit, implemented by the platform's GHCB code.
pub trait GuestRequestTransport {
    /// One SNP Guest Request NAE event (exit code 0x8000_0011): copy
    /// `request` into the shared request page, SW_EXITINFO1 = its GPA,
    /// SW_EXITINFO2 = the shared response page's GPA, VMGEXIT. If
    /// SW_EXITINFO2 is then 0, copy the shared response page once into
    /// `response` (private memory) and return `Ok(())`; otherwise return
    /// `Err(TransportError::ExitInfo2(value))`. No retries and no
    /// interpretation here: the channel does both.
    fn guest_request(
        &mut self,
        request: &[u8; PAGE_SIZE],
        response: &mut [u8; PAGE_SIZE],
    ) -> Result<(), TransportError>;

    /// One SNP Extended Guest Request NAE event (exit code 0x8000_0012): as
    /// [`Self::guest_request`], plus RAX = the GPA of a shared certificate
    /// buffer of `certs.len() / PAGE_SIZE` pages and RBX = that count. On
    /// success the shared buffer is copied once into `certs` (private
    /// memory). SW_EXITINFO2 = INVALID_LEN with RBX marked valid is
    /// [`TransportError::CertsTooSmall`] with RBX. A transport that cannot
    /// make the event answers `Protocol` without sending anything (the
    /// default); the channel then sends the message as a plain request.
    fn extended_guest_request(
        &mut self,
        request: &[u8; PAGE_SIZE],
        response: &mut [u8; PAGE_SIZE],
        certs: &mut [u8],
    ) -> Result<(), TransportError> {
        let _ = (request, response, certs);
        Err(TransportError::Protocol)
    }

    /// Called between two attempts after the hypervisor said BUSY; `attempt`
    /// counts from 1. The platform waits here (Linux waits 2 s).
    fn busy_backoff(&mut self, attempt: u32) {
        let _ = attempt;
    }
}

/// Which key signs a report (MSG_REPORT_REQ KEY_SEL) or is the root of a
/// derived key (MSG_KEY_REQ KEY_SEL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySelect {
    /// The VLEK if one is installed, else the VCEK.
    Default = 0,
    /// The VCEK.
    Vcek = 1,
    /// The VLEK (the firmware answers INVALID_KEY if none is installed).
    Vlek = 2,
}

/// MSG_KEY_REQ ROOT_KEY_SELECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootKey {
    /// Derive from the VCEK (or VLEK, see [`KeySelect`]).
    Vcek = 0,
    /// Derive from the VM root key (guests with a migration agent).
    Vmrk = 1,
}

/// A MSG_KEY_REQ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DerivedKeyRequest {
    /// ROOT_KEY_SELECT.
    pub root_key: RootKey,
    /// KEY_SEL.
    pub key_select: KeySelect,
    /// GUEST_FIELD_SELECT ([`field_select`] bits).
    pub guest_field_select: u64,
    /// The VMPL mixed into the key; at least the requester's.
    pub vmpl: u32,
    /// The guest SVN mixed in (at most the launch SVN).
    pub guest_svn: u32,
    /// The TCB version mixed in (at most the committed TCB).
    pub tcb_version: u64,
}

impl DerivedKeyRequest {
    /// The payload bytes.
    pub fn encode(&self) -> [u8; key_req::LEN] {
        let mut p = [0u8; key_req::LEN];
        let select = (self.root_key as u32) | ((self.key_select as u32) << 1);
        put_u32(&mut p, key_req::SELECT, select);
        put_u64(&mut p, key_req::GUEST_FIELD_SELECT, self.guest_field_select);
        put_u32(&mut p, key_req::VMPL, self.vmpl);
        put_u32(&mut p, key_req::GUEST_SVN, self.guest_svn);
        put_u64(&mut p, key_req::TCB_VERSION, self.tcb_version);
        p
    }
}

/// Why a response was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFault {
    /// HDR_VERSION is not 1.
    HeaderVersion(u8),
    /// HDR_SZ is not 0x60.
    HeaderSize(u16),
    /// ALGO is not AES-256-GCM.
    Algorithm(u8),
    /// MSG_TYPE is not the response to the request's type.
    MessageType(u8),
    /// MSG_VERSION differs from the request's.
    MessageVersion(u8),
    /// MSG_VMPCK names another key.
    Vmpck(u8),
    /// A reserved byte inside the authenticated header is not zero.
    Reserved,
    /// MSG_SEQNO is not the request's plus one.
    SequenceNumber(u64),
    /// MSG_SZ is too small for a response or larger than a page holds.
    MessageSize(u16),
    /// The AEAD tag does not verify.
    Authentication,
    /// The decrypted payload is not the structure its type promises.
    Payload,
}

/// Why a request did not produce its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestRequestError {
    /// The key given to the channel is absent (all zeros) or its id is not
    /// 0..=3; nothing was sent.
    InvalidKey,
    /// An earlier failure destroyed the key; nothing was sent.
    Disabled,
    /// The request does not fit a page; nothing was sent.
    InvalidRequest,
    /// The transport failed (key destroyed).
    Transport(TransportError),
    /// The hypervisor answered BUSY this many times (key destroyed).
    Busy {
        /// Attempts made.
        attempts: u32,
    },
    /// The response was refused (key destroyed).
    BadResponse(ResponseFault),
    /// The firmware answered, authenticated, with this STATUS. The exchange
    /// itself succeeded: the channel stays usable.
    Firmware(u32),
    /// The 64-bit sequence number space is used up (key destroyed).
    SequenceExhausted,
}

impl fmt::Display for GuestRequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidKey => f.write_str("no usable VMPCK"),
            Self::Disabled => f.write_str("the guest-request channel is disabled (VMPCK wiped)"),
            Self::InvalidRequest => f.write_str("guest request too large"),
            Self::Transport(TransportError::ExitInfo2(v)) => {
                write!(f, "guest request failed, SW_EXITINFO2 {v:#x}; VMPCK wiped")
            }
            Self::Transport(TransportError::Protocol) => {
                f.write_str("guest request exit failed; VMPCK wiped")
            }
            Self::Transport(TransportError::CertsTooSmall(n)) => {
                write!(
                    f,
                    "certificate buffer too small ({n} pages needed); VMPCK wiped"
                )
            }
            Self::Busy { attempts } => {
                write!(
                    f,
                    "hypervisor still busy after {attempts} attempts; VMPCK wiped"
                )
            }
            Self::BadResponse(fault) => write!(f, "bad response ({fault:?}); VMPCK wiped"),
            Self::Firmware(s) => write!(f, "firmware status {s:#x}"),
            Self::SequenceExhausted => f.write_str("message sequence numbers exhausted"),
        }
    }
}

/// What became of the certificate part of an extended request (the report
/// part succeeded or failed on its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertsAnswer {
    /// The hypervisor filled the buffer (possibly with an empty table).
    Written,
    /// The buffer was too small: the hypervisor asked for this many pages.
    /// The same message then went out as a plain request.
    TooSmall(u64),
    /// The hypervisor refused the extended event; the same message then went
    /// out as a plain request.
    NotServed,
}

/// The channel: owns one VMPCK and its sequence number.
pub struct GuestRequestChannel<T: GuestRequestTransport> {
    transport: T,
    vmpck: Vmpck,
    vmpck_id: u8,
    /// The last sequence number used with this key (the last response's);
    /// the firmware starts counting at zero at launch.
    last_seqno: u64,
    disabled: bool,
    /// Private staging for the request page (ciphertext once sealed).
    request: Box<[u8; PAGE_SIZE]>,
    /// Private copy of the response page.
    response: Box<[u8; PAGE_SIZE]>,
}

impl<T: GuestRequestTransport> fmt::Debug for GuestRequestChannel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestRequestChannel")
            .field("vmpck_id", &self.vmpck_id)
            .field("last_seqno", &self.last_seqno)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

impl<T: GuestRequestTransport> GuestRequestChannel<T> {
    /// A channel under VMPCK0 (the SVSM's key), sequence count from launch.
    pub fn new(transport: T, vmpck0: Vmpck) -> Result<Self, GuestRequestError> {
        Self::with_vmpck(transport, 0, vmpck0)
    }

    /// A channel under VMPCK `vmpck_id`.
    pub fn with_vmpck(transport: T, vmpck_id: u8, vmpck: Vmpck) -> Result<Self, GuestRequestError> {
        if vmpck_id > 3 || vmpck.is_wiped() {
            return Err(GuestRequestError::InvalidKey);
        }
        Ok(Self {
            transport,
            vmpck,
            vmpck_id,
            last_seqno: 0,
            disabled: false,
            request: Box::new([0; PAGE_SIZE]),
            response: Box::new([0; PAGE_SIZE]),
        })
    }

    /// Continues a count someone else started with this key: `last_seqno` is
    /// the last sequence number used (the last response's). The count only
    /// ever moves forward: going back would reuse an IV.
    pub fn starting_after(mut self, last_seqno: u64) -> Self {
        self.last_seqno = self.last_seqno.max(last_seqno);
        self
    }

    /// The last sequence number used (0 before the first exchange).
    pub fn last_seqno(&self) -> u64 {
        self.last_seqno
    }

    /// True once a failure has destroyed the key.
    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The transport, mutably.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// MSG_REPORT_REQ: an attestation report carrying `report_data` for
    /// `vmpl` (at least the key's VMPL), signed by the firmware's default key.
    pub fn report(
        &mut self,
        report_data: &[u8; 64],
        vmpl: u32,
    ) -> Result<[u8; REPORT_LEN], GuestRequestError> {
        self.report_with_key(report_data, vmpl, KeySelect::Default)
    }

    /// MSG_REPORT_REQ with an explicit signing key.
    pub fn report_with_key(
        &mut self,
        report_data: &[u8; 64],
        vmpl: u32,
        key: KeySelect,
    ) -> Result<[u8; REPORT_LEN], GuestRequestError> {
        self.report_inner(report_data, vmpl, key, None)
            .map(|(report, _)| report)
    }

    /// MSG_REPORT_REQ through the SNP Extended Guest Request: the report
    /// (default key) and the hypervisor's certificate table in `certs`
    /// (private memory; whole pages, `certs.len() / PAGE_SIZE` of them
    /// offered). The certificate part never costs the key: if the
    /// hypervisor refuses the buffer or the event, the very same ciphertext
    /// (same sequence number) goes out again as a plain guest request, as
    /// Linux does, so no nonce is reused and the count stays in step.
    pub fn report_with_certificates(
        &mut self,
        report_data: &[u8; 64],
        vmpl: u32,
        certs: &mut [u8],
    ) -> Result<([u8; REPORT_LEN], CertsAnswer), GuestRequestError> {
        if certs.is_empty() || !certs.len().is_multiple_of(PAGE_SIZE) {
            return Err(GuestRequestError::InvalidRequest);
        }
        self.report_inner(report_data, vmpl, KeySelect::Default, Some(certs))
    }

    fn report_inner(
        &mut self,
        report_data: &[u8; 64],
        vmpl: u32,
        key: KeySelect,
        certs: Option<&mut [u8]>,
    ) -> Result<([u8; REPORT_LEN], CertsAnswer), GuestRequestError> {
        let mut req = [0u8; report_req::LEN];
        req[report_req::REPORT_DATA..report_req::REPORT_DATA + 64].copy_from_slice(report_data);
        put_u32(&mut req, report_req::VMPL, vmpl);
        put_u32(&mut req, report_req::KEY_SEL, key as u32);
        let (len, answer) = self.exchange(msg_type::REPORT_REQ, &req, certs)?;
        let payload = &self.response[header::LEN..header::LEN + len];
        let status = le_u32(payload, report_rsp::STATUS);
        let result = if status != status::SUCCESS {
            Err(GuestRequestError::Firmware(status))
        } else if len < report_rsp::LEN
            || le_u32(payload, report_rsp::REPORT_SIZE) as usize != REPORT_LEN
        {
            Err(GuestRequestError::BadResponse(ResponseFault::Payload))
        } else {
            let mut report = [0u8; REPORT_LEN];
            report.copy_from_slice(&payload[report_rsp::REPORT..report_rsp::REPORT + REPORT_LEN]);
            Ok((report, answer))
        };
        self.finish(result)
    }

    /// MSG_KEY_REQ: a key derived by the firmware.
    pub fn derived_key(
        &mut self,
        request: &DerivedKeyRequest,
    ) -> Result<Zeroizing<[u8; DERIVED_KEY_LEN]>, GuestRequestError> {
        let (len, _) = self.exchange(msg_type::KEY_REQ, &request.encode(), None)?;
        let payload = &self.response[header::LEN..header::LEN + len];
        let status = le_u32(payload, key_rsp::STATUS);
        let result = if status != status::SUCCESS {
            Err(GuestRequestError::Firmware(status))
        } else if len < key_rsp::LEN {
            Err(GuestRequestError::BadResponse(ResponseFault::Payload))
        } else {
            let mut key = Zeroizing::new([0u8; DERIVED_KEY_LEN]);
            key.copy_from_slice(
                &payload[key_rsp::DERIVED_KEY..key_rsp::DERIVED_KEY + DERIVED_KEY_LEN],
            );
            Ok(key)
        };
        self.finish(result)
    }

    /// Clears the plaintext response; a malformed payload disables the
    /// channel like any other bad response.
    fn finish<R>(&mut self, result: Result<R, GuestRequestError>) -> Result<R, GuestRequestError> {
        self.response.zeroize();
        match result {
            Err(e @ GuestRequestError::BadResponse(_)) => Err(self.fail(e)),
            other => other,
        }
    }

    /// Seals `payload` as a `msg_type` message, sends it (as an extended
    /// request if `certs` is given), validates and decrypts the response
    /// into `self.response`, and returns its MSG_SZ.
    fn exchange(
        &mut self,
        msg_type: u8,
        payload: &[u8],
        mut certs: Option<&mut [u8]>,
    ) -> Result<(usize, CertsAnswer), GuestRequestError> {
        if self.disabled {
            return Err(GuestRequestError::Disabled);
        }
        let (Some(seqno), Some(rsp_seqno)) = (
            self.last_seqno.checked_add(1),
            self.last_seqno.checked_add(2),
        ) else {
            return Err(self.fail(GuestRequestError::SequenceExhausted));
        };
        let len = payload.len();
        if len > MAX_PAYLOAD {
            // Only this module's fixed-size structures come here.
            return Err(GuestRequestError::InvalidRequest);
        }
        if self.seal(seqno, msg_type, payload).is_err() {
            return Err(self.fail(GuestRequestError::InvalidKey));
        }

        // From here on the sequence number is spent (see the module docs).
        let mut attempts = 0u32;
        let mut answer = CertsAnswer::Written;
        loop {
            attempts += 1;
            self.response.zeroize();
            let sent = match certs.as_deref_mut() {
                Some(buf) => {
                    self.transport
                        .extended_guest_request(&self.request, &mut self.response, buf)
                }
                None => self
                    .transport
                    .guest_request(&self.request, &mut self.response),
            };
            match sent {
                Ok(()) => break,
                // The certificate part failed: the identical bytes go out
                // once more as a plain request (a resend, like BUSY's, so
                // nothing new is revealed and the nonce is not reused).
                Err(TransportError::CertsTooSmall(pages)) if certs.is_some() => {
                    certs = None;
                    answer = CertsAnswer::TooSmall(pages);
                }
                Err(TransportError::Protocol) if certs.is_some() => {
                    certs = None;
                    answer = CertsAnswer::NotServed;
                }
                // Throttled: the firmware never saw the message. Sending the
                // identical bytes again reveals nothing new and keeps the
                // count in step; a different message must never take this
                // sequence number.
                Err(TransportError::ExitInfo2(VMM_ERR_BUSY)) if attempts <= MAX_BUSY_RETRIES => {
                    self.transport.busy_backoff(attempts);
                }
                Err(TransportError::ExitInfo2(VMM_ERR_BUSY)) => {
                    return Err(self.fail(GuestRequestError::Busy { attempts }));
                }
                // Anything else, INVALID_LEN and firmware errors included
                // (BUSY counts only as exactly 2 << 32, no firmware status, as
                // Linux reads it): the ciphertext is out and whether the
                // firmware counted it is unknown; the key must go.
                Err(e) => return Err(self.fail(GuestRequestError::Transport(e))),
            }
        }
        match self.open(rsp_seqno, msg_type + 1) {
            Ok(n) => {
                self.last_seqno = rsp_seqno;
                Ok((n, answer))
            }
            Err(fault) => Err(self.fail(GuestRequestError::BadResponse(fault))),
        }
    }

    /// Builds and encrypts the request in `self.request`.
    fn seal(&mut self, seqno: u64, msg_type: u8, payload: &[u8]) -> Result<(), aes_gcm::Error> {
        let r = &mut *self.request;
        r.zeroize();
        put_u64(r, header::MSG_SEQNO, seqno);
        r[header::ALGO] = ALGO_AES_256_GCM;
        r[header::HDR_VERSION] = HDR_VERSION;
        put_u16(r, header::HDR_SZ, header::LEN as u16);
        r[header::MSG_TYPE] = msg_type;
        r[header::MSG_VERSION] = MSG_VERSION;
        put_u16(r, header::MSG_SZ, payload.len() as u16);
        r[header::MSG_VMPCK] = self.vmpck_id;
        let (hdr, body) = r.split_at_mut(header::LEN);
        let body = &mut body[..payload.len()];
        body.copy_from_slice(payload);
        let cipher = Aes256Gcm::new_from_slice(self.vmpck.bytes()).map_err(|_| aes_gcm::Error)?;
        let tag = cipher.encrypt_inout_detached(&iv(seqno), &hdr[header::AAD], body.into())?;
        hdr[header::AUTHTAG..header::AUTHTAG + AUTHTAG_LEN].copy_from_slice(&tag);
        Ok(())
    }

    /// Validates the private copy of the response header, then decrypts the
    /// payload in place.
    fn open(&mut self, rsp_seqno: u64, rsp_type: u8) -> Result<usize, ResponseFault> {
        let expected = Expected {
            msg_type: rsp_type,
            msg_version: MSG_VERSION,
            vmpck_id: self.vmpck_id,
            seqno: rsp_seqno,
        };
        let rsp = &mut *self.response;
        let len = check_response_header(&rsp[..header::LEN], &expected)?;
        let cipher = Aes256Gcm::new_from_slice(self.vmpck.bytes())
            .map_err(|_| ResponseFault::Authentication)?;
        let (hdr, body) = rsp.split_at_mut(header::LEN);
        let mut tag = [0u8; AUTHTAG_LEN];
        tag.copy_from_slice(&hdr[header::AUTHTAG..header::AUTHTAG + AUTHTAG_LEN]);
        cipher
            .decrypt_inout_detached(
                &iv(rsp_seqno),
                &hdr[header::AAD],
                (&mut body[..len]).into(),
                &Tag::from(tag),
            )
            .map_err(|_| ResponseFault::Authentication)?;
        Ok(len)
    }

    /// Destroys the key and refuses every later request.
    fn fail(&mut self, error: GuestRequestError) -> GuestRequestError {
        self.vmpck.wipe();
        self.disabled = true;
        self.request.zeroize();
        self.response.zeroize();
        error
    }

    /// True if the channel's copy of the key is all zeros.
    #[cfg(test)]
    pub(crate) fn key_is_wiped(&self) -> bool {
        self.vmpck.is_wiped()
    }
}

/// What a response header must say.
struct Expected {
    msg_type: u8,
    msg_version: u8,
    vmpck_id: u8,
    seqno: u64,
}

/// Checks every header field that means something (all of the AAD, and the
/// sequence number) and returns MSG_SZ. Not checked: AUTHTAG bytes 16..32 and
/// the reserved bytes 0x28..0x30, which are outside the AEAD and never read.
fn check_response_header(h: &[u8], e: &Expected) -> Result<usize, ResponseFault> {
    if h[header::HDR_VERSION] != HDR_VERSION {
        return Err(ResponseFault::HeaderVersion(h[header::HDR_VERSION]));
    }
    let hdr_sz = le_u16(h, header::HDR_SZ);
    if usize::from(hdr_sz) != header::LEN {
        return Err(ResponseFault::HeaderSize(hdr_sz));
    }
    if h[header::ALGO] != ALGO_AES_256_GCM {
        return Err(ResponseFault::Algorithm(h[header::ALGO]));
    }
    if h[header::MSG_TYPE] != e.msg_type {
        return Err(ResponseFault::MessageType(h[header::MSG_TYPE]));
    }
    if h[header::MSG_VERSION] != e.msg_version {
        return Err(ResponseFault::MessageVersion(h[header::MSG_VERSION]));
    }
    if h[header::MSG_VMPCK] != e.vmpck_id {
        return Err(ResponseFault::Vmpck(h[header::MSG_VMPCK]));
    }
    if header::RESERVED_IN_AAD
        .iter()
        .any(|r: &Range<usize>| h[r.clone()].iter().any(|b| *b != 0))
    {
        return Err(ResponseFault::Reserved);
    }
    let seqno = le_u64(h, header::MSG_SEQNO);
    if seqno != e.seqno {
        return Err(ResponseFault::SequenceNumber(seqno));
    }
    let msg_sz = le_u16(h, header::MSG_SZ);
    let len = usize::from(msg_sz);
    if !(MIN_RESPONSE_LEN..=MAX_PAYLOAD).contains(&len) {
        return Err(ResponseFault::MessageSize(msg_sz));
    }
    Ok(len)
}

/// The IV: the sequence number, little-endian, zero-padded to 12 bytes.
fn iv(seqno: u64) -> aes_gcm::Nonce<aes_gcm::aead::consts::U12> {
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(&seqno.to_le_bytes());
    iv.into()
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
