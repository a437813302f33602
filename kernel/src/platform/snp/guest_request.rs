//! The SNP guest-request channel: MSG_REPORT_REQ and MSG_KEY_REQ to the PSP,
//! AES-256-GCM under VMPCK0.
