//! A domain driven by an arbitrary sequence of guest MSR accesses on any vCPU, host errors,
//! injections, MCIP clears, resets, broken-frame accesses, and saves and restores through
//! every format, with the invariants of `tests/model` checked after every step.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use vmce::Profile;

#[path = "../../tests/model/mod.rs"]
mod model;

use model::{INTERESTING_MSRS, INTERESTING_STATUS, Model, Op, SaveFormat};

const VCPUS: usize = 3;

fn msr(input: &mut Unstructured) -> Result<u32> {
    Ok(match input.int_in_range(0..=3u8)? {
        0 => *input.choose(&INTERESTING_MSRS)?,
        1 => input.int_in_range(0x400..=0x47F)?,
        2 => input.int_in_range(0x280..=0x29F)?,
        _ => input.arbitrary()?,
    })
}

fn op(input: &mut Unstructured) -> Result<Op> {
    let vcpu = input.int_in_range(0..=VCPUS - 1)?;
    Ok(match input.int_in_range(0..=8u8)? {
        0 => Op::Read { vcpu, msr: msr(input)? },
        1 => Op::Write { vcpu, msr: msr(input)?, value: input.arbitrary()? },
        2 => Op::HostError {
            bank: input.int_in_range(0..=11)?,
            status: if input.arbitrary()? { *input.choose(&INTERESTING_STATUS)? } else { input.arbitrary()? },
            mcg_status: input.int_in_range(0..=15)?,
            addr: input.arbitrary()?,
            misc: if input.arbitrary()? { 0x86 } else { input.arbitrary()? },
            consumer: input.arbitrary::<Option<u8>>()?.map(|id| u32::from(id % (VCPUS as u8 + 1))),
            cr4_mce: input.ratio(9, 10)?,
        },
        3 => Op::TakePending { vcpu },
        4 => Op::ClearMcip { vcpu },
        5 => Op::Reset { vcpu },
        6 | 7 => Op::SaveRestore { format: *input.choose(&SaveFormat::ALL)? },
        _ => Op::BrokenAccess {
            addr: if input.arbitrary()? {
                input.int_in_range(0..=0x20_FFFF)?
            } else {
                input.arbitrary()?
            },
            vcpu: input.int_in_range(0..=VCPUS as u32)?,
        },
    })
}

fuzz_target!(|data: &[u8]| {
    let mut input = Unstructured::new(data);
    let Ok(profile) = input.choose(&Profile::ALL).copied() else { return };
    let mut model = Model::new(profile, VCPUS);
    while let Ok(op) = op(&mut input) {
        if let Err(violation) = model.step(&op) {
            panic!("{op:?}: {violation}");
        }
        if input.is_empty() {
            break;
        }
    }
});
