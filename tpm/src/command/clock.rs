//! Clocks and timers (Part 3 §29): ReadClock.

use crate::dispatch::{Call, Ctx};
use crate::rc::CmdResult;

pub fn read_clock(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    call.done()?;
    let v = &cx.core.vol;
    let time = v
        .clock_anchor
        .1
        .saturating_add(v.now_clock.saturating_sub(v.clock_anchor.0))
        .saturating_sub(v.init_ms);
    call.out.u64(time);
    call.out.u64(v.now_clock);
    call.out.u32(cx.core.ps.reset_count);
    call.out.u32(cx.core.ps.restart_count);
    call.out.u8(u8::from(v.clock_safe));
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::Tpm;
    use crate::testutil::{Cmd, platform, run, started};

    #[test]
    fn clock_advances_and_persists() {
        let mut tpm = started();
        let read = |tpm: &mut Tpm<_>| {
            let (rc, b) = run(tpm, 0, &Cmd::new(0x181));
            assert_eq!(rc, 0);
            let t = u64::from_be_bytes(b[0..8].try_into().unwrap());
            let c = u64::from_be_bytes(b[8..16].try_into().unwrap());
            (t, c)
        };
        assert_eq!(read(&mut tpm), (0, 0));
        tpm.platform_mut().now += 500;
        assert_eq!(read(&mut tpm), (500, 500));
        // Clock persists with the next commit; time restarts at _TPM_Init.
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x145).u16(0)).0, 0);
        let mut again = Tpm::restore(platform(), &tpm.state()).unwrap();
        run(&mut again, 0, &Cmd::new(0x144).u16(0));
        again.platform_mut().now += 10;
        assert_eq!(read(&mut again), (10, 510));
        assert_eq!(run(&mut again, 0, &Cmd::new(0x181).u8(0)).0, 0x095);
    }
}
