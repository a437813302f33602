//! The hierarchies (Part 1 §13): which seed, proof, authValue and enable flag
//! belong to each hierarchy handle. Commands and, later, primary-key
//! derivation go through this one mapping.

use alloc::vec::Vec;

use crate::Core;
use crate::spec::rh;
use crate::state::SEED_LEN;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    Owner,
    Endorsement,
    Platform,
    Null,
}

impl Hierarchy {
    pub fn from_handle(h: u32) -> Option<Self> {
        match h {
            rh::OWNER => Some(Self::Owner),
            rh::ENDORSEMENT => Some(Self::Endorsement),
            rh::PLATFORM => Some(Self::Platform),
            rh::NULL => Some(Self::Null),
            _ => None,
        }
    }

    #[allow(dead_code)] // for the key commands (creation data, tickets)
    pub fn handle(self) -> u32 {
        match self {
            Self::Owner => rh::OWNER,
            Self::Endorsement => rh::ENDORSEMENT,
            Self::Platform => rh::PLATFORM,
            Self::Null => rh::NULL,
        }
    }

    /// The primary seed (the NULL hierarchy's seed arrives with key support,
    /// regenerated at each TPM Reset).
    #[allow(dead_code)] // for primary-key derivation
    pub fn seed(self, core: &Core) -> Option<&[u8; SEED_LEN]> {
        match self {
            Self::Owner => Some(&core.ps.sps),
            Self::Endorsement => Some(&core.ps.eps),
            Self::Platform => Some(&core.ps.pps),
            Self::Null => None,
        }
    }

    /// The proof value that keys tickets of this hierarchy.
    pub fn proof(self, core: &Core) -> [u8; SEED_LEN] {
        match self {
            Self::Platform => core.ps.ph_proof,
            Self::Endorsement => core.ps.eh_proof,
            Self::Owner | Self::Null => core.ps.sh_proof,
        }
    }

    /// Whether the hierarchy is enabled (phEnable, shEnable, ehEnable).
    pub fn enabled(self, core: &Core) -> bool {
        match self {
            Self::Owner => core.vol.sh_enable,
            Self::Endorsement => core.vol.eh_enable,
            Self::Platform => core.vol.ph_enable,
            Self::Null => true,
        }
    }
}

/// The authValue of a permanent handle (hierarchies and lockout).
pub fn permanent_auth(core: &Core, handle: u32) -> Vec<u8> {
    match handle {
        rh::OWNER => core.ps.owner_auth.clone(),
        rh::ENDORSEMENT => core.ps.endorsement_auth.clone(),
        rh::PLATFORM => core.vol.platform_auth.clone(),
        rh::LOCKOUT => core.ps.lockout_auth.clone(),
        _ => Vec::new(),
    }
}
