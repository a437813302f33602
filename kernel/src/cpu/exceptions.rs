//! CPU exceptions. Each vector's stub saves every general-purpose register
//! into an [`ExceptionFrame`] and calls [`exception_handler`]. A breakpoint
//! returns; a fault inside a [`catch_fault`] call is turned into an error for
//! its caller; anything else is fatal: the vector, error code, RIP, CR2 and
//! all registers are printed and the platform ends the VM with a failure code.

use core::arch::global_asm;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use super::instr;
use super::percpu;
use crate::mm::stack;

global_asm!(
    r#"
    .section .text.exceptions, "ax"
    .p2align 4
    .global exception_stubs
exception_stubs:
    .set vec, 0
    .rept 32
    .p2align 4
    .if (vec == 8) | (vec == 10) | (vec == 11) | (vec == 12) | (vec == 13) | (vec == 14) | (vec == 17) | (vec == 21) | (vec == 29) | (vec == 30)
    pushq $vec
    .else
    pushq $0
    pushq $vec
    .endif
    jmp exception_common
    .set vec, vec + 1
    .endr

    .p2align 4
    .global unexpected_vector_stub
unexpected_vector_stub:
    pushq $0
    pushq $0xFF
    jmp exception_common

exception_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    mov %rsp, %rdi
    cld
    call exception_handler
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    add $16, %rsp
    iretq

    /* u64 catch_call(arg, f, stack_top, slot): calls f(arg), on stack_top
       if it is not 0. Returns 0, or 1 when the exception handler abandoned
       the call and resumed at catch_landing with RSP = *slot. */
    .global catch_call
catch_call:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    mov %rcx, %r12
    mov %rsp, (%r12)
    test %rdx, %rdx
    jz 1f
    mov %rdx, %rsp
1:  and $-16, %rsp
    call *%rsi
    mov (%r12), %rsp
    xor %eax, %eax
    jmp 2f
    .global catch_landing
catch_landing:
    mov $1, %eax
2:  popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
"#,
    options(att_syntax)
);

unsafe extern "C" {
    fn catch_call(arg: usize, f: extern "C" fn(usize), stack_top: u64, slot: *mut u64) -> u64;
    static catch_landing: u8;
}

/// The state saved on exception entry, lowest address first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExceptionFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// The vector number (0xFF for a vector the kernel does not expect).
    pub vector: u64,
    /// The CPU's error code, or 0 for vectors without one.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Vector numbers the kernel treats specially.
pub mod vector {
    /// Breakpoint.
    pub const BREAKPOINT: u64 = 3;
    /// Double fault.
    pub const DOUBLE_FAULT: u64 = 8;
    /// Page fault.
    pub const PAGE_FAULT: u64 = 14;
    /// VMM communication exception (#VC, SEV-ES/SNP).
    pub const VMM_COMMUNICATION: u64 = 29;
}

/// Handles a #VC: true if the instruction was emulated and RIP advanced.
pub type VcHandler = fn(&mut ExceptionFrame) -> bool;

static VC_HANDLER: spin::Once<VcHandler> = spin::Once::new();

/// Installs the #VC handler (once; the SNP platform does it). Without one a
/// #VC is fatal like any other exception.
pub fn set_vc_handler(handler: VcHandler) {
    VC_HANDLER.call_once(|| handler);
}

/// Mnemonic of an exception vector.
pub fn vector_name(vector: u64) -> &'static str {
    const NAMES: [&str; 32] = [
        "#DE divide error",
        "#DB debug",
        "NMI",
        "#BP breakpoint",
        "#OF overflow",
        "#BR bound range",
        "#UD invalid opcode",
        "#NM device not available",
        "#DF double fault",
        "coprocessor segment overrun",
        "#TS invalid TSS",
        "#NP segment not present",
        "#SS stack fault",
        "#GP general protection",
        "#PF page fault",
        "reserved (15)",
        "#MF x87 floating point",
        "#AC alignment check",
        "#MC machine check",
        "#XM SIMD floating point",
        "#VE virtualization exception",
        "#CP control protection",
        "reserved (22)",
        "reserved (23)",
        "reserved (24)",
        "reserved (25)",
        "reserved (26)",
        "reserved (27)",
        "#HV hypervisor injection",
        "#VC VMM communication",
        "#SX security exception",
        "reserved (31)",
    ];
    NAMES
        .get(vector as usize)
        .copied()
        .unwrap_or("unexpected interrupt")
}

/// What a fault inside [`catch_fault`] was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaughtFault {
    /// Exception vector.
    pub vector: u64,
    /// Error code pushed by the CPU (0 if none).
    pub error_code: u64,
    /// CR2 at the time of the fault (meaningful for #PF).
    pub cr2: u64,
    /// Whether CR2 lay in the guard page of a known stack.
    pub stack_guard_hit: bool,
}

static BREAKPOINTS: AtomicU64 = AtomicU64::new(0);

/// How many breakpoint exceptions were taken and returned from.
pub fn breakpoint_count() -> u64 {
    BREAKPOINTS.load(Ordering::SeqCst)
}

/// Runs `f(arg)` (on the stack whose top is `stack_top`, or the current one
/// if 0) and reports a CPU fault inside it as an error instead of ending the
/// VM. Used by tests that provoke faults on purpose.
///
/// Not reentrant: one armed call per CPU at a time.
pub fn catch_fault(f: extern "C" fn(usize), arg: usize, stack_top: u64) -> Result<(), CaughtFault> {
    let cpu = percpu::current();
    cpu.caught.lock().take();
    let slot = cpu.recovery_rsp.as_ptr();
    // SAFETY: catch_call saves the callee-saved registers and RSP in `slot`,
    // runs f on a stack the caller owns (or the current one), and returns
    // through the same frame whether f returns or the handler abandons it;
    // f is an ordinary extern "C" function.
    let faulted = unsafe { catch_call(arg, f, stack_top, slot) };
    cpu.recovery_rsp.store(0, Ordering::SeqCst);
    if faulted == 0 {
        Ok(())
    } else {
        Err(cpu.caught.lock().take().unwrap_or(CaughtFault {
            vector: 0xFF,
            error_code: 0,
            cr2: 0,
            stack_guard_hit: false,
        }))
    }
}

#[unsafe(no_mangle)]
extern "C" fn exception_handler(frame: &mut ExceptionFrame) {
    if frame.vector == vector::VMM_COMMUNICATION
        && let Some(handler) = VC_HANDLER.get()
        && handler(frame)
    {
        return;
    }
    if frame.vector == vector::BREAKPOINT {
        BREAKPOINTS.fetch_add(1, Ordering::SeqCst);
        log::debug!("breakpoint at {:#x}", frame.rip.wrapping_sub(1));
        return;
    }
    let cr2 = instr::read_cr2();
    let guard = if frame.vector == vector::PAGE_FAULT || frame.vector == vector::DOUBLE_FAULT {
        stack::guard_hit(cr2)
    } else {
        None
    };

    if let Some(cpu) = percpu::try_current() {
        let resume_rsp = cpu.recovery_rsp.load(Ordering::SeqCst);
        if resume_rsp != 0 {
            if let Some(mut caught) = cpu.caught.try_lock() {
                *caught = Some(CaughtFault {
                    vector: frame.vector,
                    error_code: frame.error_code,
                    cr2,
                    stack_guard_hit: guard.is_some(),
                });
            }
            cpu.recovery_rsp.store(0, Ordering::SeqCst);
            frame.rip = core::ptr::addr_of!(catch_landing) as u64;
            frame.rsp = resume_rsp;
            return;
        }
    }

    crate::console::enter_fatal();
    if let Some(name) = guard {
        crate::println!("FATAL: stack guard page hit: stack '{name}' overflowed (CR2={cr2:#018x})");
    }
    crate::println!("FATAL: {}", FatalReport { frame, cr2 });
    crate::fatal_exit();
}

struct FatalReport<'a> {
    frame: &'a ExceptionFrame,
    cr2: u64,
}

impl fmt::Display for FatalReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fr = self.frame;
        writeln!(
            f,
            "exception {} ({}) error_code={:#x}",
            fr.vector,
            vector_name(fr.vector),
            fr.error_code
        )?;
        writeln!(
            f,
            "  RIP={:#018x} CS={:#06x} RFLAGS={:#010x}",
            fr.rip, fr.cs, fr.rflags
        )?;
        writeln!(
            f,
            "  RSP={:#018x} SS={:#06x} CR2={:#018x}",
            fr.rsp, fr.ss, self.cr2
        )?;
        writeln!(
            f,
            "  RAX={:#018x} RBX={:#018x} RCX={:#018x} RDX={:#018x}",
            fr.rax, fr.rbx, fr.rcx, fr.rdx
        )?;
        writeln!(
            f,
            "  RSI={:#018x} RDI={:#018x} RBP={:#018x} R8 ={:#018x}",
            fr.rsi, fr.rdi, fr.rbp, fr.r8
        )?;
        writeln!(
            f,
            "  R9 ={:#018x} R10={:#018x} R11={:#018x} R12={:#018x}",
            fr.r9, fr.r10, fr.r11, fr.r12
        )?;
        write!(
            f,
            "  R13={:#018x} R14={:#018x} R15={:#018x}",
            fr.r13, fr.r14, fr.r15
        )
    }
}
