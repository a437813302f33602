//! The guest's console: COM1, which the SVSM lets it drive directly.

use core::fmt::{self, Write};

const COM1: u16 = 0x3F8;

struct Port;

fn outb(port: u16, v: u8) {
    // SAFETY: the SVSM passes COM1 through to this guest; writing its data
    // register only sends a byte.
    unsafe { core::arch::asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack)) }
}

fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: reading COM1's line status register has no side effect.
    unsafe { core::arch::asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack)) };
    v
}

impl Write for Port {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                send(b'\r');
            }
            send(b);
        }
        Ok(())
    }
}

fn send(b: u8) {
    for _ in 0..100_000 {
        if inb(COM1 + 5) & 0x20 != 0 {
            break;
        }
    }
    outb(COM1, b);
}

/// Prints formatted text.
pub fn print(args: fmt::Arguments<'_>) {
    let _ = Port.write_fmt(args);
}
