//! Intel TDX with TD partitioning: the SVSM as the L1 (issue 9), its TDCALLs
//! and the TD report (issue 7). Hardware instructions sit behind narrow
//! traits; the logic above them is tested on the host against a model of the
//! TDX module.
