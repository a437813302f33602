//! NV storage (Part 3 §31): DefineSpace, UndefineSpace, ReadPublic, Read,
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

/// TPM2B_NV_PUBLIC (errors without a location).
fn parse_public(r: &mut Reader) -> CmdResult<NvIndex> {
    let body = r.tpm2b(usize::from(u16::MAX))?;
    if body.is_empty() {
        return Err(Rc::new(rc::SIZE));
    }
    let mut p = Reader::new(body);
    let handle = p.u32()?;
    if crate::spec::handle_type(handle) != ht::NV_INDEX {
        return Err(Rc::new(rc::VALUE));
    }
    let name_alg = read_hash_alg(&mut p)?;
    let attributes = p.u32()?;
    if attributes & nv::RESERVED != 0 {
        return Err(Rc::new(rc::RESERVED_BITS));
    }
    let auth_policy = p.tpm2b(MAX_DIGEST)?.to_vec();
    let data_size = p.u16()?;
    if usize::from(data_size) > MAX_NV_INDEX_SIZE {
        return Err(Rc::new(rc::SIZE));
    }
    p.finish()?;
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

fn read_access(auth: u32, n: &NvIndex) -> CmdResult<()> {
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
    if !public.auth_policy.is_empty() && public.auth_policy.len() != digest {
        return Err(Rc::param(rc::SIZE, 2));
    }
    let auth = crate::crypto::trim_auth(&auth).to_vec();
    if auth.len() > digest {
        return Err(Rc::param(rc::SIZE, 1));
    }
    // POLICY_DELETE indices need NV_UndefineSpaceSpecial, not implemented yet.
    if a & nv::POLICY_DELETE != 0 {
        return Err(bad_attr);
    }
    match nt(a) {
        nv::NT_ORDINARY => {
            if size > MAX_NV_INDEX_SIZE {
                return Err(Rc::param(rc::SIZE, 2));
            }
        }
        nv::NT_EXTEND => {
            if size != digest {
                return Err(Rc::param(rc::SIZE, 2));
            }
        }
        nv::NT_COUNTER | nv::NT_BITS => {
            if size != 8 {
                return Err(Rc::param(rc::SIZE, 2));
            }
            if a & nv::CLEAR_STCLEAR != 0 {
                return Err(bad_attr);
            }
        }
        // PIN_PASS / PIN_FAIL are not implemented; other values are reserved.
        _ => return Err(bad_attr),
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
    if by_platform != (a & nv::PLATFORMCREATE != 0) {
        return Err(Rc::handle(rc::HIERARCHY, 1));
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
