//! The TCG reference TPM 2.0 as Debian ships it (libtpms 0.9), behind a safe
//! handle, for differential tests of the Rivet engine and to check that the
//! test suites themselves expect what the reference does.
//!
//! libtpms is one TPM per process with global state: [`Reference`] is a
//! process-wide exclusive handle (a second `new` waits for the first to
//! drop), and its NVRAM lives in memory in this module.

use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_int};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

type TpmResult = u32;
const TPM_SUCCESS: TpmResult = 0;
const TPM_FAIL: TpmResult = 9;
/// "Not found": tells libtpms to manufacture a fresh TPM.
const TPM_RETRY: TpmResult = 0x800;
const TPMLIB_TPM_VERSION_2: c_int = 1;

/// `struct libtpms_callbacks` from `<libtpms/tpm_library.h>`.
#[repr(C)]
struct Callbacks {
    size_of_struct: c_int,
    nvram_init: Option<extern "C" fn() -> TpmResult>,
    nvram_loaddata:
        Option<unsafe extern "C" fn(*mut *mut u8, *mut u32, u32, *const c_char) -> TpmResult>,
    nvram_storedata: Option<unsafe extern "C" fn(*const u8, u32, u32, *const c_char) -> TpmResult>,
    nvram_deletename: Option<unsafe extern "C" fn(u32, *const c_char, u8) -> TpmResult>,
    io_init: Option<extern "C" fn() -> TpmResult>,
    io_getlocality: Option<unsafe extern "C" fn(*mut u32, u32) -> TpmResult>,
    io_getphysicalpresence: Option<unsafe extern "C" fn(*mut u8, u32) -> TpmResult>,
}

unsafe extern "C" {
    fn TPMLIB_ChooseTPMVersion(ver: c_int) -> TpmResult;
    fn TPMLIB_RegisterCallbacks(callbacks: *mut Callbacks) -> TpmResult;
    fn TPMLIB_MainInit() -> TpmResult;
    fn TPMLIB_Terminate();
    fn TPMLIB_Process(
        respbuffer: *mut *mut u8,
        resp_size: *mut u32,
        respbufsize: *mut u32,
        command: *mut u8,
        command_size: u32,
    ) -> TpmResult;
    fn TPM_Malloc(buffer: *mut *mut u8, size: u32) -> TpmResult;
    fn TPM_Free(buffer: *mut u8);
}

/// The reference's NVRAM: file name ("permall", "volatilestate", ...) to bytes.
static NVRAM: Mutex<Option<HashMap<String, Vec<u8>>>> = Mutex::new(None);
/// Set when libtpms stores anything, so a server can persist it.
static NV_DIRTY: AtomicBool = AtomicBool::new(false);
static LOCALITY: AtomicU8 = AtomicU8::new(0);
static IN_USE: Mutex<bool> = Mutex::new(false);
static RELEASED: Condvar = Condvar::new();

fn nvram() -> MutexGuard<'static, Option<HashMap<String, Vec<u8>>>> {
    NVRAM.lock().unwrap_or_else(PoisonError::into_inner)
}

/// # Safety
/// `name` must be a NUL-terminated string, as libtpms passes.
unsafe fn name_of(name: *const c_char) -> String {
    // SAFETY: the caller guarantees a valid C string.
    unsafe { CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned()
}

extern "C" fn ok() -> TpmResult {
    TPM_SUCCESS
}

unsafe extern "C" fn load(
    data: *mut *mut u8,
    length: *mut u32,
    _tpm_number: u32,
    name: *const c_char,
) -> TpmResult {
    // SAFETY: libtpms passes a valid C string.
    let name = unsafe { name_of(name) };
    let store = nvram();
    let Some(bytes) = store.as_ref().and_then(|m| m.get(&name)) else {
        return TPM_RETRY;
    };
    let Ok(len) = u32::try_from(bytes.len()) else {
        return TPM_FAIL;
    };
    let mut buf = ptr::null_mut();
    // SAFETY: TPM_Malloc writes a fresh allocation of `len` bytes (which
    // libtpms later frees with TPM_Free) to the valid out-pointer `buf`.
    if unsafe { TPM_Malloc(&mut buf, len.max(1)) } != TPM_SUCCESS {
        return TPM_FAIL;
    }
    // SAFETY: `buf` holds at least `len` bytes and does not overlap `bytes`;
    // `data` and `length` are valid out-pointers from libtpms.
    unsafe {
        ptr::copy_nonoverlapping(bytes.as_ptr(), buf, bytes.len());
        *data = buf;
        *length = len;
    }
    TPM_SUCCESS
}

unsafe extern "C" fn store(
    data: *const u8,
    length: u32,
    _tpm_number: u32,
    name: *const c_char,
) -> TpmResult {
    // SAFETY: libtpms passes a valid C string.
    let name = unsafe { name_of(name) };
    let bytes = if length == 0 {
        Vec::new()
    } else {
        // SAFETY: libtpms passes `length` readable bytes at `data`.
        unsafe { std::slice::from_raw_parts(data, length as usize) }.to_vec()
    };
    nvram().get_or_insert_with(HashMap::new).insert(name, bytes);
    NV_DIRTY.store(true, Ordering::SeqCst);
    TPM_SUCCESS
}

unsafe extern "C" fn delete(_tpm_number: u32, name: *const c_char, must_exist: u8) -> TpmResult {
    // SAFETY: libtpms passes a valid C string.
    let name = unsafe { name_of(name) };
    let removed = nvram()
        .get_or_insert_with(HashMap::new)
        .remove(&name)
        .is_some();
    NV_DIRTY.store(true, Ordering::SeqCst);
    if removed || must_exist == 0 {
        TPM_SUCCESS
    } else {
        TPM_FAIL
    }
}

unsafe extern "C" fn get_locality(locality: *mut u32, _tpm_number: u32) -> TpmResult {
    // SAFETY: libtpms passes a valid out-pointer.
    unsafe { *locality = u32::from(LOCALITY.load(Ordering::SeqCst)) };
    TPM_SUCCESS
}

unsafe extern "C" fn get_physical_presence(pp: *mut u8, _tpm_number: u32) -> TpmResult {
    // SAFETY: libtpms passes a valid out-pointer.
    unsafe { *pp = 0 };
    TPM_SUCCESS
}

/// The reference TPM. Only one exists per process at a time.
#[derive(Debug)]
pub struct Reference {
    _private: (),
}

impl Reference {
    /// A freshly manufactured reference TPM, powered on, waiting for Startup.
    pub fn manufacture() -> Self {
        Self::with_nvram(HashMap::new())
    }

    /// A reference TPM from a saved NVRAM (see [`Reference::nvram`]).
    pub fn with_nvram(nv: HashMap<String, Vec<u8>>) -> Self {
        let mut in_use = IN_USE.lock().unwrap_or_else(PoisonError::into_inner);
        while *in_use {
            in_use = RELEASED
                .wait(in_use)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *in_use = true;
        drop(in_use);
        *nvram() = Some(nv);
        let mut callbacks = Callbacks {
            size_of_struct: c_int::try_from(size_of::<Callbacks>()).unwrap(),
            nvram_init: Some(ok),
            nvram_loaddata: Some(load),
            nvram_storedata: Some(store),
            nvram_deletename: Some(delete),
            io_init: Some(ok),
            io_getlocality: Some(get_locality),
            io_getphysicalpresence: Some(get_physical_presence),
        };
        // SAFETY: plain library calls; libtpms copies the callback table, and
        // IN_USE guarantees no other handle drives the library meanwhile.
        let rc = unsafe { TPMLIB_ChooseTPMVersion(TPMLIB_TPM_VERSION_2) };
        assert_eq!(rc, TPM_SUCCESS, "TPMLIB_ChooseTPMVersion");
        // SAFETY: as above; `callbacks` is valid for the call.
        let rc = unsafe { TPMLIB_RegisterCallbacks(&mut callbacks) };
        assert_eq!(rc, TPM_SUCCESS, "TPMLIB_RegisterCallbacks");
        let mut this = Self { _private: () };
        this.init();
        this
    }

    fn init(&mut self) {
        // SAFETY: this handle owns the library (IN_USE) and registered the
        // callbacks; MainInit runs _TPM_Init (manufacturing if NV is empty).
        let rc = unsafe { TPMLIB_MainInit() };
        assert_eq!(rc, TPM_SUCCESS, "TPMLIB_MainInit");
    }

    /// A power cycle (`_TPM_Init`); NVRAM is kept.
    pub fn power_cycle(&mut self) {
        // SAFETY: this handle owns the initialised library.
        unsafe { TPMLIB_Terminate() };
        self.init();
    }

    /// Runs one command and returns the response.
    pub fn execute(&mut self, locality: u8, command: &[u8]) -> Vec<u8> {
        LOCALITY.store(locality, Ordering::SeqCst);
        let mut cmd = command.to_vec();
        let Ok(cmd_len) = u32::try_from(cmd.len()) else {
            return rivet_tools::mssim::error_response(0x142);
        };
        let mut resp: *mut u8 = ptr::null_mut();
        let (mut resp_size, mut resp_buf_size) = (0u32, 0u32);
        // SAFETY: `cmd` is a live buffer of `cmd_len` bytes (libtpms may write
        // into it); the out-pointers are valid; libtpms allocates `resp` with
        // its allocator, which we release with TPM_Free below.
        let rc = unsafe {
            TPMLIB_Process(
                &mut resp,
                &mut resp_size,
                &mut resp_buf_size,
                cmd.as_mut_ptr(),
                cmd_len,
            )
        };
        let out = if rc == TPM_SUCCESS && !resp.is_null() {
            // SAFETY: libtpms wrote `resp_size` bytes at `resp`.
            unsafe { std::slice::from_raw_parts(resp, resp_size as usize) }.to_vec()
        } else {
            rivet_tools::mssim::error_response(0x101)
        };
        if !resp.is_null() {
            // SAFETY: `resp` came from libtpms's allocator and is freed once.
            unsafe { TPM_Free(resp) };
        }
        out
    }

    /// A copy of the NVRAM as it stands.
    pub fn nvram(&self) -> HashMap<String, Vec<u8>> {
        nvram().clone().unwrap_or_default()
    }

    /// Whether NVRAM changed since the last call.
    pub fn take_nv_dirty(&self) -> bool {
        NV_DIRTY.swap(false, Ordering::SeqCst)
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        // SAFETY: this handle owns the initialised library.
        unsafe { TPMLIB_Terminate() };
        *nvram() = None;
        *IN_USE.lock().unwrap_or_else(PoisonError::into_inner) = false;
        RELEASED.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STARTUP_CLEAR: [u8; 12] = [0x80, 1, 0, 0, 0, 12, 0, 0, 1, 0x44, 0, 0];

    #[test]
    fn starts_up_and_keeps_nv_across_a_power_cycle() {
        let mut tpm = Reference::manufacture();
        assert_eq!(
            tpm.execute(0, &STARTUP_CLEAR),
            [0x80, 1, 0, 0, 0, 10, 0, 0, 0, 0]
        );
        // A second Startup is TPM_RC_INITIALIZE.
        assert_eq!(tpm.execute(0, &STARTUP_CLEAR)[6..], [0, 0, 1, 0]);
        assert!(tpm.nvram().contains_key("permall"));
        tpm.power_cycle();
        assert_eq!(tpm.execute(0, &STARTUP_CLEAR)[6..], [0, 0, 0, 0]);
    }
}
