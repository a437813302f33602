//! NV storage (Part 3 §31): DefineSpace, UndefineSpace, UndefineSpaceSpecial,
//! ChangeAuth, ReadPublic, Read,
//! Write, Increment, Extend, SetBits, WriteLock, ReadLock, GlobalWriteLock.
//! Access rules follow Part 1 §37 (NvReadAccessChecks/NvWriteAccessChecks).

use alloc::vec;
use alloc::vec::Vec;

use crate::command::read_hash_alg;
use crate::dispatch::{Call, Ctx};
use crate::marshal::{Reader, Writer};
use crate::rc::{self, CmdResult, Locate, Rc};
use crate::spec::{MAX_DIGEST, MAX_NV_BUFFER_SIZE, MAX_NV_INDEX_SIZE, ht, nv, rh};
use crate::state::NvIndex;

/// NV capacity: indices and bytes of index data.
pub const MAX_NV_INDICES: usize = 256;
pub const NV_DATA_BUDGET: usize = 128 * 1024;

fn nt(attributes: u32) -> u32 {
    (attributes & nv::TPM_NT_MASK) >> nv::TPM_NT_SHIFT
}

/// TPMS_NV_PUBLIC, marshalled.
pub fn public_bytes(n: &NvIndex) -> Vec<u8> {
    let mut w = Writer::new();
    w.u32(n.handle);
    w.u16(n.name_alg.id());
    w.u32(n.attributes);
    w.tpm2b(&n.auth_policy);
    w.u16(n.data_size);
    w.buf
}

/// The index's Name: nameAlg ‖ H_nameAlg(TPMS_NV_PUBLIC).
pub fn name(n: &NvIndex) -> Vec<u8> {
    let mut out = n.name_alg.id().to_be_bytes().to_vec();
    out.extend_from_slice(&n.name_alg.digest(&[&public_bytes(n)]));
    out
}

/// TPM2B_NV_PUBLIC (errors without a location). As in the reference, the
/// structure is read from the parameter stream and its length must then equal
/// the size field (TPM_RC_SIZE otherwise).
fn parse_public(r: &mut Reader) -> CmdResult<NvIndex> {
    let declared = usize::from(r.u16()?);
    if declared == 0 {
        return Err(Rc::new(rc::SIZE));
    }
    let before = r.remaining();
    let handle = r.u32()?;
    if crate::spec::handle_type(handle) != ht::NV_INDEX {
        return Err(Rc::new(rc::VALUE));
    }
    let name_alg = read_hash_alg(r)?;
    let attributes = r.u32()?;
    if attributes & nv::RESERVED != 0 {
        return Err(Rc::new(rc::RESERVED_BITS));
    }
    let auth_policy = r.tpm2b(MAX_DIGEST)?.to_vec();
    let data_size = r.u16()?;
    if usize::from(data_size) > MAX_NV_INDEX_SIZE {
        return Err(Rc::new(rc::SIZE));
    }
    if before - r.remaining() != declared {
        return Err(Rc::new(rc::SIZE));
    }
    Ok(NvIndex {
        handle,
        name_alg,
        attributes,
        auth_policy,
        data_size,
        auth: Vec::new(),
        data: Vec::new(),
    })
}

fn index<'a>(cx: &'a Ctx, h: u32) -> CmdResult<&'a NvIndex> {
    cx.core
        .ps
        .nv
        .iter()
        .find(|n| n.handle == h)
        .ok_or(Rc::new(rc::HANDLE))
}

fn index_mut<'a>(cx: &'a mut Ctx, h: u32) -> CmdResult<&'a mut NvIndex> {
    cx.core
        .ps
        .nv
        .iter_mut()
        .find(|n| n.handle == h)
        .ok_or(Rc::new(rc::HANDLE))
}

pub fn read_access(auth: u32, n: &NvIndex) -> CmdResult<()> {
    let a = n.attributes;
    if a & nv::READLOCKED != 0 {
        return Err(Rc::new(rc::NV_LOCKED));
    }
    let ok = match auth {
        rh::OWNER => a & nv::OWNERREAD != 0,
        rh::PLATFORM => a & nv::PPREAD != 0,
        h => h == n.handle,
    };
    if !ok {
        return Err(Rc::new(rc::NV_AUTHORIZATION));
    }
    if a & nv::WRITTEN == 0 {
        return Err(Rc::new(rc::NV_UNINITIALIZED));
    }
    Ok(())
}

fn write_access(auth: u32, n: &NvIndex) -> CmdResult<()> {
    let a = n.attributes;
    if a & nv::WRITELOCKED != 0 {
        return Err(Rc::new(rc::NV_LOCKED));
    }
    let ok = match auth {
        rh::OWNER => a & nv::OWNERWRITE != 0,
        rh::PLATFORM => a & nv::PPWRITE != 0,
        h => h == n.handle,
    };
    if ok {
        Ok(())
    } else {
        Err(Rc::new(rc::NV_AUTHORIZATION))
    }
}

/// Store new data and mark the index written.
fn store(n: &mut NvIndex, offset: usize, data: &[u8]) {
    if let Some(dst) = n.data.get_mut(offset..offset + data.len()) {
        dst.copy_from_slice(data);
    }
    n.attributes |= nv::WRITTEN;
}

pub fn define_space(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let auth = call.params.tpm2b(MAX_DIGEST).p(1)?.to_vec();
    let mut public = parse_public(&mut call.params).p(2)?;
    call.done()?;
    let by_platform = call.handle(0) == rh::PLATFORM;
    let a = public.attributes;
    let size = usize::from(public.data_size);
    let digest = public.name_alg.size();
    let bad_attr = Rc::param(rc::ATTRIBUTES, 2);
    // The order of the checks is the reference's (Part 3 §31.3).
    if !public.auth_policy.is_empty() && public.auth_policy.len() != digest {
        return Err(Rc::param(rc::SIZE, 2));
    }
    let auth = crate::crypto::trim_auth(&auth).to_vec();
    if auth.len() > digest {
        return Err(Rc::param(rc::SIZE, 1));
    }
    if by_platform && !cx.core.vol.ph_enable_nv {
        return Err(Rc::handle(rc::HIERARCHY, 1));
    }
    // PIN_PASS / PIN_FAIL are not implemented; other values are reserved.
    if !matches!(
        nt(a),
        nv::NT_ORDINARY | nv::NT_COUNTER | nv::NT_BITS | nv::NT_EXTEND
    ) {
        return Err(bad_attr);
    }
    let size_ok = match nt(a) {
        nv::NT_ORDINARY => size <= MAX_NV_INDEX_SIZE,
        nv::NT_EXTEND => size == digest,
        _ => size == 8,
    };
    if !size_ok {
        return Err(Rc::param(rc::SIZE, 2));
    }
    // Counters are never cleared.
    if nt(a) == nv::NT_COUNTER && a & nv::CLEAR_STCLEAR != 0 {
        return Err(bad_attr);
    }
    if a & (nv::WRITTEN | nv::WRITELOCKED | nv::READLOCKED) != 0 {
        return Err(bad_attr);
    }
    if a & (nv::OWNERREAD | nv::PPREAD | nv::AUTHREAD | nv::POLICYREAD) == 0 {
        return Err(bad_attr);
    }
    if a & (nv::OWNERWRITE | nv::PPWRITE | nv::AUTHWRITE | nv::POLICYWRITE) == 0 {
        return Err(bad_attr);
    }
    if a & nv::CLEAR_STCLEAR != 0 && a & nv::WRITEDEFINE != 0 {
        return Err(bad_attr);
    }
    // The creator's hierarchy must be able to delete the index.
    if by_platform != (a & nv::PLATFORMCREATE != 0) {
        return Err(Rc::handle(rc::ATTRIBUTES, 1));
    }
    // Only the platform can delete a POLICY_DELETE index (NV_UndefineSpaceSpecial).
    if a & nv::POLICY_DELETE != 0 && !by_platform {
        return Err(bad_attr);
    }
    if size > MAX_NV_BUFFER_SIZE && a & nv::WRITEALL != 0 {
        return Err(Rc::param(rc::SIZE, 2));
    }
    let nvs = &cx.core.ps.nv;
    if nvs.iter().any(|n| n.handle == public.handle) {
        return Err(Rc::new(rc::NV_DEFINED));
    }
    let used: usize = nvs.iter().map(|n| n.data.len()).sum();
    if nvs.len() >= MAX_NV_INDICES || used.saturating_add(size) > NV_DATA_BUDGET {
        return Err(Rc::new(rc::NV_SPACE));
    }
    public.auth = auth;
    public.data = vec![0; size];
    cx.core.ps.nv.push(public);
    cx.core.ps.nv.sort_by_key(|n| n.handle);
    cx.core.dirty = true;
    Ok(())
}

pub fn undefine_space(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    call.done()?;
    let h = call.handle(1);
    let n = index(cx, h)?;
    if n.attributes & nv::POLICY_DELETE != 0 {
        return Err(Rc::handle(rc::ATTRIBUTES, 2));
    }
    if call.handle(0) == rh::OWNER && n.attributes & nv::PLATFORMCREATE != 0 {
        return Err(Rc::new(rc::NV_AUTHORIZATION));
    }
    let ps = &mut cx.core.ps;
    if let Some(pos) = ps.nv.iter().position(|n| n.handle == h) {
        let gone = ps.nv.remove(pos);
        if nt(gone.attributes) == nv::NT_COUNTER && gone.attributes & nv::WRITTEN != 0 {
            ps.max_counter = ps.max_counter.max(counter_value(&gone));
        }
    }
    cx.core.dirty = true;
    Ok(())
}

/// NV_UndefineSpaceSpecial: deletes a POLICY_DELETE index with its policy
/// (ADMIN role) and platform authorization.
pub fn undefine_space_special(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    call.done()?;
    let h = call.handle(0);
    if index(cx, h)?.attributes & nv::POLICY_DELETE == 0 {
        return Err(Rc::handle(rc::ATTRIBUTES, 1));
    }
    cx.core.ps.nv.retain(|n| n.handle != h);
    cx.core.dirty = true;
    Ok(())
}

/// NV_ChangeAuth: a new authValue, no longer than the nameAlg digest
/// (ADMIN role: a policy session authorizes it).
pub fn change_auth(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let new = call.params.tpm2b(MAX_DIGEST).p(1)?.to_vec();
    call.done()?;
    let n = index_mut(cx, call.handle(0))?;
    let new = crate::crypto::trim_auth(&new).to_vec();
    if new.len() > n.name_alg.size() {
        return Err(Rc::param(rc::SIZE, 1));
    }
    n.auth = new;
    cx.core.dirty = true;
    Ok(())
}

pub fn read_public(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    call.done()?;
    let n = index(cx, call.handle(0))?;
    let public = public_bytes(n);
    let nm = name(n);
    call.out.tpm2b(&public);
    call.out.tpm2b(&nm);
    Ok(())
}

pub fn read(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let size = usize::from(call.params.u16().p(1)?);
    let offset = usize::from(call.params.u16().p(2)?);
    call.done()?;
    let n = index(cx, call.handle(1))?;
    read_access(call.handle(0), n)?;
    if size > MAX_NV_BUFFER_SIZE {
        return Err(Rc::param(rc::VALUE, 1));
    }
    if offset > n.data.len() {
        return Err(Rc::param(rc::VALUE, 2));
    }
    let data = n
        .data
        .get(offset..offset + size)
        .ok_or(Rc::new(rc::NV_RANGE))?;
    call.out.tpm2b(data);
    Ok(())
}

pub fn write(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let data = call.params.tpm2b(MAX_NV_BUFFER_SIZE).p(1)?;
    let offset = usize::from(call.params.u16().p(2)?);
    call.done()?;
    let auth = call.handle(0);
    let n = index_mut(cx, call.handle(1))?;
    write_access(auth, n)?;
    if nt(n.attributes) != nv::NT_ORDINARY {
        return Err(Rc::new(rc::ATTRIBUTES));
    }
    if offset > n.data.len() {
        return Err(Rc::param(rc::VALUE, 2));
    }
    if data.len() > n.data.len() - offset {
        return Err(Rc::new(rc::NV_RANGE));
    }
    if n.attributes & nv::WRITEALL != 0 && data.len() < n.data.len() {
        return Err(Rc::new(rc::NV_RANGE));
    }
    store(n, offset, data);
    cx.core.dirty = true;
    Ok(())
}

fn counter_value(n: &NvIndex) -> u64 {
    let mut b = [0u8; 8];
    if let Some(d) = n.data.get(..8) {
        b.copy_from_slice(d);
    }
    u64::from_be_bytes(b)
}

pub fn increment(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    call.done()?;
    let auth = call.handle(0);
    let h = call.handle(1);
    // A new counter starts at the largest count any counter has had.
    let floor = cx
        .core
        .ps
        .nv
        .iter()
        .filter(|n| nt(n.attributes) == nv::NT_COUNTER && n.attributes & nv::WRITTEN != 0)
        .map(counter_value)
        .fold(cx.core.ps.max_counter, u64::max);
    let n = index_mut(cx, h)?;
    write_access(auth, n)?;
    if nt(n.attributes) != nv::NT_COUNTER {
        return Err(Rc::handle(rc::ATTRIBUTES, 2));
    }
    let current = if n.attributes & nv::WRITTEN != 0 {
        counter_value(n)
    } else {
        floor
    };
    let next = current.wrapping_add(1);
    store(n, 0, &next.to_be_bytes());
    cx.core.dirty = true;
    Ok(())
}

pub fn extend(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let data = call.params.tpm2b(MAX_NV_BUFFER_SIZE).p(1)?;
    call.done()?;
    let auth = call.handle(0);
    let n = index_mut(cx, call.handle(1))?;
    write_access(auth, n)?;
    if nt(n.attributes) != nv::NT_EXTEND {
        return Err(Rc::handle(rc::ATTRIBUTES, 2));
    }
    let old = if n.attributes & nv::WRITTEN != 0 {
        n.data.clone()
    } else {
        vec![0; n.data.len()]
    };
    let new = n.name_alg.digest(&[&old, data]);
    store(n, 0, &new);
    cx.core.dirty = true;
    Ok(())
}

pub fn set_bits(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let bits = call.params.u64().p(1)?;
    call.done()?;
    let auth = call.handle(0);
    let n = index_mut(cx, call.handle(1))?;
    write_access(auth, n)?;
    if nt(n.attributes) != nv::NT_BITS {
        return Err(Rc::handle(rc::ATTRIBUTES, 2));
    }
    let old = if n.attributes & nv::WRITTEN != 0 {
        counter_value(n)
    } else {
        0
    };
    store(n, 0, &(old | bits).to_be_bytes());
    cx.core.dirty = true;
    Ok(())
}

pub fn write_lock(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    call.done()?;
    let auth = call.handle(0);
    let n = index_mut(cx, call.handle(1))?;
    match write_access(auth, n) {
        Ok(()) => {}
        Err(e) if e.base == rc::NV_AUTHORIZATION => return Err(e),
        // Already locked: not an error.
        Err(_) => return Ok(()),
    }
    if n.attributes & (nv::WRITEDEFINE | nv::WRITE_STCLEAR) == 0 {
        return Err(Rc::handle(rc::ATTRIBUTES, 2));
    }
    n.attributes |= nv::WRITELOCKED;
    cx.core.dirty = true;
    Ok(())
}

pub fn read_lock(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    call.done()?;
    let auth = call.handle(0);
    let n = index_mut(cx, call.handle(1))?;
    match read_access(auth, n) {
        Err(e) if e.base == rc::NV_AUTHORIZATION => return Err(e),
        Err(e) if e.base == rc::NV_LOCKED => return Ok(()),
        // Read-locking an unwritten index is allowed.
        _ => {}
    }
    if n.attributes & nv::READ_STCLEAR == 0 {
        return Err(Rc::handle(rc::ATTRIBUTES, 2));
    }
    n.attributes |= nv::READLOCKED;
    cx.core.dirty = true;
    Ok(())
}

pub fn global_write_lock(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    call.done()?;
    for n in &mut cx.core.ps.nv {
        if n.attributes & nv::GLOBALLOCK != 0 {
            n.attributes |= nv::WRITELOCKED;
        }
    }
    cx.core.dirty = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::testutil::{Cmd, TestPlatform, rc_of, run, started};
    use crate::{Tpm, spec::nv};

    const OWNER: u32 = 0x4000_0001;
    const PLATFORM: u32 = 0x4000_000C;
    const IDX: u32 = 0x0150_0001;

    fn public(handle: u32, attrs: u32, size: u16) -> alloc::vec::Vec<u8> {
        let mut p = alloc::vec::Vec::new();
        p.extend_from_slice(&handle.to_be_bytes());
        p.extend_from_slice(&0x000Bu16.to_be_bytes());
        p.extend_from_slice(&attrs.to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&size.to_be_bytes());
        p
    }
    fn define(
        tpm: &mut Tpm<TestPlatform>,
        auth_h: u32,
        handle: u32,
        attrs: u32,
        size: u16,
        pw: &[u8],
    ) -> u32 {
        run(
            tpm,
            0,
            &Cmd::new(0x12A)
                .h(auth_h)
                .pw(b"")
                .tpm2b(pw)
                .tpm2b(&public(handle, attrs, size)),
        )
        .0
    }
    fn write(tpm: &mut Tpm<TestPlatform>, auth_h: u32, pw: &[u8], data: &[u8], offset: u16) -> u32 {
        run(
            tpm,
            0,
            &Cmd::new(0x137)
                .h(auth_h)
                .h(IDX)
                .pw(pw)
                .tpm2b(data)
                .u16(offset),
        )
        .0
    }
    fn read(
        tpm: &mut Tpm<TestPlatform>,
        auth_h: u32,
        pw: &[u8],
        size: u16,
        offset: u16,
    ) -> (u32, alloc::vec::Vec<u8>) {
        let (rc, body) = run(
            tpm,
            0,
            &Cmd::new(0x14E)
                .h(auth_h)
                .h(IDX)
                .pw(pw)
                .u16(size)
                .u16(offset),
        );
        (rc, if rc == 0 { body[2..].to_vec() } else { body })
    }
    const RW: u32 = nv::AUTHREAD | nv::AUTHWRITE;

    #[test]
    fn ordinary_index_lifecycle() {
        let mut tpm = started();
        assert_eq!(
            define(&mut tpm, OWNER, IDX, RW | nv::OWNERREAD, 16, b"pw"),
            0
        );
        assert_eq!(define(&mut tpm, OWNER, IDX, RW, 16, b"pw"), 0x14C);
        // Unwritten.
        assert_eq!(read(&mut tpm, IDX, b"pw", 4, 0).0, 0x14A);
        assert_eq!(write(&mut tpm, IDX, b"pw", b"hello", 2), 0);
        assert_eq!(read(&mut tpm, IDX, b"pw", 5, 2), (0, b"hello".to_vec()));
        assert_eq!(read(&mut tpm, OWNER, b"", 2, 0), (0, alloc::vec![0, 0]));
        // Owner may read (OWNERREAD) but not write (no OWNERWRITE).
        assert_eq!(write(&mut tpm, OWNER, b"", b"x", 0), 0x149);
        // Ranges.
        assert_eq!(write(&mut tpm, IDX, b"pw", &[1; 10], 8), 0x146);
        assert_eq!(write(&mut tpm, IDX, b"pw", b"x", 17), 0x2C4);
        assert_eq!(read(&mut tpm, IDX, b"pw", 10, 8).0, 0x146);
        assert_eq!(read(&mut tpm, IDX, b"pw", 1, 17).0, 0x2C4);
        assert_eq!(read(&mut tpm, IDX, b"pw", 1025, 0).0, 0x1C4);
        // Wrong password: DA-protected index.
        assert_eq!(read(&mut tpm, IDX, b"nope", 1, 0).0, 0x98E);
        // Undefined index, bad handle type.
        let (rc, _) = run(
            &mut tpm,
            0,
            &Cmd::new(0x14E)
                .h(0x0150_0009)
                .h(0x0150_0009)
                .pw(b"")
                .u16(1)
                .u16(0),
        );
        assert_eq!(rc, 0x18B);
        let (rc, _) = run(
            &mut tpm,
            0,
            &Cmd::new(0x14E).h(0x8000_0000).h(IDX).pw(b"").u16(1).u16(0),
        );
        assert_eq!(rc, 0x184);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x169).h(0x0150_0009)).0, 0x18B);
        // Undefine by owner; then it is gone.
        let (rc, _) = run(&mut tpm, 0, &Cmd::new(0x122).h(OWNER).h(IDX).pw(b""));
        assert_eq!(rc, 0);
        assert_eq!(read(&mut tpm, IDX, b"pw", 1, 0).0, 0x18B);
    }

    #[test]
    fn read_public_and_name() {
        let mut tpm = started();
        let attrs = nv::OWNERREAD | nv::OWNERWRITE;
        assert_eq!(define(&mut tpm, OWNER, IDX, attrs, 8, b""), 0);
        let (rc, body) = run(&mut tpm, 0, &Cmd::new(0x169).h(IDX));
        assert_eq!(rc, 0);
        let p = public(IDX, attrs, 8);
        assert_eq!(&body[..2], &(p.len() as u16).to_be_bytes());
        assert_eq!(&body[2..2 + p.len()], p.as_slice());
        let name = &body[2 + p.len() + 2..];
        assert_eq!(&name[..2], &[0, 0x0B]);
        assert_eq!(
            &name[2..],
            crate::crypto::HashAlg::Sha256.digest(&[&p]).as_slice()
        );
        // WRITTEN shows up in the public area (and so in the name) after a write.
        let (rc, _) = run(
            &mut tpm,
            0,
            &Cmd::new(0x137).h(OWNER).h(IDX).pw(b"").tpm2b(b"x").u16(0),
        );
        assert_eq!(rc, 0);
        let (_, body2) = run(&mut tpm, 0, &Cmd::new(0x169).h(IDX));
        assert_ne!(body, body2);
    }

    #[test]
    fn define_space_checks() {
        let mut tpm = started();
        // No way to read / write.
        assert_eq!(define(&mut tpm, OWNER, IDX, nv::AUTHWRITE, 8, b""), 0x2C2);
        assert_eq!(define(&mut tpm, OWNER, IDX, nv::AUTHREAD, 8, b""), 0x2C2);
        // Counters need 8 bytes; extend indices need the digest size.
        assert_eq!(define(&mut tpm, OWNER, IDX, RW | (1 << 4), 4, b""), 0x2D5);
        assert_eq!(define(&mut tpm, OWNER, IDX, RW | (4 << 4), 20, b""), 0x2D5);
        // Reserved type, reserved bits, preset WRITTEN.
        assert_eq!(define(&mut tpm, OWNER, IDX, RW | (3 << 4), 8, b""), 0x2C2);
        assert_eq!(define(&mut tpm, OWNER, IDX, RW | (1 << 8), 8, b""), 0x2E1);
        assert_eq!(
            define(&mut tpm, OWNER, IDX, RW | nv::WRITTEN, 8, b""),
            0x2C2
        );
        // PLATFORMCREATE must match the hierarchy.
        assert_eq!(
            define(&mut tpm, OWNER, IDX, RW | nv::PLATFORMCREATE, 8, b""),
            0x182
        );
        assert_eq!(define(&mut tpm, PLATFORM, IDX, RW, 8, b""), 0x182);
        // Bit fields may be CLEAR_STCLEAR, counters may not.
        assert_eq!(
            define(
                &mut tpm,
                OWNER,
                IDX,
                RW | (nv::NT_COUNTER << 4) | nv::CLEAR_STCLEAR,
                8,
                b""
            ),
            0x2C2
        );
        assert_eq!(
            define(
                &mut tpm,
                OWNER,
                0x0150_0005,
                RW | (nv::NT_BITS << 4) | nv::CLEAR_STCLEAR,
                8,
                b""
            ),
            0
        );
        // Too big, auth longer than the name digest, bad handle range.
        let too_big = u16::try_from(crate::spec::MAX_NV_INDEX_SIZE + 1).unwrap();
        assert_eq!(define(&mut tpm, OWNER, IDX, RW, too_big, b""), 0x2D5);
        assert_eq!(define(&mut tpm, OWNER, IDX, RW, 8, &[1; 33]), 0x1D5);
        assert_eq!(define(&mut tpm, OWNER, 0x0250_0000, RW, 8, b""), 0x2C4);
        // Wrong owner password (owner is DA exempt).
        let (rc, _) = run(
            &mut tpm,
            0,
            &Cmd::new(0x12A)
                .h(OWNER)
                .pw(b"x")
                .tpm2b(b"")
                .tpm2b(&public(IDX, RW, 8)),
        );
        assert_eq!(rc, 0x9A2);
        // Truncated public area.
        let (rc, _) = run(
            &mut tpm,
            0,
            &Cmd::new(0x12A)
                .h(OWNER)
                .pw(b"")
                .tpm2b(b"")
                .tpm2b(&public(IDX, RW, 8)[..10]),
        );
        assert_eq!(rc, 0x2DA);
        let (rc, _) = run(
            &mut tpm,
            0,
            &Cmd::new(0x12A)
                .h(OWNER)
                .pw(b"")
                .tpm2b(b"")
                .u16(13)
                .b(&public(IDX, RW, 8)),
        );
        assert_eq!(rc, 0x2D5);
        assert_eq!(
            define(&mut tpm, PLATFORM, IDX, RW | nv::PLATFORMCREATE, 8, b""),
            0
        );
        // The owner cannot delete a platform index.
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x122).h(OWNER).h(IDX).pw(b"")).0,
            0x149
        );
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x122).h(PLATFORM).h(IDX).pw(b"")).0,
            0
        );
    }

    #[test]
    fn auth_read_write_attributes() {
        let mut tpm = started();
        assert_eq!(
            define(
                &mut tpm,
                OWNER,
                IDX,
                nv::AUTHWRITE | nv::OWNERREAD | nv::NO_DA,
                8,
                b"pw"
            ),
            0
        );
        assert_eq!(write(&mut tpm, IDX, b"pw", b"1", 0), 0);
        // Index auth without AUTHREAD.
        assert_eq!(read(&mut tpm, IDX, b"pw", 1, 0).0, 0x12F);
        // NO_DA: a wrong password is BAD_AUTH, not AUTH_FAIL.
        assert_eq!(write(&mut tpm, IDX, b"px", b"1", 0), 0x9A2);
    }

    #[test]
    fn dictionary_attack_lockout() {
        let mut tpm = started();
        assert_eq!(define(&mut tpm, OWNER, IDX, RW, 8, b"pw"), 0);
        for _ in 0..3 {
            assert_eq!(write(&mut tpm, IDX, b"bad", b"1", 0), 0x98E);
        }
        assert_eq!(write(&mut tpm, IDX, b"pw", b"1", 0), 0x921);
        // Owner (DA exempt) still works; lockout auth resets the counter.
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x139).h(0x4000_000A).pw(b"")).0,
            0
        );
        assert_eq!(write(&mut tpm, IDX, b"pw", b"1", 0), 0);
        // Self-healing: one failure forgiven per recoveryTime (1000 s).
        for _ in 0..3 {
            write(&mut tpm, IDX, b"bad", b"1", 0);
        }
        tpm.platform_mut().now += 1_000_000;
        assert_eq!(write(&mut tpm, IDX, b"pw", b"1", 0), 0);
    }

    #[test]
    fn counter_bits_extend() {
        let mut tpm = started();
        let ctr = RW | (nv::NT_COUNTER << 4);
        assert_eq!(define(&mut tpm, OWNER, IDX, ctr, 8, b""), 0);
        let inc =
            |tpm: &mut Tpm<TestPlatform>| run(tpm, 0, &Cmd::new(0x134).h(IDX).h(IDX).pw(b"")).0;
        assert_eq!(read(&mut tpm, IDX, b"", 8, 0).0, 0x14A);
        assert_eq!(inc(&mut tpm), 0);
        assert_eq!(inc(&mut tpm), 0);
        assert_eq!(
            read(&mut tpm, IDX, b"", 8, 0),
            (0, 2u64.to_be_bytes().to_vec())
        );
        assert_eq!(write(&mut tpm, IDX, b"", b"1", 0), 0x0082);
        // A counter defined again after deletion starts above the old count.
        run(&mut tpm, 0, &Cmd::new(0x122).h(OWNER).h(IDX).pw(b""));
        assert_eq!(define(&mut tpm, OWNER, IDX, ctr, 8, b""), 0);
        assert_eq!(inc(&mut tpm), 0);
        assert_eq!(
            read(&mut tpm, IDX, b"", 8, 0),
            (0, 3u64.to_be_bytes().to_vec())
        );
        // SetBits on a counter is refused.
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x135).h(IDX).h(IDX).pw(b"").u64(1)).0,
            0x282
        );
        run(&mut tpm, 0, &Cmd::new(0x122).h(OWNER).h(IDX).pw(b""));

        assert_eq!(
            define(&mut tpm, OWNER, IDX, RW | (nv::NT_BITS << 4), 8, b""),
            0
        );
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x135).h(IDX).h(IDX).pw(b"").u64(0x11)
            )
            .0,
            0
        );
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x135).h(IDX).h(IDX).pw(b"").u64(0x100)
            )
            .0,
            0
        );
        assert_eq!(
            read(&mut tpm, IDX, b"", 8, 0),
            (0, 0x111u64.to_be_bytes().to_vec())
        );
        assert_eq!(inc(&mut tpm), 0x282);
        run(&mut tpm, 0, &Cmd::new(0x122).h(OWNER).h(IDX).pw(b""));

        assert_eq!(
            define(&mut tpm, OWNER, IDX, RW | (nv::NT_EXTEND << 4), 32, b""),
            0
        );
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x136).h(IDX).h(IDX).pw(b"").tpm2b(b"abc")
            )
            .0,
            0
        );
        let expect = crate::crypto::HashAlg::Sha256.digest(&[&[0; 32], b"abc"]);
        assert_eq!(read(&mut tpm, IDX, b"", 32, 0), (0, expect));
        assert_eq!(write(&mut tpm, IDX, b"", b"1", 0), 0x0082);
    }

    #[test]
    fn locks() {
        let mut tpm = started();
        let attrs = RW | nv::WRITE_STCLEAR | nv::READ_STCLEAR | nv::WRITEALL;
        assert_eq!(define(&mut tpm, OWNER, IDX, attrs, 4, b""), 0);
        assert_eq!(write(&mut tpm, IDX, b"", b"ab", 0), 0x146);
        assert_eq!(write(&mut tpm, IDX, b"", b"abcd", 0), 0);
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x138).h(IDX).h(IDX).pw(b"")).0,
            0
        );
        assert_eq!(write(&mut tpm, IDX, b"", b"abcd", 0), 0x148);
        // Locking again is not an error.
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x138).h(IDX).h(IDX).pw(b"")).0,
            0
        );
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x14F).h(IDX).h(IDX).pw(b"")).0,
            0
        );
        assert_eq!(read(&mut tpm, IDX, b"", 4, 0).0, 0x148);
        // Both locks clear at the next Startup(CLEAR).
        tpm.power_on();
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x144).u16(0)).0, 0);
        assert_eq!(read(&mut tpm, IDX, b"", 4, 0), (0, b"abcd".to_vec()));
        assert_eq!(write(&mut tpm, IDX, b"", b"efgh", 0), 0);

        // Without WRITEDEFINE/WRITE_STCLEAR the index cannot be write-locked.
        let other = 0x0150_0002;
        assert_eq!(
            define(&mut tpm, OWNER, other, RW | nv::GLOBALLOCK, 4, b""),
            0
        );
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x138).h(other).h(other).pw(b"")).0,
            0x282
        );
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x14F).h(other).h(other).pw(b"")).0,
            0x282
        );
        // Global lock hits GLOBALLOCK indices only.
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x132).h(OWNER).pw(b"")).0, 0);
        let (rc, _) = run(
            &mut tpm,
            0,
            &Cmd::new(0x137).h(other).h(other).pw(b"").tpm2b(b"x").u16(0),
        );
        assert_eq!(rc, 0x148);
        assert_eq!(write(&mut tpm, IDX, b"", b"ijkl", 0), 0);

        // WRITEDEFINE: the lock survives Startup(CLEAR).
        let wd = 0x0150_0003;
        assert_eq!(define(&mut tpm, OWNER, wd, RW | nv::WRITEDEFINE, 4, b""), 0);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x138).h(wd).h(wd).pw(b"")).0, 0);
        tpm.power_on();
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x144).u16(0)).0, 0);
        let (rc, _) = run(
            &mut tpm,
            0,
            &Cmd::new(0x137).h(wd).h(wd).pw(b"").tpm2b(b"x").u16(0),
        );
        assert_eq!(rc, 0x148);
        let (rc, _) = run(
            &mut tpm,
            0,
            &Cmd::new(0x137).h(other).h(other).pw(b"").tpm2b(b"x").u16(0),
        );
        assert_eq!(rc, 0);
    }

    #[test]
    fn clear_stclear_and_persistence() {
        let mut tpm = started();
        assert_eq!(
            define(&mut tpm, OWNER, IDX, RW | nv::CLEAR_STCLEAR, 4, b"pw"),
            0
        );
        assert_eq!(write(&mut tpm, IDX, b"pw", b"abcd", 0), 0);
        let blob = tpm.state();
        assert_eq!(tpm.platform().last, blob);
        let mut again = Tpm::restore(crate::testutil::platform(), &blob).unwrap();
        assert_eq!(run(&mut again, 0, &Cmd::new(0x144).u16(0)).0, 0);
        // CLEAR_STCLEAR: WRITTEN is cleared at Startup(CLEAR).
        assert_eq!(read(&mut again, IDX, b"pw", 4, 0).0, 0x14A);
        assert_eq!(write(&mut again, IDX, b"pw", b"wxyz", 0), 0);
        assert_eq!(read(&mut again, IDX, b"pw", 4, 0), (0, b"wxyz".to_vec()));
    }

    /// Start a policy session whose digest is PolicyCommandCode(cc).
    fn policy_for(tpm: &mut Tpm<TestPlatform>, code: u32) -> (u32, alloc::vec::Vec<u8>) {
        let cmd = Cmd::new(0x176)
            .h(0x4000_0007)
            .h(0x4000_0007)
            .tpm2b(&[1; 16])
            .u16(0)
            .u8(1)
            .u16(0x10)
            .u16(0x0B);
        let r = tpm.execute(0, &cmd.bytes());
        let s = u32::from_be_bytes([r[10], r[11], r[12], r[13]]);
        assert_eq!(run(tpm, 0, &Cmd::new(0x16C).h(s).u32(code)).0, 0);
        let digest = crate::crypto::HashAlg::Sha256.digest(&[
            &[0; 32],
            &0x16Cu32.to_be_bytes(),
            &code.to_be_bytes(),
        ]);
        (s, digest)
    }

    /// Replace the first session handle of an authorized command (an empty
    /// HMAC is accepted for an unbound, unsalted policy session).
    fn with_session(mut c: alloc::vec::Vec<u8>, handles: usize, s: u32) -> alloc::vec::Vec<u8> {
        let at = 10 + 4 * handles + 4;
        c[at..at + 4].copy_from_slice(&s.to_be_bytes());
        c
    }

    #[test]
    fn change_auth_needs_a_policy_session() {
        let mut tpm = started();
        let (s, policy) = policy_for(&mut tpm, 0x13B);
        let attrs = RW;
        let mut p = IDX.to_be_bytes().to_vec();
        p.extend_from_slice(&[0, 0x0B]);
        p.extend_from_slice(&attrs.to_be_bytes());
        p.extend_from_slice(&32u16.to_be_bytes());
        p.extend_from_slice(&policy);
        p.extend_from_slice(&4u16.to_be_bytes());
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x12A).h(OWNER).pw(b"").tpm2b(b"old").tpm2b(&p)
            )
            .0,
            0
        );
        // ADMIN role: a password is not enough.
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x13B).h(IDX).pw(b"old").tpm2b(b"new")
            )
            .0,
            0x124
        );
        let c = with_session(Cmd::new(0x13B).h(IDX).pw(b"").tpm2b(b"new").bytes(), 1, s);
        assert_eq!(rc_of(&tpm.execute(0, &c)), 0);
        assert_eq!(write(&mut tpm, IDX, b"old", b"x", 0), 0x98E);
        assert_eq!(write(&mut tpm, IDX, b"new", b"x", 0), 0);
    }

    #[test]
    fn undefine_space_special() {
        let mut tpm = started();
        let (s, policy) = policy_for(&mut tpm, 0x11F);
        let define = |tpm: &mut Tpm<TestPlatform>, auth: u32, extra: u32| {
            let mut p = IDX.to_be_bytes().to_vec();
            p.extend_from_slice(&[0, 0x0B]);
            p.extend_from_slice(&(RW | extra).to_be_bytes());
            p.extend_from_slice(&32u16.to_be_bytes());
            p.extend_from_slice(&policy);
            p.extend_from_slice(&4u16.to_be_bytes());
            run(
                tpm,
                0,
                &Cmd::new(0x12A).h(auth).pw(b"").tpm2b(b"").tpm2b(&p),
            )
            .0
        };
        // Only the platform may create a POLICY_DELETE index.
        assert_eq!(define(&mut tpm, OWNER, nv::POLICY_DELETE), 0x2C2);
        assert_eq!(
            define(&mut tpm, PLATFORM, nv::POLICY_DELETE | nv::PLATFORMCREATE),
            0
        );
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x122).h(PLATFORM).h(IDX).pw(b"")).0,
            0x282
        );
        // Password for the ADMIN role is refused; policy + platform works.
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x11F).h(IDX).h(PLATFORM).pw(b"").pw(b"")
            )
            .0,
            0x124
        );
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x11F).h(IDX).h(PLATFORM).pw(b"")).0,
            0x125
        );
        let c = with_session(
            Cmd::new(0x11F).h(IDX).h(PLATFORM).pw(b"").pw(b"").bytes(),
            2,
            s,
        );
        assert_eq!(rc_of(&tpm.execute(0, &c)), 0);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x169).h(IDX)).0, 0x18B);
        // An index without POLICY_DELETE cannot go this way.
        let (s2, _) = policy_for(&mut tpm, 0x11F);
        assert_eq!(define(&mut tpm, PLATFORM, nv::PLATFORMCREATE), 0);
        let c = with_session(
            Cmd::new(0x11F).h(IDX).h(PLATFORM).pw(b"").pw(b"").bytes(),
            2,
            s2,
        );
        assert_eq!(rc_of(&tpm.execute(0, &c)), 0x182);
    }
}
