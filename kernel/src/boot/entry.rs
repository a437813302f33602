//! The first instructions: the PVH entry point (32-bit protected mode, paging
//! off, EBX = physical address of the `hvm_start_info`), the switch to long
//! mode on an identity map of the low 4 GiB, and the call into Rust.
//!
//! Nothing here touches memory outside the kernel image except the start-info
//! pointer, which is passed on (an IGVM launch-info page on SNP is read for
//! the CPUID page's C-bit position, see below).

core::arch::global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .p2align 2
    .long 4                 /* namesz: "Xen\0" */
    .long 4                 /* descsz */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long pvh_entry32
    .p2align 2

    .section .data.boot_tables, "aw"
    .p2align 12
boot_pml4:
    .quad boot_pdpt + 0x3
    .fill 511, 8, 0
boot_pdpt:
    .quad boot_pd + 0x3
    .quad boot_pd + 0x1003
    .quad boot_pd + 0x2003
    .quad boot_pd + 0x3003
    .quad boot_pd_shared + 0x3  /* 4 GiB: the SNP shared window (GHCB) */
    .fill 507, 8, 0
boot_pd_shared:
    .quad boot_pt_shared + 0x3
    .fill 511, 8, 0
    .global boot_pt_shared
boot_pt_shared:
    /* Filled by the SNP platform (C-bit clear); empty otherwise. */
    .fill 512, 8, 0
boot_pd:
    /* 2048 present, writable 2 MiB pages: identity map of 0..4 GiB. */
    .set boot_page, 0
    .rept 2048
    .quad (boot_page << 21) | 0x83
    .set boot_page, boot_page + 1
    .endr

    .section .rodata.boot_gdt, "a"
    .p2align 3
boot_gdt:
    .quad 0
    /* Accessed bits preset: the CPU would otherwise write them into this
       read-only table (and change the image it measures). */
    .quad 0x00af9b000000ffff    /* 0x08: 64-bit code, DPL 0 */
    .quad 0x00cf93000000ffff    /* 0x10: data, DPL 0 */
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .text.boot, "ax"
    .code32
    .global pvh_entry32
pvh_entry32:
    cli
    cld
    mov %ebx, %esi              /* start info: kept in ESI */

    /* Zero .bss (the loader may not). */
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb

    /* IGVM launch on SEV-SNP (launch-info magic "RIVETLI\0", platform
       1): the leaf entries of the boot map need the C-bit, or every data
       access would be shared. Its position comes from the CPUID page the PSP
       checked (Fn8000_001F EBX[5:0]); the CPUID instruction would raise a
       #VC here. Page-table walks and instruction fetches are private anyway.
       A PVH start info never matches, so native boot is unchanged. */
    cmpl $0x45564952, (%esi)
    jne 3f
    cmpl $0x00494c54, 4(%esi)
    jne 3f
    cmpl $1, 0xc(%esi)
    jne 3f
    mov 0x50(%esi), %edx        /* the CPUID page (below 4 GiB) */
    mov (%edx), %ecx            /* entries */
    cmp $64, %ecx
    ja 3f
    add $16, %edx
1:  test %ecx, %ecx
    jz 3f
    cmpl $0x8000001f, (%edx)
    je 2f
    add $0x30, %edx
    dec %ecx
    jmp 1b
2:  mov 0x1c(%edx), %ecx        /* EBX out */
    and $0x3f, %ecx
    sub $32, %ecx
    jb 3f
    mov $1, %eax
    shl %cl, %eax               /* the C-bit in an entry's upper half */
    mov $boot_pd, %edi
    mov $2048, %ecx
4:  or %eax, 4(%edi)
    add $8, %edi
    dec %ecx
    jnz 4b
3:
    /* PAE, then the boot page tables. */
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3

    /* EFER: long mode enable. NXE is set later, once CPUID says NX exists. */
    mov $0xC0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr

    /* Paging, write protect, protected mode. */
    mov %cr0, %eax
    or $0x80010001, %eax
    mov %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x08, $pvh_entry64

    .code64
pvh_entry64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    mov $__boot_stack_top, %rsp
    xor %ebp, %ebp
    mov %esi, %edi              /* zero-extends: first argument */
    call kernel_start
1:  cli
    hlt
    jmp 1b
"#,
    options(att_syntax)
);
