//! The one error type of the image builder: every bad input ends here, as a
//! value with a message that names the input and the address at fault.

use core::fmt;

/// Why an image could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// The kernel file is empty.
    EmptyKernel,
    /// The kernel is not a little-endian x86-64 ELF64 executable.
    NotElf(&'static str),
    /// A header or segment of the kernel ELF lies outside the file or wraps.
    TruncatedElf(&'static str),
    /// The kernel ELF has no PT_LOAD segment with memory.
    NoLoadableSegment,
    /// The kernel's entry point is not inside one of its loaded pages.
    EntryOutsideImage {
        /// The entry address from the ELF header.
        entry: u64,
    },
    /// The kernel's entry point is above 4 GiB: the 32-bit entry cannot reach it.
    EntryNot32Bit {
        /// The entry address from the ELF header.
        entry: u64,
    },
    /// The guest firmware file is empty.
    EmptyFirmware,
    /// The guest firmware is not a whole number of 4 KiB pages or too big to sit under 4 GiB.
    BadFirmwareSize {
        /// Its size in bytes.
        size: u64,
    },
    /// The guest firmware's SEV metadata is malformed.
    BadFirmwareMetadata(&'static str),
    /// Two things would occupy the same guest-physical page.
    Overlap {
        /// The first claimant.
        first: String,
        /// The second claimant.
        second: String,
        /// The first page both claim.
        gpa: u64,
    },
    /// A requested size or address is unusable.
    BadParameter(String),
    /// The `igvm` crate refused the file (a builder bug if it happens).
    Igvm(String),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyKernel => write!(f, "the kernel file is empty"),
            Self::NotElf(why) => write!(f, "the kernel is not an x86-64 ELF64 executable: {why}"),
            Self::TruncatedElf(what) => write!(f, "the kernel ELF is truncated or corrupt: {what}"),
            Self::NoLoadableSegment => {
                write!(f, "the kernel ELF has no loadable (PT_LOAD) segment")
            }
            Self::EntryOutsideImage { entry } => {
                write!(
                    f,
                    "the kernel entry point {entry:#x} is not inside a loaded segment"
                )
            }
            Self::EntryNot32Bit { entry } => write!(
                f,
                "the kernel entry point {entry:#x} is above 4 GiB; the 32-bit entry cannot reach it"
            ),
            Self::EmptyFirmware => write!(f, "the guest firmware file is empty"),
            Self::BadFirmwareSize { size } => write!(
                f,
                "the guest firmware is {size:#x} bytes: it must be a non-zero multiple of 4 KiB and fit below 4 GiB"
            ),
            Self::BadFirmwareMetadata(why) => {
                write!(f, "the guest firmware's SEV metadata is malformed: {why}")
            }
            Self::Overlap { first, second, gpa } => write!(
                f,
                "{first} and {second} overlap at guest-physical page {gpa:#x}"
            ),
            Self::BadParameter(why) => write!(f, "{why}"),
            Self::Igvm(why) => write!(f, "the igvm crate rejected the image: {why}"),
        }
    }
}

impl std::error::Error for BuildError {}
