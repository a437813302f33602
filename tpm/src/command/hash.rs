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

/// A block may get a ticket unless it starts with TPM_GENERATED_VALUE.
fn ticket_safe(first: &[u8]) -> bool {
    !first.starts_with(&TPM_GENERATED)
}

/// TPMT_TK_HASHCHECK for `digest` in `hierarchy`.
fn write_ticket(cx: &Ctx, call: &mut Call, hierarchy: u32, safe: bool, digest: &[u8]) {
    call.out.u16(st::HASHCHECK);
    if hierarchy == rh::NULL || !safe {
        call.out.u32(rh::NULL);
        call.out.u16(0);
        return;
    }
    call.out.u32(hierarchy);
    let tag = st::HASHCHECK.to_be_bytes();
    let mac = crate::command::CONTEXT_HASH.hmac(&proof(cx, hierarchy), &[&tag, digest]);
    call.out.tpm2b(&mac);
}

pub fn hash(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let data = call.params.tpm2b(MAX_DIGEST_BUFFER).p(1)?;
    let alg = read_hash_alg(&mut call.params).p(2)?;
    let hierarchy = read_hierarchy_or_null(&mut call.params).p(3)?;
    call.done()?;
    let digest = alg.digest(&[data]);
    call.out.tpm2b(&digest);
    write_ticket(cx, call, hierarchy, ticket_safe(data), &digest);
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
    let object = Object {
        auth,
        kind,
        ticket_safe: None,
    };
    call.out_handle = Some(cx.core.vol.objects.insert(object)?);
    Ok(())
}

fn feed(o: &mut Object, data: &[u8]) {
    // The first block decides whether a ticket may be issued.
    if o.ticket_safe.is_none() {
        o.ticket_safe = Some(ticket_safe(data));
    }
    match &mut o.kind {
        Kind::HashSequence(h) => h.update(data),
        Kind::EventSequence(hs) => hs.iter_mut().for_each(|h| h.update(data)),
        Kind::HmacSequence(h) => h.update(data),
        Kind::Key(_) => {}
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
        .filter(|o| !matches!(o.kind, Kind::Key(_)))
        .ok_or(Rc::handle(rc::MODE, 1))?;
    feed(o, data);
    Ok(())
}

pub fn sequence_complete(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let data = call.params.tpm2b(MAX_DIGEST_BUFFER).p(1)?;
    let hierarchy = read_hierarchy_or_null(&mut call.params).p(2)?;
    call.done()?;
    let handle = call.handle(0);
    if !matches!(
        cx.core.vol.objects.get(handle),
        Some(Object {
            kind: Kind::HashSequence(_) | Kind::HmacSequence(_),
            ..
        })
    ) {
        return Err(Rc::handle(rc::MODE, 1));
    }
    let Some(mut o) = cx.core.vol.objects.remove(handle) else {
        return Err(Rc::handle(rc::MODE, 1));
    };
    feed(&mut o, data);
    let safe = o.ticket_safe.unwrap_or(true);
    let digest = match o.kind {
        Kind::HashSequence(h) => h.finish(),
        // An HMAC sequence gets a NULL ticket.
        Kind::HmacSequence(h) => {
            call.out.tpm2b(&h.finish());
            write_ticket(cx, call, rh::NULL, false, &[]);
            return Ok(());
        }
        _ => return Err(Rc::handle(rc::MODE, 1)),
    };
    call.out.tpm2b(&digest);
    write_ticket(cx, call, hierarchy, safe, &digest);
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
    if let Some(p) = pcr
        && !model::locality_allows(model::extend_localities(p), cx.locality)
    {
        return Err(Rc::new(rc::LOCALITY));
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
        ht::HMAC_SESSION | ht::POLICY_SESSION => {
            cx.core
                .vol
                .sessions
                .remove(handle)
                .ok_or(Rc::param(rc::HANDLE, 1))?;
            Ok(())
        }
        _ => Err(Rc::param(rc::VALUE, 1)),
    }
}

#[cfg(test)]
mod tests {
    use crate::Tpm;
    use crate::crypto::HashAlg;
    use crate::testutil::{Cmd, TestPlatform, run, started};

    fn start(tpm: &mut Tpm<TestPlatform>, auth: &[u8], alg: u16) -> (u32, u32) {
        let resp = tpm.execute(0, &Cmd::new(0x186).tpm2b(auth).u16(alg).bytes());
        let rc = crate::testutil::rc_of(&resp);
        (
            rc,
            if rc == 0 {
                u32::from_be_bytes([resp[10], resp[11], resp[12], resp[13]])
            } else {
                0
            },
        )
    }

    #[test]
    fn one_shot_hash_and_ticket() {
        let mut tpm = started();
        let (rc, body) = run(
            &mut tpm,
            0,
            &Cmd::new(0x17D).tpm2b(b"abc").u16(0x0B).u32(0x4000_0001),
        );
        assert_eq!(rc, 0);
        assert_eq!(&body[2..34], HashAlg::Sha256.digest(&[b"abc"]).as_slice());
        assert_eq!(&body[34..40], &[0x80, 0x24, 0x40, 0, 0, 1]);
        assert_eq!(&body[40..42], &[0, 48]);
        // NULL hierarchy and TPM_GENERATED data get a NULL ticket.
        let (_, body) = run(
            &mut tpm,
            0,
            &Cmd::new(0x17D).tpm2b(b"abc").u16(0x04).u32(0x4000_0007),
        );
        assert_eq!(&body[22..], &[0x80, 0x24, 0x40, 0, 0, 7, 0, 0]);
        let (_, body) = run(
            &mut tpm,
            0,
            &Cmd::new(0x17D)
                .tpm2b(b"\xffTCGx")
                .u16(0x0C)
                .u32(0x4000_0001),
        );
        assert_eq!(&body[50..], &[0x80, 0x24, 0x40, 0, 0, 7, 0, 0]);
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x17D).tpm2b(b"abc").u16(0x10).u32(0x4000_0001)
            )
            .0,
            0x2C3
        );
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x17D).tpm2b(b"abc").u16(0x0B).u32(0x4000_000A)
            )
            .0,
            0x3C4
        );
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x17D).tpm2b(&[0; 1025]).u16(0x0B).u32(0x4000_0001)
            )
            .0,
            0x1D5
        );
    }

    #[test]
    fn sequence_matches_one_shot() {
        let mut tpm = started();
        let (rc, h) = start(&mut tpm, b"sq", 0x0C);
        assert_eq!((rc, h), (0, 0x8000_0000));
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x15C).h(h).pw(b"sq").tpm2b(b"hello ")
            )
            .0,
            0
        );
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x15C).h(h).pw(b"no").tpm2b(b"x")).0,
            0x9A2
        );
        let (rc, body) = run(
            &mut tpm,
            0,
            &Cmd::new(0x13E)
                .h(h)
                .pw(b"sq")
                .tpm2b(b"world")
                .u32(0x4000_0007),
        );
        assert_eq!(rc, 0);
        assert_eq!(
            &body[2..50],
            HashAlg::Sha384.digest(&[b"hello world"]).as_slice()
        );
        // The sequence object is gone.
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x15C).h(h).pw(b"sq").tpm2b(b"x")).0,
            0x910
        );
    }

    #[test]
    fn generated_first_block_gets_no_ticket() {
        let mut tpm = started();
        let (_, h) = start(&mut tpm, b"", 0x0B);
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x15C).h(h).pw(b"").tpm2b(b"\xffTCG")).0,
            0
        );
        let (_, body) = run(
            &mut tpm,
            0,
            &Cmd::new(0x13E).h(h).pw(b"").tpm2b(b"").u32(0x4000_0001),
        );
        assert_eq!(&body[34..], &[0x80, 0x24, 0x40, 0, 0, 7, 0, 0]);
        let (_, h) = start(&mut tpm, b"", 0x0B);
        let (_, body) = run(
            &mut tpm,
            0,
            &Cmd::new(0x13E).h(h).pw(b"").tpm2b(b"abcd").u32(0x4000_0001),
        );
        assert_eq!(&body[34..40], &[0x80, 0x24, 0x40, 0, 0, 1]);
    }

    #[test]
    fn object_slots_and_flush() {
        let mut tpm = started();
        for i in 0..3 {
            assert_eq!(start(&mut tpm, b"", 0x0B), (0, 0x8000_0000 + i));
        }
        assert_eq!(start(&mut tpm, b"", 0x0B).0, 0x902);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x165).u32(0x8000_0001)).0, 0);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x165).u32(0x8000_0001)).0, 0x1CB);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x165).u32(0x0200_0000)).0, 0x1CB);
        assert_eq!(start(&mut tpm, b"", 0x0B), (0, 0x8000_0001));
        assert_eq!(start(&mut tpm, b"", 0x99).0, 0x2C3);
        // Objects do not survive _TPM_Init.
        tpm.power_on();
        run(&mut tpm, 0, &Cmd::new(0x144).u16(0));
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x15C).h(0x8000_0000).pw(b"").tpm2b(b"x")
            )
            .0,
            0x910
        );
    }

    #[test]
    fn event_sequence() {
        let mut tpm = started();
        let (_, ev) = start(&mut tpm, b"e", 0x10);
        let (_, hs) = start(&mut tpm, b"", 0x0B);
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x15C).h(ev).pw(b"e").tpm2b(b"ab")).0,
            0
        );
        // Wrong object kinds.
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x13E).h(ev).pw(b"e").tpm2b(b"").u32(0x4000_0007)
            )
            .0,
            0x189
        );
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x185).h(16).h(hs).pw(b"").pw(b"").tpm2b(b"")
            )
            .0,
            0x289
        );
        // An unloaded sequence in the second handle slot is REFERENCE_H1.
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x185)
                    .h(16)
                    .h(0x8000_0002)
                    .pw(b"")
                    .pw(b"")
                    .tpm2b(b"")
            )
            .0,
            0x911
        );
        // Both handles need authorization; PCR 17 cannot be extended at locality 0.
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x185).h(16).h(ev).pw(b"").tpm2b(b"c")
            )
            .0,
            0x125
        );
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x185).h(17).h(ev).pw(b"").pw(b"e").tpm2b(b"c")
            )
            .0,
            0x907
        );
        let (rc, body) = run(
            &mut tpm,
            0,
            &Cmd::new(0x185).h(16).h(ev).pw(b"").pw(b"e").tpm2b(b"c"),
        );
        assert_eq!(rc, 0);
        assert_eq!(&body[..4], &3u32.to_be_bytes());
        let d256 = HashAlg::Sha256.digest(&[b"abc"]);
        assert_eq!(&body[28..60], d256.as_slice());
        let (_, pcr) = run(
            &mut tpm,
            0,
            &Cmd::new(0x17E).u32(1).u16(0x0B).u8(3).b(&[0, 0, 1]),
        );
        assert_eq!(
            &pcr[20..],
            HashAlg::Sha256.digest(&[&[0; 32], &d256]).as_slice()
        );
    }
}
