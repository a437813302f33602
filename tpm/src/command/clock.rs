//! Clocks and timers (Part 3 §29): ReadClock, ClockSet and ClockRateAdjust.

use crate::dispatch::{Call, Ctx};
use crate::rc::{self, CmdResult, Locate, Rc};

/// The largest value ClockSet accepts (Part 3 §29.2).
const CLOCK_MAX: u64 = 0xFFFF_0000_0000_0000;

pub fn clock_set(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let new = call.params.u64().p(1)?;
    call.done()?;
    let v = &mut cx.core.vol;
    // Clock only moves forward.
    if new > CLOCK_MAX || new < v.now_clock {
        return Err(Rc::param(rc::VALUE, 1));
    }
    v.clock_anchor = (
        new,
        v.clock_anchor
            .1
            .saturating_add(v.now_clock.saturating_sub(v.clock_anchor.0)),
    );
    v.now_clock = new;
    cx.core.dirty = true;
    Ok(())
}

/// ClockRateAdjust: TPM_CLOCK_ADJUST is -3..=3. The engine's Clock follows
/// the platform's monotonic clock, so a valid request is accepted without
/// changing the rate.
pub fn clock_rate_adjust(_cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let adjust = call.params.u8().p(1)?;
    if !matches!(adjust as i8, -3..=3) {
        return Err(Rc::param(rc::VALUE, 1));
    }
    call.done()
}

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
        // ClockSet: forward only, never past 0xFFFF000000000000.
        let set = |t: u64| Cmd::new(0x128).h(0x4000_0001).pw(b"").u64(t);
        assert_eq!(run(&mut again, 0, &set(100)).0, 0x1C4);
        assert_eq!(run(&mut again, 0, &set(0xFFFF_0000_0000_0001)).0, 0x1C4);
        assert_eq!(run(&mut again, 0, &set(1_000_000)).0, 0);
        again.platform_mut().now += 5;
        assert_eq!(read(&mut again), (15, 1_000_005));
        assert_eq!(
            run(
                &mut again,
                0,
                &Cmd::new(0x128).h(0x4000_000B).pw(b"").u64(2_000_000)
            )
            .0,
            0x184
        );
        let rate = |v: u8| Cmd::new(0x130).h(0x4000_0001).pw(b"").u8(v);
        assert_eq!(run(&mut again, 0, &rate(0xFD)).0, 0);
        assert_eq!(run(&mut again, 0, &rate(3)).0, 0);
        assert_eq!(run(&mut again, 0, &rate(4)).0, 0x1C4);
        // Clock is committed at least every TPM_PT_CLOCK_UPDATE ms.
        let commits = again.platform().commits;
        again.platform_mut().now += crate::CLOCK_UPDATE_MS;
        run(&mut again, 0, &Cmd::new(0x17B).u16(1));
        assert_eq!(again.platform().commits, commits + 1);
        run(&mut again, 0, &Cmd::new(0x17B).u16(1));
        assert_eq!(again.platform().commits, commits + 1);
    }
}
