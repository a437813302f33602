//! The PVH boot protocol's start info (`hvm_start_info`, version 1): the
//! memory map and the command line, read once through [`PhysMemory`] and
//! validated before the kernel trusts any of it.

use crate::mm::{PhysAddr, PhysRange};

/// `hvm_start_info.magic`.
pub const START_INFO_MAGIC: u32 = 0x336E_C578;
/// Memory-map entries the kernel can track.
pub const MAX_MEMMAP_ENTRIES: usize = 128;
/// Highest RAM address the kernel can track (64 GiB).
pub const MAX_TRACKABLE_ADDR: u64 = 64 << 30;
/// Longest command line kept.
pub const MAX_CMDLINE: usize = 256;
/// Boot modules (e.g. the guest firmware) the kernel keeps track of.
pub const MAX_MODULES: usize = 4;

const START_INFO_SIZE: usize = 56;
const MEMMAP_ENTRY_SIZE: usize = 24;
const MODULE_ENTRY_SIZE: usize = 32;

/// Byte offsets in `hvm_start_info`.
pub mod offset {
    /// u32 magic.
    pub const MAGIC: u64 = 0;
    /// u32 version.
    pub const VERSION: u64 = 4;
    /// u32 number of modules.
    pub const NR_MODULES: u64 = 12;
    /// u64 module list address.
    pub const MODLIST: u64 = 16;
    /// u64 command line address.
    pub const CMDLINE: u64 = 24;
    /// u64 RSDP address.
    pub const RSDP: u64 = 32;
    /// u64 memory map address.
    pub const MEMMAP: u64 = 40;
    /// u32 memory map entry count.
    pub const MEMMAP_ENTRIES: u64 = 48;
}

/// Bytes the boot code may not read (outside the memory it can reach).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unreadable;

/// Read access to physical memory during boot.
pub trait PhysMemory {
    /// Copies `buf.len()` bytes at `addr`, or fails if they are not readable.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Unreadable>;
}

/// What a memory-map entry describes (`XEN_HVM_MEMMAP_TYPE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    /// Usable RAM (1).
    Ram,
    /// Reserved (2).
    Reserved,
    /// ACPI tables, reclaimable (3).
    Acpi,
    /// ACPI non-volatile storage (4).
    Nvs,
    /// Any other type.
    Other(u32),
}

impl MemoryKind {
    fn from_raw(t: u32) -> Self {
        match t {
            1 => Self::Ram,
            2 => Self::Reserved,
            3 => Self::Acpi,
            4 => Self::Nvs,
            t => Self::Other(t),
        }
    }
}

/// One validated memory-map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// The range.
    pub range: PhysRange,
    /// Its kind.
    pub kind: MemoryKind,
}

/// Why the start info was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// The start-info pointer is 0: the loader passed none.
    NoStartInfo,
    /// The start info could not be read at its address.
    Unreadable(u64),
    /// The magic number is wrong: this is not a PVH start info.
    BadMagic(u32),
    /// Version 0 carries no memory map.
    NoMemoryMap {
        /// The version found.
        version: u32,
    },
    /// The memory map pointer is 0.
    MemoryMapAbsent,
    /// The memory map has no entries.
    MemoryMapEmpty,
    /// More entries than the kernel can track.
    TooManyEntries(u32),
    /// An entry's end overflows.
    EntryWraps {
        /// Entry index.
        index: usize,
    },
    /// Two entries overlap.
    Overlap {
        /// First entry index.
        first: usize,
        /// Second entry index.
        second: usize,
    },
    /// No usable RAM in the map.
    NoUsableRam,
    /// RAM beyond what the kernel can track.
    BeyondTrackable {
        /// End of the offending RAM entry.
        end: u64,
    },
    /// More boot modules than the kernel keeps.
    TooManyModules(u32),
    /// A module's range is empty or wraps around.
    BadModule {
        /// Module index.
        index: usize,
    },
}

impl core::fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoStartInfo => write!(f, "no PVH start info (pointer is 0)"),
            Self::Unreadable(a) => write!(f, "PVH start info or memory map unreadable at {a:#x}"),
            Self::BadMagic(m) => write!(
                f,
                "PVH start info has magic {m:#010x}, expected {START_INFO_MAGIC:#010x}"
            ),
            Self::NoMemoryMap { version } => {
                write!(f, "PVH start info version {version} has no memory map")
            }
            Self::MemoryMapAbsent => write!(f, "PVH memory map absent (pointer is 0)"),
            Self::MemoryMapEmpty => write!(f, "PVH memory map is empty"),
            Self::TooManyEntries(n) => write!(
                f,
                "PVH memory map has {n} entries, the kernel tracks at most {MAX_MEMMAP_ENTRIES}"
            ),
            Self::EntryWraps { index } => write!(f, "memory map entry {index} wraps around"),
            Self::Overlap { first, second } => {
                write!(f, "memory map entries {first} and {second} overlap")
            }
            Self::NoUsableRam => write!(f, "memory map has no usable RAM"),
            Self::BeyondTrackable { end } => write!(
                f,
                "RAM up to {end:#x} is beyond what the kernel tracks ({MAX_TRACKABLE_ADDR:#x})"
            ),
            Self::TooManyModules(n) => {
                write!(
                    f,
                    "{n} boot modules, the kernel keeps at most {MAX_MODULES}"
                )
            }
            Self::BadModule { index } => write!(f, "boot module {index} is empty or wraps"),
        }
    }
}

/// The validated boot information.
#[derive(Clone, Debug)]
pub struct BootInfo {
    regions: [MemoryRegion; MAX_MEMMAP_ENTRIES],
    count: usize,
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
    modules: [PhysRange; MAX_MODULES],
    module_count: usize,
    /// ACPI RSDP address (0 if none).
    pub rsdp: u64,
}

impl BootInfo {
    /// All memory-map entries, in address order.
    pub fn regions(&self) -> &[MemoryRegion] {
        &self.regions[..self.count]
    }

    /// The usable RAM ranges.
    pub fn ram(&self) -> impl Iterator<Item = PhysRange> + '_ {
        self.regions()
            .iter()
            .filter(|r| r.kind == MemoryKind::Ram)
            .map(|r| r.range)
    }

    /// The boot modules (QEMU passes `-initrd` as module 0).
    pub fn modules(&self) -> &[PhysRange] {
        &self.modules[..self.module_count]
    }

    /// Boot information from an already validated memory map (sorted here),
    /// with no command line and no modules; None if it holds no RAM or more
    /// entries than the kernel tracks.
    pub fn from_regions(regions: &[MemoryRegion]) -> Option<Self> {
        if regions.len() > MAX_MEMMAP_ENTRIES {
            return None;
        }
        let empty = MemoryRegion {
            range: PhysRange::new(PhysAddr(0), PhysAddr(0)),
            kind: MemoryKind::Reserved,
        };
        let mut info = BootInfo {
            regions: [empty; MAX_MEMMAP_ENTRIES],
            count: regions.len(),
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
            modules: [PhysRange::new(PhysAddr(0), PhysAddr(0)); MAX_MODULES],
            module_count: 0,
            rsdp: 0,
        };
        info.regions[..regions.len()].copy_from_slice(regions);
        info.regions[..regions.len()].sort_unstable_by_key(|r| r.range.start);
        let has_ram = info.ram().next().is_some();
        has_ram.then_some(info)
    }

    /// The kernel command line (lossy: invalid UTF-8 gives "").
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }
}

fn read_u64(mem: &impl PhysMemory, addr: u64) -> Result<u64, BootInfoError> {
    let mut b = [0; 8];
    mem.read(addr, &mut b)
        .map_err(|Unreadable| BootInfoError::Unreadable(addr))?;
    Ok(u64::from_le_bytes(b))
}

/// Reads the command line only (best effort, for early options).
pub fn read_cmdline(start_info: u64, mem: &impl PhysMemory, out: &mut [u8; MAX_CMDLINE]) -> usize {
    if start_info == 0 {
        return 0;
    }
    let Ok(ptr) = read_u64(mem, start_info + offset::CMDLINE) else {
        return 0;
    };
    if ptr == 0 {
        return 0;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        let mut b = [0];
        if mem.read(ptr + i as u64, &mut b).is_err() || b[0] == 0 {
            return i;
        }
        *byte = b[0];
    }
    MAX_CMDLINE
}

/// Reads and validates the start info at `start_info`.
pub fn parse(start_info: u64, mem: &impl PhysMemory) -> Result<BootInfo, BootInfoError> {
    if start_info == 0 {
        return Err(BootInfoError::NoStartInfo);
    }
    let mut raw = [0u8; START_INFO_SIZE];
    mem.read(start_info, &mut raw)
        .map_err(|Unreadable| BootInfoError::Unreadable(start_info))?;
    let u32_at =
        |o: u64| u32::from_le_bytes(raw[o as usize..o as usize + 4].try_into().unwrap_or([0; 4]));
    let u64_at =
        |o: u64| u64::from_le_bytes(raw[o as usize..o as usize + 8].try_into().unwrap_or([0; 8]));

    let magic = u32_at(offset::MAGIC);
    if magic != START_INFO_MAGIC {
        return Err(BootInfoError::BadMagic(magic));
    }
    let version = u32_at(offset::VERSION);
    if version < 1 {
        return Err(BootInfoError::NoMemoryMap { version });
    }
    let memmap = u64_at(offset::MEMMAP);
    let entries = u32_at(offset::MEMMAP_ENTRIES);
    if memmap == 0 {
        return Err(BootInfoError::MemoryMapAbsent);
    }
    if entries == 0 {
        return Err(BootInfoError::MemoryMapEmpty);
    }
    if entries as usize > MAX_MEMMAP_ENTRIES {
        return Err(BootInfoError::TooManyEntries(entries));
    }

    let empty = MemoryRegion {
        range: PhysRange::new(PhysAddr(0), PhysAddr(0)),
        kind: MemoryKind::Reserved,
    };
    let mut info = BootInfo {
        regions: [empty; MAX_MEMMAP_ENTRIES],
        count: 0,
        cmdline: [0; MAX_CMDLINE],
        cmdline_len: 0,
        modules: [PhysRange::new(PhysAddr(0), PhysAddr(0)); MAX_MODULES],
        module_count: 0,
        rsdp: u64_at(offset::RSDP),
    };
    let mut count = 0;
    for index in 0..entries as usize {
        let at = memmap + (index * MEMMAP_ENTRY_SIZE) as u64;
        let mut e = [0u8; MEMMAP_ENTRY_SIZE];
        mem.read(at, &mut e)
            .map_err(|Unreadable| BootInfoError::Unreadable(at))?;
        let addr = u64::from_le_bytes(e[0..8].try_into().unwrap_or([0; 8]));
        let size = u64::from_le_bytes(e[8..16].try_into().unwrap_or([0; 8]));
        let kind = MemoryKind::from_raw(u32::from_le_bytes(e[16..20].try_into().unwrap_or([0; 4])));
        let end = addr
            .checked_add(size)
            .ok_or(BootInfoError::EntryWraps { index })?;
        if size == 0 {
            continue; // says nothing
        }
        if kind == MemoryKind::Ram && end > MAX_TRACKABLE_ADDR {
            return Err(BootInfoError::BeyondTrackable { end });
        }
        let range = PhysRange::new(PhysAddr(addr), PhysAddr(end));
        if let Some(first) = info.regions[..count]
            .iter()
            .position(|r| r.range.overlaps(&range))
        {
            return Err(BootInfoError::Overlap {
                first,
                second: index,
            });
        }
        info.regions[count] = MemoryRegion { range, kind };
        count += 1;
    }
    info.count = count;
    info.regions[..count].sort_unstable_by_key(|r| r.range.start);
    if info.ram().next().is_none() {
        return Err(BootInfoError::NoUsableRam);
    }
    let modules = u32_at(offset::NR_MODULES);
    let modlist = u64_at(offset::MODLIST);
    if modules as usize > MAX_MODULES {
        return Err(BootInfoError::TooManyModules(modules));
    }
    for index in 0..modules as usize {
        let at = modlist + (index * MODULE_ENTRY_SIZE) as u64;
        let addr = read_u64(mem, at)?;
        let size = read_u64(mem, at + 8)?;
        let end = addr
            .checked_add(size)
            .ok_or(BootInfoError::BadModule { index })?;
        if size == 0 || addr == 0 {
            return Err(BootInfoError::BadModule { index });
        }
        info.modules[index] = PhysRange::new(PhysAddr(addr), PhysAddr(end));
    }
    info.module_count = modules as usize;
    info.cmdline_len = read_cmdline(start_info, mem, &mut info.cmdline);
    Ok(info)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    /// Sparse fake physical memory.
    #[derive(Default)]
    struct Fake(BTreeMap<u64, u8>);

    impl Fake {
        fn put(&mut self, addr: u64, bytes: &[u8]) {
            for (i, b) in bytes.iter().enumerate() {
                self.0.insert(addr + i as u64, *b);
            }
        }
    }

    impl PhysMemory for Fake {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Unreadable> {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = *self.0.get(&(addr + i as u64)).ok_or(Unreadable)?;
            }
            Ok(())
        }
    }

    const SI: u64 = 0x6000;
    const MAP: u64 = 0x7000;
    const CMD: u64 = 0x8000;

    fn image(entries: &[(u64, u64, u32)], count: u32, magic: u32, version: u32, map: u64) -> Fake {
        let mut si = Vec::new();
        si.extend(magic.to_le_bytes());
        si.extend(version.to_le_bytes());
        si.extend(0u32.to_le_bytes()); // flags
        si.extend(0u32.to_le_bytes()); // nr_modules
        si.extend(0u64.to_le_bytes()); // modlist
        si.extend(CMD.to_le_bytes());
        si.extend(0xE0000u64.to_le_bytes()); // rsdp
        si.extend(map.to_le_bytes());
        si.extend(count.to_le_bytes());
        si.extend(0u32.to_le_bytes());
        assert_eq!(si.len(), START_INFO_SIZE);
        let mut m = Fake::default();
        m.put(SI, &si);
        for (i, (a, s, t)) in entries.iter().enumerate() {
            let mut e = Vec::new();
            e.extend(a.to_le_bytes());
            e.extend(s.to_le_bytes());
            e.extend(t.to_le_bytes());
            e.extend(0u32.to_le_bytes());
            m.put(MAP + (i * MEMMAP_ENTRY_SIZE) as u64, &e);
        }
        m.put(CMD, b"console=ttyS0 rivet.test\0");
        m
    }

    fn qemu_like() -> [(u64, u64, u32); 3] {
        [
            (0x10_0000, 0x7F0_0000, 1),
            (0, 0x9FC00, 1),
            (0xFEFFC000, 0x4000, 2),
        ]
    }

    #[test]
    fn parses_a_good_map_sorted_with_cmdline() {
        let m = image(&qemu_like(), 3, START_INFO_MAGIC, 1, MAP);
        let info = parse(SI, &m).unwrap();
        assert_eq!(info.regions().len(), 3);
        assert_eq!(info.regions()[0].range.start, PhysAddr(0));
        assert_eq!(info.ram().count(), 2);
        assert_eq!(info.cmdline(), "console=ttyS0 rivet.test");
        assert_eq!(info.rsdp, 0xE0000);
    }

    #[test]
    fn refuses_each_bad_input() {
        let good = qemu_like();
        let cases: [(Fake, u64, BootInfoError); 9] = [
            (
                image(&good, 3, START_INFO_MAGIC, 1, MAP),
                0,
                BootInfoError::NoStartInfo,
            ),
            (
                image(&good, 3, 0xDEADBEEF, 1, MAP),
                SI,
                BootInfoError::BadMagic(0xDEADBEEF),
            ),
            (
                image(&good, 3, START_INFO_MAGIC, 0, MAP),
                SI,
                BootInfoError::NoMemoryMap { version: 0 },
            ),
            (
                image(&good, 3, START_INFO_MAGIC, 1, 0),
                SI,
                BootInfoError::MemoryMapAbsent,
            ),
            (
                image(&good, 0, START_INFO_MAGIC, 1, MAP),
                SI,
                BootInfoError::MemoryMapEmpty,
            ),
            (
                image(&good, 129, START_INFO_MAGIC, 1, MAP),
                SI,
                BootInfoError::TooManyEntries(129),
            ),
            (
                image(
                    &[(0, 0x20_0000, 1), (0x10_0000, 0x10_0000, 1)],
                    2,
                    START_INFO_MAGIC,
                    1,
                    MAP,
                ),
                SI,
                BootInfoError::Overlap {
                    first: 0,
                    second: 1,
                },
            ),
            (
                image(&[(0x1000, 0x1000, 2)], 1, START_INFO_MAGIC, 1, MAP),
                SI,
                BootInfoError::NoUsableRam,
            ),
            (
                image(&[(0, 65 << 30, 1)], 1, START_INFO_MAGIC, 1, MAP),
                SI,
                BootInfoError::BeyondTrackable { end: 65 << 30 },
            ),
        ];
        for (mem, si, want) in cases {
            assert_eq!(parse(si, &mem).err(), Some(want));
        }
    }

    #[test]
    fn refuses_wrapping_and_unreadable() {
        let m = image(&[(u64::MAX - 10, 100, 1)], 1, START_INFO_MAGIC, 1, MAP);
        assert_eq!(
            parse(SI, &m).err(),
            Some(BootInfoError::EntryWraps { index: 0 })
        );
        // Claims 3 entries, only 2 present in memory.
        let m = image(&qemu_like()[..2], 3, START_INFO_MAGIC, 1, MAP);
        assert_eq!(
            parse(SI, &m).err(),
            Some(BootInfoError::Unreadable(
                MAP + 2 * MEMMAP_ENTRY_SIZE as u64
            ))
        );
        assert_eq!(
            parse(0x1234, &m).err(),
            Some(BootInfoError::Unreadable(0x1234))
        );
    }

    #[test]
    fn exactly_max_entries_is_fine() {
        let entries: Vec<_> = (0..MAX_MEMMAP_ENTRIES as u64)
            .map(|i| (i * 0x10000, 0x10000, 1))
            .collect();
        let m = image(
            &entries,
            MAX_MEMMAP_ENTRIES as u32,
            START_INFO_MAGIC,
            1,
            MAP,
        );
        assert_eq!(parse(SI, &m).unwrap().regions().len(), MAX_MEMMAP_ENTRIES);
    }
}
