//! The 16550 UART at COM1 (port 0x3F8), polled, 115200 8N1.

use crate::cpu::instr::{inb, outb};

/// A 16550-compatible UART driven by port I/O.
pub struct Serial16550 {
    base: u16,
}

/// COM1.
pub const COM1: u16 = 0x3F8;

const DATA: u16 = 0;
const INTERRUPT_ENABLE: u16 = 1;
const FIFO_CONTROL: u16 = 2;
const LINE_CONTROL: u16 = 3;
const MODEM_CONTROL: u16 = 4;
const LINE_STATUS: u16 = 5;
const LINE_STATUS_THR_EMPTY: u8 = 0x20;

impl Serial16550 {
    /// Programs the UART: no interrupts, 115200 baud, 8N1, FIFOs on.
    pub fn init(base: u16) -> Self {
        // SAFETY: these are the UART's own registers; programming them has no
        // effect outside the UART.
        unsafe {
            outb(base + INTERRUPT_ENABLE, 0x00);
            outb(base + LINE_CONTROL, 0x80); // DLAB on
            outb(base + DATA, 0x01); // divisor 1: 115200 baud
            outb(base + INTERRUPT_ENABLE, 0x00);
            outb(base + LINE_CONTROL, 0x03); // 8N1, DLAB off
            outb(base + FIFO_CONTROL, 0xC7);
            outb(base + MODEM_CONTROL, 0x03);
        }
        Self { base }
    }

    /// Sends one byte, waiting (boundedly) for the transmitter.
    pub fn write_byte(&self, byte: u8) {
        for _ in 0..100_000 {
            // SAFETY: reading the line status register has no side effect.
            if unsafe { inb(self.base + LINE_STATUS) } & LINE_STATUS_THR_EMPTY != 0 {
                break;
            }
        }
        // SAFETY: writing the data register sends the byte.
        unsafe { outb(self.base + DATA, byte) }
    }

    /// Sends bytes, turning `\n` into `\r\n`.
    pub fn write_bytes(&self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
    }
}
