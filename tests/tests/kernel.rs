//! The kernel under QEMU: it boots to its ready line, its in-kernel tests
//! all pass, and every bad boot input or CPU exception ends the VM with a
//! clear message and the failure code (never a silent reset).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use rivet_qemu::{Boot, Exit, KernelBuild, Outcome, median};

/// The in-kernel tests the image must report, all of them.
const KTESTS: [&str; 11] = [
    "boot_info_memory_map",
    "frame_allocator_alloc_free",
    "frame_allocator_contiguous",
    "heap_alloc_and_free",
    "paging_map_unmap_4k",
    "paging_map_2m",
    "image_is_w_xor_x",
    "exception_breakpoint_returns",
    "stack_guard_hit_reported",
    "percpu_boot_cpu",
    "platform_native",
];

fn kernel() -> &'static PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        KernelBuild::default()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    })
}

fn ktest_kernel() -> &'static PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        KernelBuild::ktest()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    })
}

fn ktest_kernel_release() -> &'static PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let build = KernelBuild {
            release: true,
            ..KernelBuild::ktest()
        };
        build.build().unwrap_or_else(|e| panic!("{e}"))
    })
}

fn boot(image: &PathBuf, append: &str) -> Outcome {
    Boot::new(image)
        .append(append)
        .timeout(Duration::from_secs(60))
        .run()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs boots in parallel (each QEMU is single-threaded TCG).
fn boots(image: &'static PathBuf, appends: &[&'static str]) -> Vec<(&'static str, Outcome)> {
    let handles: Vec<_> = appends
        .iter()
        .map(|&a| std::thread::spawn(move || (a, boot(image, a))))
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("boot thread"))
        .collect()
}

#[test]
fn kernel_boots_to_ready() {
    let image = kernel();
    let mut ready = Vec::new();
    for _ in 0..3 {
        let out = boot(image, "");
        assert_eq!(
            out.exit,
            Exit::Success,
            "serial:\n{}\nstderr:\n{}",
            out.serial,
            out.stderr
        );
        let t = out
            .ready_after
            .unwrap_or_else(|| panic!("no ready line:\n{}", out.serial));
        assert!(out.serial.contains("platform: Native"), "{}", out.serial);
        ready.push(t);
    }
    let size = std::fs::metadata(image).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "kernel image {} bytes; boot-to-ready median {:?} over {} boots",
        size,
        median(ready.clone()).expect("three samples"),
        ready.len()
    );
}

#[test]
fn in_kernel_tests_all_pass() {
    check_ktests(ktest_kernel());
}

/// The optimiser is free to exploit undefined behaviour (a register clash in
/// inline assembly, say) that a debug build hides: run the tests optimised too.
#[test]
fn in_kernel_tests_all_pass_optimised() {
    check_ktests(ktest_kernel_release());
}

fn check_ktests(image: &PathBuf) {
    let out = boot(image, "");
    let mut missing = Vec::new();
    for name in KTESTS {
        let line = out
            .lines_starting("ktest: ")
            .find(|l| l.starts_with(&format!("ktest: {name} ... ")));
        match line {
            Some(l) if l.ends_with("... ok") => {}
            Some(l) => panic!("in-kernel test failed: {l}\n{}", out.serial),
            None => missing.push(name),
        }
    }
    assert!(
        missing.is_empty(),
        "no result for {missing:?}:\n{}",
        out.serial
    );
    let reported = out
        .lines_starting("ktest: ")
        .filter(|l| l.contains(" ... "))
        .count();
    assert_eq!(
        reported,
        KTESTS.len(),
        "unexpected extra results:\n{}",
        out.serial
    );
    assert!(
        out.serial
            .contains(&format!("ktest: result: {} passed, 0 failed", KTESTS.len())),
        "{}",
        out.serial
    );
    assert_eq!(out.exit, Exit::Success, "{}", out.serial);
}

#[test]
fn bad_boot_information_is_a_clear_fatal_error() {
    let cases = [
        (
            "rivet.inject=no-start-info",
            "FATAL: boot info: no PVH start info",
        ),
        (
            "rivet.inject=bad-magic",
            "FATAL: boot info: PVH start info has magic 0x1badb002",
        ),
        (
            "rivet.inject=no-memmap",
            "FATAL: boot info: PVH memory map absent",
        ),
        (
            "rivet.inject=empty-memmap",
            "FATAL: boot info: PVH memory map is empty",
        ),
        (
            "rivet.inject=huge-memmap",
            "FATAL: boot info: PVH memory map has 100000 entries, the kernel tracks at most 128",
        ),
        (
            "rivet.inject=overlap-memmap",
            "FATAL: boot info: memory map entries 0 and 1 overlap",
        ),
    ];
    let appends: Vec<&'static str> = cases.iter().map(|c| c.0).collect();
    for (append, out) in boots(ktest_kernel(), &appends) {
        let want = cases.iter().find(|c| c.0 == append).expect("case").1;
        assert!(
            out.serial.contains(want),
            "{append}: expected {want:?} in:\n{}",
            out.serial
        );
        assert_eq!(out.exit, Exit::Failure, "{append}:\n{}", out.serial);
        assert!(
            out.ready_after.is_none() && !out.serial.contains("ktest:"),
            "{append} went on booting"
        );
    }
}

#[test]
fn exceptions_are_reported_then_fail() {
    let cases = [
        (
            "rivet.inject=invalid-opcode",
            "FATAL: exception 6 (#UD invalid opcode) error_code=0x0",
        ),
        (
            "rivet.inject=stack-overflow",
            "FATAL: stack guard page hit: stack 'boot' overflowed",
        ),
        ("rivet.inject=panic", "FATAL: kernel panic: panicked at"),
    ];
    let appends: Vec<&'static str> = cases.iter().map(|c| c.0).collect();
    for (append, out) in boots(ktest_kernel(), &appends) {
        let want = cases.iter().find(|c| c.0 == append).expect("case").1;
        assert!(
            out.serial.contains(want),
            "{append}: expected {want:?} in:\n{}",
            out.serial
        );
        if append != "rivet.inject=panic" {
            for field in ["RIP=", "CR2=", "RSP=", "RAX=", "R15=", "error_code="] {
                assert!(
                    out.serial.contains(field),
                    "{append}: no {field} in the report:\n{}",
                    out.serial
                );
            }
        }
        assert_eq!(out.exit, Exit::Failure, "{append}:\n{}", out.serial);
    }
}
