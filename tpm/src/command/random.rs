//! Random number generator (Part 3 §16): GetRandom and StirRandom.

use alloc::vec;

use crate::command::random;
use crate::dispatch::{Call, Ctx};
use crate::rc::{CmdResult, Locate};
use crate::spec::{MAX_DIGEST, MAX_SYM_DATA};

pub fn get_random(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let requested = call.params.u16().p(1)?;
    call.done()?;
    // At most sizeof(TPMU_HA) bytes per call (Part 3 §16.1).
    let mut buf = vec![0u8; usize::from(requested).min(MAX_DIGEST)];
    random(cx, &mut buf)?;
    call.out.tpm2b(&buf);
    Ok(())
}

pub fn stir_random(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let data = call.params.tpm2b(MAX_SYM_DATA).p(1)?;
    call.done()?;
    if let Some(d) = cx.core.drbg.as_mut() {
        d.stir(data);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::testutil::{Cmd, run, started};

    #[test]
    fn get_and_stir() {
        let mut tpm = started();
        let (rc, a) = run(&mut tpm, 0, &Cmd::new(0x17B).u16(16));
        assert_eq!((rc, a.len()), (0, 18));
        let (_, b) = run(&mut tpm, 0, &Cmd::new(0x17B).u16(16));
        assert_ne!(a, b);
        let (_, c) = run(&mut tpm, 0, &Cmd::new(0x17B).u16(1000));
        assert_eq!(&c[..2], &[0, 48]);
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x17B).u16(0)).1,
            alloc::vec![0, 0]
        );
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x146).tpm2b(&[1; 128])).0, 0);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x146).tpm2b(&[1; 129])).0, 0x1D5);
    }
}
