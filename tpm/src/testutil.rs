//! Test helpers: a deterministic platform and a small command builder.

use alloc::vec::Vec;

use crate::{Platform, PlatformError, Tpm};

pub struct TestPlatform {
    pub counter: u8,
    pub now: u64,
    pub commits: usize,
    pub last: Vec<u8>,
    pub fail_entropy: bool,
}

impl Platform for TestPlatform {
    fn entropy(&mut self, buf: &mut [u8]) -> Result<(), PlatformError> {
        if self.fail_entropy {
            return Err(PlatformError("test entropy failure"));
        }
        for b in buf {
            self.counter = self.counter.wrapping_add(1);
            *b = self.counter;
        }
        Ok(())
    }
    fn now_ms(&mut self) -> u64 {
        self.now
    }
    fn commit(&mut self, state: &[u8]) -> Result<(), PlatformError> {
        self.commits += 1;
        self.last = state.to_vec();
        Ok(())
    }
}

pub fn platform() -> TestPlatform {
    TestPlatform {
        counter: 0,
        now: 1000,
        commits: 0,
        last: Vec::new(),
        fail_entropy: false,
    }
}

/// A command: handles, optional password sessions, parameters.
pub struct Cmd {
    pub cc: u32,
    pub handles: Vec<u32>,
    pub auths: Option<Vec<Vec<u8>>>,
    pub params: Vec<u8>,
}

impl Cmd {
    pub fn new(cc: u32) -> Self {
        Self {
            cc,
            handles: Vec::new(),
            auths: None,
            params: Vec::new(),
        }
    }
    pub fn h(mut self, h: u32) -> Self {
        self.handles.push(h);
        self
    }
    pub fn pw(mut self, pw: &[u8]) -> Self {
        self.auths.get_or_insert_with(Vec::new).push(pw.to_vec());
        self
    }
    pub fn u8(mut self, v: u8) -> Self {
        self.params.push(v);
        self
    }
    pub fn u16(mut self, v: u16) -> Self {
        self.params.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.params.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.params.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn b(mut self, v: &[u8]) -> Self {
        self.params.extend_from_slice(v);
        self
    }
    pub fn tpm2b(self, v: &[u8]) -> Self {
        self.u16(u16::try_from(v.len()).unwrap()).b(v)
    }
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let tag: u16 = if self.auths.is_some() { 0x8002 } else { 0x8001 };
        out.extend_from_slice(&tag.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.cc.to_be_bytes());
        for h in &self.handles {
            out.extend_from_slice(&h.to_be_bytes());
        }
        if let Some(auths) = &self.auths {
            let mut area = Vec::new();
            for a in auths {
                area.extend_from_slice(&0x4000_0009u32.to_be_bytes());
                area.extend_from_slice(&[0, 0, 1]);
                area.extend_from_slice(&u16::try_from(a.len()).unwrap().to_be_bytes());
                area.extend_from_slice(a);
            }
            out.extend_from_slice(&u32::try_from(area.len()).unwrap().to_be_bytes());
            out.extend_from_slice(&area);
        }
        out.extend_from_slice(&self.params);
        let len = u32::try_from(out.len()).unwrap().to_be_bytes();
        out[2..6].copy_from_slice(&len);
        out
    }
}

pub fn rc_of(resp: &[u8]) -> u32 {
    assert!(resp.len() >= 10, "short response {resp:?}");
    let size = u32::from_be_bytes([resp[2], resp[3], resp[4], resp[5]]);
    assert_eq!(size as usize, resp.len(), "response size field");
    u32::from_be_bytes([resp[6], resp[7], resp[8], resp[9]])
}

/// Run and return (rc, response parameters), skipping the parameterSize
/// field when the command had sessions.
pub fn run(tpm: &mut Tpm<TestPlatform>, locality: u8, cmd: &Cmd) -> (u32, Vec<u8>) {
    let resp = tpm.execute(locality, &cmd.bytes());
    let rc = rc_of(&resp);
    let mut body = resp[10..].to_vec();
    if rc == 0 && cmd.auths.is_some() {
        let psize = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
        body = body[4..4 + psize].to_vec();
    }
    (rc, body)
}

pub fn started() -> Tpm<TestPlatform> {
    let mut tpm = Tpm::manufacture(platform()).unwrap();
    let (rc, _) = run(&mut tpm, 0, &Cmd::new(0x144).u16(0));
    assert_eq!(rc, 0);
    tpm
}
