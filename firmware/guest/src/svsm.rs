//! Calling the SVSM: registers per the SVSM specification, call_pending in
//! the Calling Area, VMMCALL (VMGEXIT on SNP hardware).

/// Register values of a call, in and out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub r8: u64,
    pub r9: u64,
}

/// SVSM information (the secrets-page SVSM fields).
#[derive(Clone, Copy, Debug)]
pub struct Info {
    pub svsm_base: u64,
    pub svsm_size: u64,
    pub caa: u64,
    pub max_version: u32,
}

/// Reads the information page.
pub fn info(page: u64) -> Info {
    // SAFETY: the SVSM hands the guest the GPA of its information page,
    // which the guest's page tables map; these are plain loads.
    unsafe {
        Info {
            svsm_base: core::ptr::read_volatile((page + 0x140) as *const u64),
            svsm_size: core::ptr::read_volatile((page + 0x148) as *const u64),
            caa: core::ptr::read_volatile((page + 0x150) as *const u64),
            max_version: core::ptr::read_volatile((page + 0x158) as *const u32),
        }
    }
}

/// Makes a call: sets call_pending (unless `pending` is false, to test the
/// SVSM's refusal) and exits to the SVSM.
pub fn call(caa: u64, protocol: u32, id: u32, args: Regs, pending: bool) -> Regs {
    if pending {
        // SAFETY: the Calling Area is guest memory the SVSM named for this.
        unsafe { core::ptr::write_volatile(caa as *mut u8, 1) };
    }
    let mut r = Regs {
        rax: (u64::from(protocol) << 32) | u64::from(id),
        ..args
    };
    // SAFETY: VMMCALL exits to the SVSM, which changes only the registers
    // named here and the memory the call names.
    unsafe {
        core::arch::asm!(
            "vmmcall",
            inout("rax") r.rax,
            inout("rcx") r.rcx,
            inout("rdx") r.rdx,
            inout("r8") r.r8,
            inout("r9") r.r9,
        )
    };
    r
}

/// Reads call_pending.
pub fn call_pending(caa: u64) -> u8 {
    // SAFETY: as in `call`.
    unsafe { core::ptr::read_volatile(caa as *const u8) }
}

/// Stops this vCPU for good (the SVSM ends the VM).
pub fn halt() -> ! {
    loop {
        // SAFETY: HLT with interrupts off stops the vCPU; the SVSM sees it.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
