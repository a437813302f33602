//! Context management (Part 3 §28): ContextSave and ContextLoad for key
//! objects and sessions (FlushContext is in command/hash.rs).
//!
//! contextBlob = TPM2B(integrity) || AES-256-CFB(state). The keys come from
//! KDFa(contextHash, proof of the hierarchy, "CONTEXT"/"INTEGRITY", sequence,
//! savedHandle); the null hierarchy's proof (and so every session context,
//! kept under it) changes at each _TPM_Init. The integrity HMAC also covers
//! resetCount (restartCount too for stClear objects), so an object context
//! does not load after a TPM Reset, as Part 1 §30 requires.

use alloc::vec::Vec;

use zeroize::Zeroizing;

use crate::alg::kdfa;
use crate::alg::sym::{SymMode, aes_decrypt, aes_encrypt};
use crate::command::CONTEXT_HASH;
use crate::command::object::{insert, key_at};
use crate::command::symmetric::HmacState;
use crate::crypto::{HashAlg, Hasher, ct_eq};
use crate::dispatch::{Call, Ctx};
use crate::hierarchy::Hierarchy;
use crate::key::{self, KeyObject, oa};
use crate::marshal::{Reader, Writer};
use crate::object::{Kind, Object};
use crate::rc::{self, CmdResult, Locate, Rc};
use crate::spec::{self, ht, rh};

/// savedHandle of an ordinary and of an stClear object context.
const SAVED_TRANSIENT: u32 = 0x8000_0000;
const SAVED_ST_CLEAR: u32 = 0x8000_0002;
/// Largest TPM2B_CONTEXT_DATA accepted.
const MAX_CONTEXT_DATA: usize = 2048;
/// Largest TPMS_CONTEXT (TPM_PT_MAX_OBJECT_CONTEXT / TPM_PT_MAX_SESSION_CONTEXT).
pub const MAX_CONTEXT_SIZE: u32 = 8 + 4 + 4 + 2 + MAX_CONTEXT_DATA as u32;

struct ContextKeys {
    sym: Zeroizing<Vec<u8>>,
    iv: Vec<u8>,
    mac: Zeroizing<Vec<u8>>,
}

fn context_keys(cx: &mut Ctx, h: Hierarchy, sequence: u64, saved: u32) -> CmdResult<ContextKeys> {
    let proof = key::proof(cx, h)?;
    let seq = sequence.to_be_bytes();
    let handle = saved.to_be_bytes();
    let fail = |e| key::alg_rc(e, rc::FAILURE);
    let k = kdfa(
        CONTEXT_HASH,
        proof.as_ref(),
        b"CONTEXT",
        &seq,
        &handle,
        (32 + 16) * 8,
    )
    .map_err(fail)?;
    let mac = kdfa(
        CONTEXT_HASH,
        proof.as_ref(),
        b"INTEGRITY",
        &seq,
        &handle,
        48 * 8,
    )
    .map_err(fail)?;
    Ok(ContextKeys {
        sym: Zeroizing::new(k.get(..32).unwrap_or(&[]).to_vec()),
        iv: k.get(32..).unwrap_or(&[]).to_vec(),
        mac: Zeroizing::new(mac),
    })
}

/// The HMAC over what binds a context to this TPM's boot cycle.
fn integrity(cx: &Ctx, keys: &ContextKeys, saved: u32, hierarchy: u32, enc: &[u8]) -> Vec<u8> {
    let ps = &cx.core.ps;
    let restart = if saved == SAVED_ST_CLEAR {
        ps.restart_count
    } else {
        0
    };
    CONTEXT_HASH.hmac(
        &keys.mac,
        &[
            &ps.reset_count.to_be_bytes(),
            &restart.to_be_bytes(),
            &hierarchy.to_be_bytes(),
            enc,
        ],
    )
}

fn write_context(
    cx: &mut Ctx,
    call: &mut Call,
    sequence: u64,
    saved: u32,
    h: Hierarchy,
    state: &[u8],
) -> CmdResult<()> {
    let keys = context_keys(cx, h, sequence, saved)?;
    let enc = aes_encrypt(SymMode::Cfb, &keys.sym, &keys.iv, state)
        .map_err(|e| key::alg_rc(e, rc::FAILURE))?
        .data;
    let mac = integrity(cx, &keys, saved, h.handle(), &enc);
    let mut blob = Writer::new();
    blob.tpm2b(&mac);
    blob.bytes(&enc);
    call.out.u64(sequence);
    call.out.u32(saved);
    call.out.u32(h.handle());
    call.out.tpm2b(&blob.buf);
    Ok(())
}

/// What an object context holds: a key object, or a sequence object's state.
/// Tag 0: a key (its persistent form); 1, 2, 3: hash, event, HMAC sequence.
fn sequence_state(o: &Object) -> Option<Vec<u8>> {
    let mut w = Writer::new();
    match &o.kind {
        Kind::Key(_) => return None,
        Kind::HashSequence(h) => {
            w.u8(1);
            w.u16(h.alg().id());
            w.tpm2b(&h.save());
        }
        Kind::EventSequence(hs) => {
            w.u8(2);
            w.u8(u8::try_from(hs.len()).unwrap_or(0));
            for h in hs {
                w.u16(h.alg().id());
                w.tpm2b(&h.save());
            }
        }
        Kind::HmacSequence(m) => {
            let (h, inner, outer) = m.save();
            w.u8(3);
            w.u16(h.id());
            w.tpm2b(&inner);
            w.tpm2b(outer);
        }
    }
    w.tpm2b(&o.auth);
    w.u8(match o.ticket_safe {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    });
    Some(w.buf)
}

fn read_sequence(state: &[u8]) -> CmdResult<Object> {
    let bad = || Rc::param(rc::INTEGRITY, 1);
    let mut r = Reader::new(state);
    let hasher = |r: &mut Reader| -> CmdResult<Hasher> {
        let h = HashAlg::from_id(r.u16()?).ok_or_else(bad)?;
        Hasher::restore(h, r.tpm2b(512)?).ok_or_else(bad)
    };
    let kind = match r.u8()? {
        1 => Kind::HashSequence(hasher(&mut r)?),
        2 => {
            let n = r.u8()?;
            let mut hs = Vec::new();
            for _ in 0..n {
                hs.push(hasher(&mut r)?);
            }
            Kind::EventSequence(hs)
        }
        3 => {
            let h = HashAlg::from_id(r.u16()?).ok_or_else(bad)?;
            let inner = r.tpm2b(512)?;
            let outer = r.tpm2b(256)?;
            let m = HmacState::restore(h, inner, outer).ok_or_else(bad)?;
            Kind::HmacSequence(alloc::boxed::Box::new(m))
        }
        _ => return Err(bad()),
    };
    let auth = r.tpm2b(spec::MAX_DIGEST)?.to_vec();
    let ticket_safe = match r.u8()? {
        0 => None,
        1 => Some(false),
        2 => Some(true),
        _ => return Err(bad()),
    };
    r.finish()?;
    Ok(Object {
        auth,
        kind,
        ticket_safe,
    })
}

pub fn context_save(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    call.done()?;
    let handle = call.handle(0);
    match spec::handle_type(handle) {
        ht::TRANSIENT => {
            let (state, saved, h) = match cx.core.vol.objects.get(handle) {
                Some(o) if !matches!(o.kind, Kind::Key(_)) => {
                    // Sequence objects live in the null hierarchy.
                    let state = sequence_state(o).ok_or(Rc::handle(rc::TYPE, 1))?;
                    (state, SAVED_TRANSIENT, Hierarchy::Null)
                }
                _ => {
                    let k = key_at(cx, handle, 1).map_err(|_| Rc::handle(rc::TYPE, 1))?;
                    let saved = if k.public.has(oa::ST_CLEAR) {
                        SAVED_ST_CLEAR
                    } else {
                        SAVED_TRANSIENT
                    };
                    let mut state = alloc::vec![0u8];
                    state.extend_from_slice(&k.to_persistent());
                    (state, saved, k.hierarchy)
                }
            };
            let state = Zeroizing::new(state);
            let ks = &mut cx.core.vol.keys;
            let sequence = ks.context_sequence;
            ks.context_sequence = ks.context_sequence.wrapping_add(1);
            write_context(cx, call, sequence, saved, h, &state)
        }
        ht::HMAC_SESSION | ht::POLICY_SESSION => {
            let (sequence, state) = cx
                .core
                .vol
                .sessions
                .save(handle)
                .map_err(|e| Rc::handle(e.base, 1))?;
            let state = Zeroizing::new(state);
            write_context(cx, call, sequence, handle, Hierarchy::Null, &state)
        }
        _ => Err(Rc::handle(rc::VALUE, 1)),
    }
}

pub fn context_load(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let sequence = call.params.u64().p(1)?;
    let saved = call.params.u32().p(1)?;
    let hierarchy = crate::command::read_hierarchy_or_null(&mut call.params).p(1)?;
    let blob = call.params.tpm2b(MAX_CONTEXT_DATA).p(1)?.to_vec();
    call.done()?;
    let is_session = matches!(
        spec::handle_type(saved),
        ht::HMAC_SESSION | ht::POLICY_SESSION
    );
    if !is_session && saved != SAVED_TRANSIENT && saved != SAVED_ST_CLEAR {
        return Err(Rc::param(rc::HANDLE, 1));
    }
    if is_session && hierarchy != rh::NULL {
        return Err(Rc::param(rc::INTEGRITY, 1));
    }
    let h = Hierarchy::from_handle(hierarchy).ok_or(Rc::param(rc::VALUE, 1))?;
    if !h.enabled(cx.core) {
        return Err(Rc::param(rc::HIERARCHY, 1));
    }
    let mut r = Reader::new(&blob);
    // A blob too short for its integrity value is TPM_RC_SIZE (no parameter), as the reference.
    let mac = r.tpm2b(spec::MAX_DIGEST).map_err(|_| Rc::new(rc::SIZE))?;
    let enc = r.rest();
    let keys = context_keys(cx, h, sequence, saved)?;
    if !ct_eq(&integrity(cx, &keys, saved, hierarchy, enc), mac) {
        return Err(Rc::param(rc::INTEGRITY, 1));
    }
    let state = Zeroizing::new(
        aes_decrypt(SymMode::Cfb, &keys.sym, &keys.iv, enc)
            .map_err(|_| Rc::param(rc::INTEGRITY, 1))?
            .data,
    );
    if is_session {
        call.out_handle = Some(cx.core.vol.sessions.load(sequence, &state).p(1)?);
        return Ok(());
    }
    let (tag, body) = state.split_first().ok_or(Rc::param(rc::INTEGRITY, 1))?;
    if *tag != 0 {
        let o = read_sequence(&state)?;
        call.out_handle = Some(cx.core.vol.objects.insert(o)?);
        return Ok(());
    }
    let k: KeyObject = KeyObject::from_persistent(body).map_err(|_| Rc::param(rc::INTEGRITY, 1))?;
    if k.hierarchy != h {
        return Err(Rc::param(rc::INTEGRITY, 1));
    }
    call.out_handle = Some(insert(cx, k)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::command::object::tests::*;
    use crate::testutil::{Cmd, platform, rc_of, started};
    use crate::{Platform, Tpm};

    const CONTEXT_SAVE: u32 = 0x162;
    const CONTEXT_LOAD: u32 = 0x161;

    #[test]
    fn object_context_round_trip() {
        let mut tpm = started();
        let (rc, k, public, _) = primary(&mut tpm, OWNER, b"pw", &ecc_signer(SIGN_ATTRS));
        assert_eq!(rc, 0);
        let resp = tpm.execute(0, &Cmd::new(CONTEXT_SAVE).h(k).bytes());
        assert_eq!(rc_of(&resp), 0);
        let ctx = resp[10..].to_vec();
        assert_eq!(&ctx[8..16], &[0x80, 0, 0, 0, 0x40, 0, 0, 1]);
        flush(&mut tpm, k);
        let load =
            |tpm: &mut Tpm<_>, c: &[u8]| tpm.execute(0, &Cmd::new(CONTEXT_LOAD).b(c).bytes());
        let resp = load(&mut tpm, &ctx);
        assert_eq!(rc_of(&resp), 0);
        let h = u32::from_be_bytes(resp[10..14].try_into().unwrap());
        let rp = tpm.execute(0, &Cmd::new(0x173).h(h).bytes());
        assert_eq!(tpm2b(&rp, 10).0, public);
        // The loaded key still needs its password (Sign with a wrong one fails).
        let digest = [0u8; 32];
        let sign = |pw: &[u8]| {
            Cmd::new(0x15D)
                .h(h)
                .pw(pw)
                .tpm2b(&digest)
                .u16(0x10)
                .b(&[0x80, 0x24, 0x40, 0, 0, 7, 0, 0])
        };
        assert_eq!(rc_of(&tpm.execute(0, &sign(b"x").bytes())), 0x98E);
        assert_eq!(rc_of(&tpm.execute(0, &sign(b"pw").bytes())), 0);
        // Objects contexts may load more than once; a tampered one does not.
        assert_eq!(rc_of(&load(&mut tpm, &ctx)), 0);
        let mut bad = ctx.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert_eq!(rc_of(&load(&mut tpm, &bad)), 0x1DF);
        let mut bad = ctx.clone();
        bad[7] ^= 1;
        assert_eq!(rc_of(&load(&mut tpm, &bad)), 0x1DF);
        // After a TPM Reset (state restore + Startup(CLEAR)) it no longer loads.
        let blob = tpm.state();
        let mut tpm2 = Tpm::restore(platform(), &blob).unwrap();
        let _ = tpm2.platform_mut().now_ms();
        assert_eq!(rc_of(&tpm2.execute(0, &Cmd::new(0x144).u16(0).bytes())), 0);
        assert_eq!(rc_of(&load(&mut tpm2, &ctx)), 0x1DF);
    }

    #[test]
    fn sequence_context_round_trip() {
        let mut tpm = started();
        // A hash sequence saved mid-way and loaded back finishes with the same digest.
        let resp = tpm.execute(0, &Cmd::new(0x186).tpm2b(b"pw").u16(0x0B).bytes());
        let seq = u32::from_be_bytes(resp[10..14].try_into().unwrap());
        let upd = |h: u32, d: &[u8]| Cmd::new(0x15C).h(h).pw(b"pw").tpm2b(d);
        assert_eq!(rc_of(&tpm.execute(0, &upd(seq, b"abc").bytes())), 0);
        let resp = tpm.execute(0, &Cmd::new(CONTEXT_SAVE).h(seq).bytes());
        assert_eq!(rc_of(&resp), 0);
        let ctx = resp[10..].to_vec();
        flush(&mut tpm, seq);
        let resp = tpm.execute(0, &Cmd::new(CONTEXT_LOAD).b(&ctx).bytes());
        assert_eq!(rc_of(&resp), 0);
        let seq = u32::from_be_bytes(resp[10..14].try_into().unwrap());
        assert_eq!(rc_of(&tpm.execute(0, &upd(seq, b"def").bytes())), 0);
        let done = Cmd::new(0x13E).h(seq).pw(b"pw").tpm2b(b"").u32(0x4000_0007);
        let (rc, _, body) = split(&tpm.execute(0, &done.bytes()), false);
        assert_eq!(rc, 0);
        assert_eq!(
            tpm2b(&body, 0).0,
            crate::crypto::HashAlg::Sha256.digest(&[b"abcdef"])
        );
        // An event sequence saves all its banks.
        let resp = tpm.execute(0, &Cmd::new(0x186).tpm2b(b"").u16(0x10).bytes());
        let ev = u32::from_be_bytes(resp[10..14].try_into().unwrap());
        let resp = tpm.execute(0, &Cmd::new(CONTEXT_SAVE).h(ev).bytes());
        assert_eq!(rc_of(&resp), 0);
        flush(&mut tpm, ev);
        let resp = tpm.execute(0, &Cmd::new(CONTEXT_LOAD).b(&resp[10..]).bytes());
        assert_eq!(rc_of(&resp), 0);
    }

    #[test]
    fn session_context_round_trip() {
        let mut tpm = started();
        // StartAuthSession: unbound, unsalted HMAC session with SHA-256, no symmetric.
        let cmd = Cmd::new(0x176)
            .h(0x4000_0007)
            .h(0x4000_0007)
            .tpm2b(&[1; 32])
            .tpm2b(b"")
            .u8(0)
            .u16(0x10)
            .u16(0x0B);
        let resp = tpm.execute(0, &cmd.bytes());
        assert_eq!(rc_of(&resp), 0);
        let s = u32::from_be_bytes(resp[10..14].try_into().unwrap());
        let resp = tpm.execute(0, &Cmd::new(CONTEXT_SAVE).h(s).bytes());
        assert_eq!(rc_of(&resp), 0);
        let ctx = resp[10..].to_vec();
        let resp = tpm.execute(0, &Cmd::new(CONTEXT_LOAD).b(&ctx).bytes());
        assert_eq!(rc_of(&resp), 0);
        assert_eq!(u32::from_be_bytes(resp[10..14].try_into().unwrap()), s);
        // A session context loads only once.
        let resp = tpm.execute(0, &Cmd::new(CONTEXT_LOAD).b(&ctx).bytes());
        assert_ne!(rc_of(&resp), 0);
    }
}
