//! vmce-svm-hypervisor: a small AMD SVM hypervisor with nested paging that boots Debian's
//! stock Linux (PVH entry) as its guest in QEMU, with vmce behind every machine-check
//! intercept. See hypervisor/README.md.
//!
//! One vCPU per physical CPU, pinned; devices pass through (the guest drives the local APIC,
//! the PIC, COM1 and the PIT itself). What the hypervisor intercepts:
//! - every MCA MSR (MSR permission map) → the vCPU's [`vmce::Vcpu::rdmsr`]/`wrmsr`, #GP
//!   injected on the #GP outcome and for MCA registers vmce does not own in this dialect;
//! - CPUID → the profile's vendor, family and MCA bits (`guest::cpuid`);
//! - COM1's data port (to see the guest's console lines and act on them);
//! - NMI (the kick that makes a running vCPU exit to take a pending #MC), SHUTDOWN, VMRUN.
//!
//! Before every VMRUN, [`vmce::Vcpu::take_pending`] becomes `EVENTINJ` vector 18.
//!
//! Only the bare-metal build (`--target x86_64-unknown-none`, as the harness builds it) is the
//! hypervisor: every module below starts with `#![cfg(target_os = "none")]`, and a host build
//! of the workspace compiles them empty and this file's stub `main`, which says so.

#![cfg_attr(target_os = "none", no_std, no_main)]

/// The stub of a host build: the hypervisor only exists for `x86_64-unknown-none`.
#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "vmce-svm-hypervisor is a bare-metal hypervisor: build it with --target \
         x86_64-unknown-none (the QEMU harness, harness/src/linux.rs, does)"
    );
    std::process::exit(1);
}

mod boot;
mod entry;
mod guest;
mod hw;
mod svm;
