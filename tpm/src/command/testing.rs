//! Testing (Part 3 §10): SelfTest, IncrementalSelfTest, GetTestResult, and
//! TestParms (Part 3 §12.? "TestParms", algorithm parameter check).

use crate::command::read_hash_alg;
use crate::crypto;
use crate::dispatch::{Call, Ctx};
use crate::rc::{self, CmdResult, Locate, Rc};
use crate::spec::alg;

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

/// TPMT_PUBLIC_PARMS: only the keyed-hash type is implemented in this part;
/// RSA, ECC and symmetric objects arrive with the key commands.
pub fn test_parms(_cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let r = &mut call.params;
    let kind = r.u16().p(1)?;
    match kind {
        alg::KEYEDHASH => {
            let scheme = r.u16().p(1)?;
            match scheme {
                alg::HMAC => {
                    read_hash_alg(r).p(1)?;
                }
                alg::XOR => {
                    read_hash_alg(r).p(1)?;
                    let kdf = r.u16().p(1)?;
                    if kdf != alg::KDF1_SP800_108 {
                        return Err(Rc::param(rc::KDF, 1));
                    }
                }
                alg::NULL => {}
                _ => return Err(Rc::param(rc::VALUE, 1)),
            }
        }
        _ => return Err(Rc::param(rc::TYPE, 1)),
    }
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
                &Cmd::new(0x18A).u16(0x08).u16(0x0A).u16(0x0B).u16(0x20)
            )
            .0,
            0x1CC
        );
        assert_eq!(run(&mut tpm, 0, &Cmd::new(0x18A).u16(0x01)).0, 0x1CA);
    }
}
