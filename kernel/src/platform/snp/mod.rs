//! AMD SEV-SNP: the SVSM at VMPL0 (issue 9), and its guest-request channel to
//! the PSP (issue 7). Hardware instructions sit behind narrow traits; the logic
//! above them is tested on the host against software models.

pub mod guest_request;
pub mod secrets;

#[cfg(test)]
mod psp_model;
