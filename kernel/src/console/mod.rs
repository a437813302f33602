//! The kernel's console: text goes to the platform's console (before a
//! platform is installed, straight to the serial port), and the `log`
//! crate's records are formatted onto it.

pub mod serial;

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

use spin::Mutex;

use serial::Serial16550;

static SERIAL: Mutex<Option<Serial16550>> = Mutex::new(None);
/// Where text goes before a platform is installed when the 16550 cannot be
/// touched directly (on TDX its port I/O raises #VE): a lock-free writer
/// the platform provides, e.g. port I/O through TDG.VP.VMCALL.
static EARLY_WRITER: spin::Once<fn(&[u8])> = spin::Once::new();
static LOGGER: Logger = Logger;
static PANICKING: AtomicBool = AtomicBool::new(false);

/// Brings up the serial console and installs the logger.
pub fn init(level: log::LevelFilter) {
    *SERIAL.lock() = Some(Serial16550::init(serial::COM1));
    // A second call (there is none) would only keep the first logger.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Installs the logger with `writer` as the console until a platform is
/// installed, without touching the 16550 (for platforms where direct port
/// I/O faults). `writer` must not take locks: fatal reports use it too.
pub fn init_with_writer(level: log::LevelFilter, writer: fn(&[u8])) {
    EARLY_WRITER.call_once(|| writer);
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Writes raw text to the console.
pub fn write_str(s: &str) {
    if PANICKING.load(Ordering::Relaxed) {
        // The lock may be held by the code that faulted: write around it.
        match EARLY_WRITER.get() {
            Some(write) => write(s.as_bytes()),
            None => Serial16550::init(serial::COM1).write_bytes(s.as_bytes()),
        }
        return;
    }
    if let Some(platform) = crate::platform::current() {
        platform.console_write(s.as_bytes());
    } else if let Some(write) = EARLY_WRITER.get() {
        write(s.as_bytes());
    } else if let Some(serial) = SERIAL.lock().as_ref() {
        serial.write_bytes(s.as_bytes());
    }
}

/// Switches the console to lock-free output for a fatal report.
pub fn enter_fatal() {
    PANICKING.store(true, Ordering::Relaxed);
}

struct ConsoleWriter;

impl Write for ConsoleWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_str(s);
        Ok(())
    }
}

/// Writes formatted text to the console.
pub fn write_fmt(args: fmt::Arguments<'_>) {
    // ConsoleWriter never fails.
    let _ = ConsoleWriter.write_fmt(args);
}

/// Prints to the console without a log prefix.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!($($arg)*)) };
}

/// Prints a line to the console without a log prefix.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            write_fmt(format_args!(
                "[{:<5}] {}: {}\n",
                record.level(),
                record.target(),
                record.args()
            ));
        }
    }

    fn flush(&self) {}
}
