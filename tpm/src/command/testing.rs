//! Testing (Part 3 §10): SelfTest, IncrementalSelfTest, GetTestResult, and
//! TestParms (Part 3 §12.? "TestParms", algorithm parameter check).

use crate::crypto;
use crate::dispatch::{Call, Ctx};
use crate::public::read_public_parms;
use crate::rc::{self, CmdResult, Locate, Rc};

fn run_tests(cx: &mut Ctx) -> CmdResult<()> {
    if crypto::self_test() {
        Ok(())
    } else {
        cx.core.vol.failure = Some("self test");
        Err(Rc::new(rc::FAILURE))
    }
}

pub fn self_test(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let _full = call.params.yes_no().p(1)?;
    call.done()?;
    run_tests(cx)
}

pub fn incremental_self_test(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let count = call.params.u32().p(1)?;
    if count > 64 {
        return Err(Rc::param(rc::SIZE, 1));
    }
    for _ in 0..count {
        call.params.u16().p(1)?;
    }
    call.done()?;
    run_tests(cx)?;
    // Everything implemented has been tested: the to-do list is empty.
    call.out.u32(0);
    Ok(())
}

pub fn get_test_result(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    call.done()?;
    match cx.core.vol.failure {
        Some(why) => {
            call.out.tpm2b(why.as_bytes());
            call.out.u32(rc::FAILURE);
        }
        None => {
            call.out.u16(0);
            call.out.u32(rc::SUCCESS);
        }
    }
    Ok(())
}

/// TestParms: the checks are those of unmarshalling TPMT_PUBLIC_PARMS.
pub fn test_parms(_cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    read_public_parms(&mut call.params).p(1)?;
    call.done()
}

#[cfg(test)]
mod tests {
    use crate::testutil::{Cmd, run, started};

    #[test]
    fn self_tests_and_results() {
        let mut tpm = started();
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x143).u8(1)).0, 0);
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x143).u8(2)).0, 0x1C4);
        let (rc, b) = run(&mut tpm, 0, &Cmd::new(0x142).u32(2).u16(0x0B).u16(0x04));
        assert_eq!((rc, b), (0, alloc::vec![0, 0, 0, 0]));
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x142).u32(65)).0, 0x1D5);
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x17C)),
            (0, alloc::vec![0, 0, 0, 0, 0, 0])
        );
    }

    #[test]
    fn test_parms() {
        let mut tpm = started();
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x18A).u16(0x08).u16(0x05).u16(0x0B)).0,
            0
        );
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x18A).u16(0x08).u16(0x10)).0, 0);
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x18A).u16(0x08).u16(0x05).u16(0x0D)).0,
            0x1C3
        );
        assert_eq!(
            run(
                &mut tpm,
                0,
                &Cmd::new(0x18A).u16(0x08).u16(0x0A).u16(0x0B).u16(0x21)
            )
            .0,
            0x1CC
        );
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x18A).u16(0x02)).0, 0x1CA);
        let ecc = |curve: u16, scheme: u16| {
            Cmd::new(0x18A)
                .u16(0x23)
                .u16(0x10)
                .u16(scheme)
                .u16(curve)
                .u16(0x10)
        };
        assert_eq!(run(&mut tpm, 0, &ecc(3, 0x10)).0, 0);
        assert_eq!(run(&mut tpm, 0, &ecc(0x77, 0x10)).0, 0x1E6);
        assert_eq!(run(&mut tpm, 0, &ecc(3, 0x1A)).0, 0x1D2);
        let rsa = |bits: u16| {
            Cmd::new(0x18A)
                .u16(0x01)
                .u16(0x10)
                .u16(0x10)
                .u16(bits)
                .u32(0)
        };
        assert_eq!(run(&mut tpm, 0, &rsa(2048)).0, 0);
        assert_eq!(run(&mut tpm, 0, &rsa(1000)).0, 0x1C4);
        let aes = |bits: u16, mode: u16| Cmd::new(0x18A).u16(0x25).u16(0x06).u16(bits).u16(mode);
        assert_eq!(run(&mut tpm, 0, &aes(128, 0x43)).0, 0);
        assert_eq!(run(&mut tpm, 0, &aes(100, 0x43)).0, 0x1C4);
        // TPMI_ALG_SYM_MODE+ in TPMT_SYM_DEF_OBJECT: NULL is allowed (the reference unmarshals with YES).
        assert_eq!(run(&mut tpm, 0, &aes(128, 0x10)).0, 0);
        assert_eq!(run(&mut tpm, 0, &aes(128, 0x45)).0, 0x1C9);
        assert_eq!(
            run(&mut tpm, 0, &Cmd::new(0x18A).u16(0x25).u16(0x10)).0,
            0x1D6
        );
        assert_eq!(run(&mut tpm, 0, &rsa(2048).u8(0)).0, 0x095);
    }
}
