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
