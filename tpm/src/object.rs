//! Transient objects (handles 0x80xxxxxx). Part 1 has only sequence objects;
//! keys join the same slots later.

use alloc::vec::Vec;

use crate::crypto::Hasher;
use crate::rc::{self, CmdResult, Rc};
use crate::spec::MAX_LOADED_OBJECTS;

pub const TRANSIENT_FIRST: u32 = 0x8000_0000;

pub enum Kind {
    /// TPM2_HashSequenceStart with a hash algorithm.
    HashSequence(Hasher),
    /// TPM2_HashSequenceStart with TPM_ALG_NULL: one hasher per implemented algorithm.
    EventSequence(Vec<Hasher>),
    /// A key or data object.
    Key(alloc::sync::Arc<crate::key::KeyObject>),
    /// TPM2_HMAC_Start: a running HMAC (completed by SequenceComplete).
    HmacSequence(alloc::boxed::Box<crate::command::symmetric::HmacState>),
}

pub struct Object {
    pub auth: Vec<u8>,
    pub kind: Kind,
    /// Hash sequences: None until the first block is seen, then whether that
    /// block was free of TPM_GENERATED_VALUE (a hash-check ticket may be issued).
    pub ticket_safe: Option<bool>,
}

#[derive(Default)]
pub struct Objects {
    slots: [Option<Object>; MAX_LOADED_OBJECTS],
}

impl Objects {
    fn slot(handle: u32) -> Option<usize> {
        let i = usize::try_from(handle.checked_sub(TRANSIENT_FIRST)?).ok()?;
        (i < MAX_LOADED_OBJECTS).then_some(i)
    }
    pub fn get(&self, handle: u32) -> Option<&Object> {
        self.slots.get(Self::slot(handle)?)?.as_ref()
    }
    pub fn get_mut(&mut self, handle: u32) -> Option<&mut Object> {
        self.slots.get_mut(Self::slot(handle)?)?.as_mut()
    }
    pub fn insert(&mut self, o: Object) -> CmdResult<u32> {
        let i = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(Rc::new(rc::OBJECT_MEMORY))?;
        self.slots[i] = Some(o);
        Ok(TRANSIENT_FIRST + u32::try_from(i).unwrap_or(0))
    }
    pub fn remove(&mut self, handle: u32) -> Option<Object> {
        self.slots.get_mut(Self::slot(handle)?)?.take()
    }
    pub fn handles(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| TRANSIENT_FIRST + u32::try_from(i).unwrap_or(0))
    }
    pub fn count(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }
}
