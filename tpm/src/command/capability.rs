//! Capability commands (Part 3 §30): GetCapability. The vendor values are
//! Rivet's own (see README of the crate): manufacturer "RVET", vendor string
//! "Rivet vTPM", firmware version 0.1.

use alloc::vec::Vec;

use crate::crypto::HashAlg;
use crate::dispatch::{Call, Ctx, TABLE};
use crate::pcr::{self as model, Selection, write_selection};
use crate::rc::{self, CmdResult, Locate, Rc};
use crate::spec::{self, alg, cap, cc, ht, nv, pt, pt_pcr, rh};

/// "RVET": not a registered TCG vendor id; chosen for this implementation.
pub const MANUFACTURER: u32 = u32::from_be_bytes(*b"RVET");
const VENDOR_STRINGS: [u32; 4] = [
    u32::from_be_bytes(*b"Rive"),
    u32::from_be_bytes(*b"t vT"),
    u32::from_be_bytes(*b"PM\0\0"),
    0,
];
/// Spec revision 1.59 (TPM_PT_REVISION is revision * 100).
const SPEC_REVISION: u32 = 159;
const SPEC_YEAR: u32 = 2019;
const SPEC_DAY: u32 = 312;
const FIRMWARE_1: u32 = 0x0000_0001;
const MAX_PROPERTIES: usize = (spec::MAX_CAP_BUFFER - 8) / 8;
const MAX_HANDLES: usize = (spec::MAX_CAP_BUFFER - 8) / 4;
const MAX_ALGS: usize = (spec::MAX_CAP_BUFFER - 8) / 6;

/// The algorithm set and TPMA_ALGORITHM bits (asymmetric 0, symmetric 1,
/// hash 2, object 3, signing 8, encrypting 9, method 10), sorted by id. The
/// hash algorithms are used by this part; the others are the set the
/// algorithm layer and the key commands implement (TestParms accepts them).
pub const ALGORITHMS: &[(u16, u32)] = &[
    (alg::RSA, 0x009),
    (alg::SHA1, 0x004),
    (alg::HMAC, 0x104),
    (alg::AES, 0x002),
    (alg::MGF1, 0x404),
    (alg::KEYEDHASH, 0x30C),
    (alg::XOR, 0x006),
    (alg::SHA256, 0x004),
    (alg::SHA384, 0x004),
    (alg::RSASSA, 0x101),
    (alg::RSAES, 0x201),
    (alg::RSAPSS, 0x101),
    (alg::OAEP, 0x201),
    (alg::ECDSA, 0x501),
    (alg::ECDH, 0x401),
    (alg::KDF1_SP800_56A, 0x404),
    (alg::KDF1_SP800_108, 0x404),
    (alg::ECC, 0x009),
    (alg::SYMCIPHER, 0x008),
    (alg::CTR, 0x202),
    (alg::OFB, 0x202),
    (alg::CBC, 0x202),
    (alg::CFB, 0x202),
    (alg::ECB, 0x202),
];

pub fn get_capability(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let capability = call.params.u32().p(1)?;
    let property = call.params.u32().p(2)?;
    let count = usize::try_from(call.params.u32().p(3)?).unwrap_or(usize::MAX);
    call.done()?;
    let out = &mut call.out;
    let more;
    let mut body = crate::marshal::Writer::new();
    match capability {
        cap::ALGS => {
            let algs: Vec<(u16, u32)> = ALGORITHMS
                .iter()
                .copied()
                .filter(|(id, _)| u32::from(*id) >= property)
                .collect();
            let n = count.min(MAX_ALGS).min(algs.len());
            more = n < algs.len();
            body.u32(u32::try_from(n).unwrap_or(0));
            for (id, attrs) in algs.iter().take(n) {
                body.u16(*id);
                body.u32(*attrs);
            }
        }
        cap::HANDLES => {
            let handles = handles(cx, property)?;
            let n = count.min(MAX_HANDLES).min(handles.len());
            more = n < handles.len();
            body.u32(u32::try_from(n).unwrap_or(0));
            handles.iter().take(n).for_each(|h| body.u32(*h));
        }
        cap::COMMANDS => {
            let cmds: Vec<u32> = TABLE
                .iter()
                .filter(|e| e.cc >= property)
                .map(command_attributes)
                .collect();
            let n = count.min(MAX_HANDLES).min(cmds.len());
            more = n < cmds.len();
            body.u32(u32::try_from(n).unwrap_or(0));
            cmds.iter().take(n).for_each(|a| body.u32(*a));
        }
        cap::PP_COMMANDS | cap::AUDIT_COMMANDS => {
            more = false;
            body.u32(0);
        }
        cap::PCRS => {
            if property != 0 {
                return Err(Rc::param(rc::VALUE, 2));
            }
            // A count of 0 returns an empty list and says there is more.
            more = count == 0;
            let alloc = cx.core.vol.pcrs.allocated;
            let sel: Vec<Selection> = HashAlg::ALL
                .iter()
                .map(|a| Selection {
                    alg: *a,
                    size: 3,
                    bits: alloc[a.index()],
                })
                .collect();
            write_selection(&mut body, if count == 0 { &[] } else { &sel });
        }
        cap::TPM_PROPERTIES => {
            // One group per call (fixed or variable), as the reference: a
            // caller walks to the next group with a new request.
            let start = property.max(pt::FIXED);
            let group_end = (start / 0x100).saturating_add(1).saturating_mul(0x100);
            let props: Vec<(u32, u32)> = properties(cx)
                .into_iter()
                .filter(|(t, _)| *t >= start && *t < group_end)
                .collect();
            let n = count.min(MAX_PROPERTIES).min(props.len());
            more = n < props.len();
            body.u32(u32::try_from(n).unwrap_or(0));
            for (t, v) in props.iter().take(n) {
                body.u32(*t);
                body.u32(*v);
            }
        }
        cap::PCR_PROPERTIES => {
            let props: Vec<(u32, u32)> = pcr_properties()
                .into_iter()
                .filter(|(t, _)| *t >= property)
                .collect();
            let n = count.min(MAX_PROPERTIES).min(props.len());
            more = n < props.len();
            body.u32(u32::try_from(n).unwrap_or(0));
            for (t, bits) in props.iter().take(n) {
                body.u32(*t);
                body.u8(3);
                body.bytes(&bits.to_le_bytes()[..3]);
            }
        }
        cap::ECC_CURVES => {
            let curves: Vec<u16> = crate::public::ECC_CURVES
                .iter()
                .copied()
                .filter(|c| u32::from(*c) >= property)
                .collect();
            let n = count.min(MAX_ALGS).min(curves.len());
            more = n < curves.len();
            body.u32(u32::try_from(n).unwrap_or(0));
            curves.iter().take(n).for_each(|c| body.u16(*c));
        }
        cap::AUTH_POLICIES => {
            if spec::handle_type(property) != ht::PERMANENT {
                return Err(Rc::param(rc::VALUE, 2));
            }
            // No hierarchy policy can be set yet (SetPrimaryPolicy comes later).
            more = false;
            body.u32(0);
        }
        _ => return Err(Rc::param(rc::VALUE, 1)),
    }
    out.u8(u8::from(more));
    out.u32(capability);
    out.bytes(&body.buf);
    Ok(())
}

fn handles(cx: &Ctx, from: u32) -> CmdResult<Vec<u32>> {
    let mut list: Vec<u32> = match spec::handle_type(from) {
        ht::PCR => (0..u32::try_from(spec::PCR_COUNT).unwrap_or(0)).collect(),
        ht::NV_INDEX => cx.core.ps.nv.iter().map(|n| n.handle).collect(),
        ht::TRANSIENT => cx.core.vol.objects.handles().collect(),
        ht::PERSISTENT => cx
            .core
            .ps
            .persistent_objects
            .iter()
            .map(|(h, _)| *h)
            .collect(),
        ht::PERMANENT => {
            alloc::vec![
                rh::OWNER,
                rh::NULL,
                rh::PW,
                rh::LOCKOUT,
                rh::ENDORSEMENT,
                rh::PLATFORM,
                rh::PLATFORM_NV
            ]
        }
        // TPM_HT_LOADED_SESSION and TPM_HT_SAVED_SESSION list both kinds, by session number.
        ht::HMAC_SESSION | ht::POLICY_SESSION => {
            let saved = spec::handle_type(from) == ht::POLICY_SESSION;
            let mut v = cx.core.vol.sessions.handles(saved);
            v.retain(|h| h & 0x00FF_FFFF >= from & 0x00FF_FFFF);
            return Ok(v);
        }
        _ => return Err(Rc::param(rc::HANDLE, 2)),
    };
    let kind = spec::handle_type(from);
    list.retain(|h| *h >= from && spec::handle_type(*h) == kind);
    list.sort_unstable();
    Ok(list)
}

/// TPMA_CC (Part 2, 9.3).
fn command_attributes(e: &crate::dispatch::Entry) -> u32 {
    let flushed = matches!(
        e.cc,
        cc::SEQUENCE_COMPLETE | cc::EVENT_SEQUENCE_COMPLETE | cc::FLUSH_CONTEXT
    );
    let extensive = matches!(e.cc, cc::CLEAR | cc::HIERARCHY_CONTROL);
    (e.cc & 0xFFFF)
        | (u32::from(e.nv) << 22)
        | (u32::from(extensive) << 23)
        | (u32::from(flushed) << 24)
        | (u32::try_from(e.handles.len()).unwrap_or(0) << 25)
        | (u32::from(e.response_handle) << 28)
}

fn properties(cx: &Ctx) -> Vec<(u32, u32)> {
    let ps = &cx.core.ps;
    let v = &cx.core.vol;
    let commands = u32::try_from(TABLE.len()).unwrap_or(0);
    let loaded = u32::try_from(v.objects.count()).unwrap_or(0);
    let max_loaded = u32::try_from(spec::MAX_LOADED_OBJECTS).unwrap_or(0);
    let counters = u32::try_from(
        ps.nv
            .iter()
            .filter(|n| (n.attributes & nv::TPM_NT_MASK) >> nv::TPM_NT_SHIFT == nv::NT_COUNTER)
            .count(),
    )
    .unwrap_or(0);
    let indices = u32::try_from(ps.nv.len()).unwrap_or(0);
    let max_indices = u32::try_from(super::nv::MAX_NV_INDICES).unwrap_or(0);
    let sessions_loaded = u32::try_from(v.sessions.count()).unwrap_or(0);
    let sessions_active = u32::try_from(v.sessions.active()).unwrap_or(0);
    let max_sessions = u32::try_from(crate::session::MAX_LOADED_SESSIONS).unwrap_or(0);
    let max_active = u32::try_from(crate::session::MAX_ACTIVE_SESSIONS).unwrap_or(0);
    let permanent = u32::from(!ps.owner_auth.is_empty())
        | (u32::from(!ps.endorsement_auth.is_empty()) << 1)
        | (u32::from(!ps.lockout_auth.is_empty()) << 2)
        | (u32::from(ps.disable_clear) << 8)
        | (u32::from(ps.failed_tries >= ps.max_tries) << 9)
        | (1 << 10);
    let startup_clear = u32::from(v.ph_enable)
        | (u32::from(v.sh_enable) << 1)
        | (u32::from(v.eh_enable) << 2)
        | (u32::from(v.ph_enable_nv) << 3)
        | (u32::from(v.orderly_startup) << 31);
    alloc::vec![
        (pt::FAMILY_INDICATOR, u32::from_be_bytes(*b"2.0\0")),
        (pt::LEVEL, 0),
        (pt::REVISION, SPEC_REVISION),
        (pt::DAY_OF_YEAR, SPEC_DAY),
        (pt::YEAR, SPEC_YEAR),
        (pt::MANUFACTURER, MANUFACTURER),
        (pt::VENDOR_STRING_1, VENDOR_STRINGS[0]),
        (pt::VENDOR_STRING_2, VENDOR_STRINGS[1]),
        (pt::VENDOR_STRING_3, VENDOR_STRINGS[2]),
        (pt::VENDOR_STRING_4, VENDOR_STRINGS[3]),
        (pt::VENDOR_TPM_TYPE, 1),
        (pt::FIRMWARE_VERSION_1, FIRMWARE_1),
        (pt::FIRMWARE_VERSION_2, 0),
        (pt::INPUT_BUFFER, 1024),
        (pt::HR_TRANSIENT_MIN, max_loaded),
        (pt::HR_PERSISTENT_MIN, 7),
        (pt::HR_LOADED_MIN, max_sessions),
        (
            pt::ACTIVE_SESSIONS_MAX,
            u32::try_from(crate::session::MAX_ACTIVE_SESSIONS).unwrap_or(0)
        ),
        (pt::PCR_COUNT, 24),
        (pt::PCR_SELECT_MIN, 3),
        (pt::CONTEXT_GAP_MAX, crate::session::CONTEXT_GAP_MAX as u32),
        (pt::NV_COUNTERS_MAX, 0),
        (pt::NV_INDEX_MAX, crate::spec::MAX_NV_INDEX_SIZE as u32),
        (pt::MEMORY, 0x6),
        (
            pt::CLOCK_UPDATE,
            u32::try_from(crate::CLOCK_UPDATE_MS).unwrap_or(u32::MAX)
        ),
        (pt::CONTEXT_HASH, u32::from(super::CONTEXT_HASH.id())),
        (pt::CONTEXT_SYM, 0x0006),
        (pt::CONTEXT_SYM_SIZE, 256),
        (pt::ORDERLY_COUNT, 255),
        (pt::MAX_COMMAND_SIZE, 4096),
        (pt::MAX_RESPONSE_SIZE, 4096),
        (pt::MAX_DIGEST, 48),
        // TPMS_CONTEXT: sequence, savedHandle, hierarchy, TPM2B_CONTEXT_DATA (command/context.rs).
        (pt::MAX_OBJECT_CONTEXT, super::context::MAX_CONTEXT_SIZE),
        (pt::MAX_SESSION_CONTEXT, super::context::MAX_CONTEXT_SIZE),
        (pt::PS_FAMILY_INDICATOR, 1),
        (pt::PS_LEVEL, 0),
        (pt::PS_REVISION, 0x105),
        (pt::PS_DAY_OF_YEAR, 0),
        (pt::PS_YEAR, 0),
        (pt::SPLIT_MAX, 128),
        (pt::TOTAL_COMMANDS, commands),
        (pt::LIBRARY_COMMANDS, commands),
        (pt::VENDOR_COMMANDS, 0),
        (pt::NV_BUFFER_MAX, 1024),
        (pt::MODES, 0),
        (pt::MAX_CAP_BUFFER, 1024),
        (pt::PERMANENT, permanent),
        (pt::STARTUP_CLEAR, startup_clear),
        (pt::HR_NV_INDEX, indices),
        // HR_LOADED*/HR_ACTIVE* count authorization sessions; HR_TRANSIENT_AVAIL objects.
        (pt::HR_LOADED, sessions_loaded),
        (
            pt::HR_LOADED_AVAIL,
            max_sessions.saturating_sub(sessions_loaded)
        ),
        (pt::HR_ACTIVE, sessions_active),
        (
            pt::HR_ACTIVE_AVAIL,
            max_active.saturating_sub(sessions_active)
        ),
        (pt::HR_TRANSIENT_AVAIL, max_loaded.saturating_sub(loaded)),
        (
            pt::HR_PERSISTENT,
            u32::try_from(ps.persistent_objects.len()).unwrap_or(0)
        ),
        (
            pt::HR_PERSISTENT_AVAIL,
            7u32.saturating_sub(u32::try_from(ps.persistent_objects.len()).unwrap_or(0))
        ),
        (pt::NV_COUNTERS, counters),
        (pt::NV_COUNTERS_AVAIL, max_indices.saturating_sub(indices)),
        (pt::ALGORITHM_SET, 0),
        (pt::LOADED_CURVES, 0),
        (pt::LOCKOUT_COUNTER, ps.failed_tries),
        (pt::MAX_AUTH_FAIL, ps.max_tries),
        (pt::LOCKOUT_INTERVAL, ps.recovery_time),
        (pt::LOCKOUT_RECOVERY, ps.lockout_recovery),
        (pt::NV_WRITE_RECOVERY, 0),
        (pt::AUDIT_COUNTER_0, 0),
        (pt::AUDIT_COUNTER_1, 0),
    ]
}

/// TPML_TAGGED_PCR_PROPERTY from the PC Client attribute table.
fn pcr_properties() -> Vec<(u32, u32)> {
    let set = |f: &dyn Fn(usize) -> bool| {
        (0..spec::PCR_COUNT)
            .filter(|&p| f(p))
            .fold(0u32, |m, p| m | (1 << p))
    };
    let mut out = alloc::vec![(pt_pcr::SAVE, set(&model::state_saved))];
    for l in 0u8..=4 {
        let tag = pt_pcr::EXTEND_L0 + 2 * u32::from(l);
        out.push((
            tag,
            set(&|p| model::locality_allows(model::extend_localities(p), l)),
        ));
        out.push((
            tag + 1,
            set(&|p| model::locality_allows(model::reset_localities(p), l)),
        ));
    }
    debug_assert_eq!(out.last().map(|x| x.0), Some(pt_pcr::RESET_L4));
    out.push((pt_pcr::NO_INCREMENT, set(&model::no_increment)));
    out.push((pt_pcr::DRTM_RESET, set(&model::drtm)));
    // PC Client policy/auth groups: PCR 20-22 (their authValue and policy are
    // the Empty Buffer until PCR_SetAuthValue/PCR_SetAuthPolicy exist).
    out.push((pt_pcr::POLICY, 0x0070_0000));
    out.push((pt_pcr::AUTH, 0x0070_0000));
    out
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use crate::Tpm;
    use crate::testutil::{Cmd, TestPlatform, run, started};

    fn cap(tpm: &mut Tpm<TestPlatform>, c: u32, p: u32, n: u32) -> (u32, Vec<u8>) {
        run(tpm, 0, &Cmd::new(0x17A).u32(c).u32(p).u32(n))
    }
    fn be(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    #[test]
    fn properties() {
        let mut tpm = started();
        let (rc, b) = cap(&mut tpm, 6, 0x105, 1);
        assert_eq!(rc, 0);
        assert_eq!(b[0], 1);
        assert_eq!((be(&b, 1), be(&b, 5)), (6, 1));
        assert_eq!(
            (be(&b, 9), be(&b, 13)),
            (0x105, u32::from_be_bytes(*b"RVET"))
        );
        // Everything from PT_FIXED: fixed then variable, in order, no more data.
        let (_, b) = cap(&mut tpm, 6, 0x100, 1000);
        assert_eq!(b[0], 0);
        let n = be(&b, 5) as usize;
        let tags: Vec<u32> = (0..n).map(|i| be(&b, 9 + 8 * i)).collect();
        assert!(tags.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(tags.first(), Some(&0x100));
        assert_eq!(tags.last(), Some(&0x12E));
        let (_, b) = cap(&mut tpm, 6, 0x12E, 5);
        assert_eq!((b[0], be(&b, 5)), (0, 1));
        let (_, b) = cap(&mut tpm, 6, 0x200, 1000);
        assert_eq!((be(&b, 5), be(&b, 9)), (21, 0x200));
        let (_, b) = cap(&mut tpm, 6, 0x200, 2);
        assert_eq!((b[0], be(&b, 5)), (1, 2));
        let (_, b) = cap(&mut tpm, 6, 0, 1);
        assert_eq!(be(&b, 9), 0x100);
        let (_, b) = cap(&mut tpm, 6, 0x300, 10);
        assert_eq!(be(&b, 5), 0);
        assert_eq!(cap(&mut tpm, 0x99, 0, 1).0, 0x1C4);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x17A).u32(6).u32(0)).0, 0x3DA);
    }

    #[test]
    fn handles_commands_algs_pcrs() {
        let mut tpm = started();
        let (_, b) = cap(&mut tpm, 1, 0, 100);
        assert_eq!(be(&b, 5), 24);
        let (_, b) = cap(&mut tpm, 1, 0x4000_0000, 100);
        assert_eq!(be(&b, 5), 7);
        assert_eq!(be(&b, 9), 0x4000_0001);
        let (_, b) = cap(&mut tpm, 1, 0x0100_0000, 100);
        assert_eq!(be(&b, 5), 0);
        assert_eq!(cap(&mut tpm, 1, 0x0500_0000, 1).0, 0x2CB);
        let (_, b) = cap(&mut tpm, 2, 0x121, 3);
        assert_eq!(b[0], 1);
        assert_eq!(be(&b, 5), 3);
        // TPMA_CC of HierarchyControl: index 0x121, nv, extensive, one handle.
        assert_eq!(be(&b, 9), 0x121 | 1 << 22 | 1 << 23 | 1 << 25);
        let (_, b) = cap(&mut tpm, 2, 0x186, 1);
        assert_eq!(be(&b, 9), 0x186 | 1 << 28);
        let (_, b) = cap(&mut tpm, 0, 0, 100);
        assert_eq!(be(&b, 5), 24);
        assert_eq!(&b[9..15], &[0, 1, 0, 0, 0, 9]);
        let (_, b) = cap(&mut tpm, 0, 0x0B, 1);
        assert_eq!((b[0], &b[9..15]), (1, &[0, 0x0B, 0, 0, 0, 4][..]));
        let (_, b) = cap(&mut tpm, 5, 0, 1);
        assert_eq!(
            &b[5..],
            &[
                0, 0, 0, 3, 0, 4, 3, 0xFF, 0xFF, 0xFF, 0, 0x0B, 3, 0xFF, 0xFF, 0xFF, 0, 0x0C, 3, 0,
                0, 0
            ]
        );
        let (_, b) = cap(&mut tpm, 7, 0, 100);
        assert_eq!(be(&b, 5), 15);
        // TPM_PT_PCR_RESET_L4: PCR 17..=22; NO_INCREMENT: 16, 21, 22, 23.
        assert_eq!(
            &b[9 + 10 * 8..9 + 10 * 8 + 8],
            &[0, 0, 0, 0x0A, 3, 0, 0, 0x7E]
        );
        assert_eq!(&b[9 + 11 * 8..9 + 12 * 8], &[0, 0, 0, 0x11, 3, 0, 0, 0xE1]);
        assert_eq!(cap(&mut tpm, 5, 1, 1).0, 0x2C4);
        assert_eq!(cap(&mut tpm, 9, 0, 1).0, 0x2C4);
        assert_eq!(
            cap(&mut tpm, 9, 0x4000_0000, 1),
            (0, alloc::vec![0, 0, 0, 0, 9, 0, 0, 0, 0])
        );
        let (_, b) = cap(&mut tpm, 8, 0, 100);
        assert_eq!(&b[5..], &[0, 0, 0, 2, 0, 3, 0, 4]);
    }
}
