//! AMD SEV-SNP: the SVSM at VMPL0 (issue 9), and its guest-request channel to
//! the PSP (issue 7). Hardware instructions sit behind narrow traits; the logic
//! above them is tested on the host against software models.
//!
//! | file | what |
//! | --- | --- |
//! | `ghcb` | GHCB MSR protocol, GHCB page and valid bitmap, NAE events ([`ghcb::Hypervisor`]: MSR + VMGEXIT) |
//! | `rmp` | PVALIDATE / RMPADJUST ([`rmp::Rmp`]), validating ranges, granting the guest VMPL, VMSA pages |
//! | `vmsa` | the VMSA layout, guest VMSA checks, the IGVM guest-context page |
//! | `vc` | #VC: CPUID from the CPUID page, console port I/O and MSRs through the GHCB |
//! | `svsm` | the SVSM side: boot vCPU, RUN_VMPL loop, CREATE/DELETE_VCPU, guest memory, guest-request transport |
//! | `secrets`, `guest_request` | the secrets page and the PSP channel (helper "snpreq") |
//! | `certs` | the host's VCEK/VLEK certificate table from the extended guest request, validated |
//! | `hw` (bare metal) | the instructions themselves, and the `Snp` platform |
//!
//! Nothing here has run on SEV-SNP hardware: see the README's "Hardware
//! platforms".

pub mod certs;
pub mod ghcb;
pub mod guest_request;
#[cfg(target_os = "none")]
pub mod hw;
pub mod rmp;
pub mod secrets;
pub mod svsm;
pub mod vc;
pub mod vmsa;

#[cfg(test)]
mod model;
#[cfg(test)]
mod psp_model;
#[cfg(test)]
mod tests;
