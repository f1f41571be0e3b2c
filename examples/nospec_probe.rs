//! The guest MSR paths as a hypervisor's exit handler gets them, compiled on their own so
//! that `tests/emulation/nospec_codegen.rs` can read their machine code: each
//! `vmce_probe_*` function is one `Vcpu::rdmsr` / `Vcpu::wrmsr` with a guest-chosen index,
//! inlined.
//!
//! Run, it only prints what each probe returns for a few indices.

use vmce::{Profile, RdmsrOutcome, Vcpu, WrmsrOutcome};

/// A guest `rdmsr`: the value for EDX:EAX, or a code for "not ours" / "#GP".
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn vmce_probe_rdmsr(vcpu: &Vcpu, index: u32) -> u64 {
    match vcpu.rdmsr(index) {
        RdmsrOutcome::Handled(value) => value,
        RdmsrOutcome::NotOurs => 1,
        RdmsrOutcome::RaiseGp(_) => 2,
    }
}

/// A guest `wrmsr`: resume, not ours, or #GP.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn vmce_probe_wrmsr(vcpu: &Vcpu, index: u32, value: u64) -> u64 {
    match vcpu.wrmsr(index, value) {
        WrmsrOutcome::Handled => 0,
        WrmsrOutcome::NotOurs => 1,
        WrmsrOutcome::RaiseGp(_) => 2,
    }
}

fn main() {
    let vcpu = Vcpu::new(Profile::Intel);
    for index in [0x179, 0x405, 0x409, 0x281, 0x29F] {
        let index = std::hint::black_box(index);
        println!(
            "rdmsr {index:#x} -> {:#x}; wrmsr {index:#x} <- 0 -> {}",
            vmce_probe_rdmsr(&vcpu, index),
            vmce_probe_wrmsr(&vcpu, index, 0)
        );
    }
}
