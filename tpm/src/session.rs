//! Authorization sessions (Part 1 §19): the slots HMAC and policy sessions
//! will live in. StartAuthSession is not implemented yet, so every slot is
//! empty and a session handle in a command is "not loaded"; the lookups here
//! are what the auth area, FlushContext and GetCapability consult.

use crate::spec::handle_type;

/// Session handles are 0x02xxxxxx (HMAC) and 0x03xxxxxx (policy); at most
/// this many are active (loaded or saved) at once.
pub const MAX_ACTIVE_SESSIONS: usize = 64;

/// A loaded session (fields arrive with StartAuthSession).
#[derive(Clone, Debug)]
pub struct Session {
    pub handle: u32,
}

#[derive(Default)]
pub struct Sessions {
    slots: alloc::vec::Vec<Session>,
}

impl Sessions {
    pub fn get(&self, h: u32) -> Option<&Session> {
        self.slots.iter().find(|s| s.handle == h)
    }
    pub fn remove(&mut self, h: u32) -> Option<Session> {
        let i = self.slots.iter().position(|s| s.handle == h)?;
        Some(self.slots.remove(i))
    }
    /// Loaded session handles of one type, sorted.
    pub fn handles(&self, kind: u8) -> alloc::vec::Vec<u32> {
        let mut v: alloc::vec::Vec<u32> = self
            .slots
            .iter()
            .map(|s| s.handle)
            .filter(|h| handle_type(*h) == kind)
            .collect();
        v.sort_unstable();
        v
    }
    pub fn count(&self) -> usize {
        self.slots.len()
    }
}
