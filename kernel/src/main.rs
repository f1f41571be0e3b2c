//! vmce-test-kernel: a tiny PV-style "hypervisor" for proving vmce on an emulated CPU.
//!
//! Boot (PVH, `boot.rs`) → per-CPU tables (`gdt.rs`, `idt.rs`), local APIC (`apic.rs`),
//! host MCA (`mce.rs`) → application processors (`smp.rs`) → one ring-3 guest per CPU
//! (`guest/`; a scenario may keep the last CPU for the hypervisor alone) that reaches the
//! kernel through hypercalls (`hypercall.rs`) and trapped MSR instructions (`vcpu.rs`).
//! Every virtual-MCA decision is in `hv.rs`, the seam where the vmce crate plugs in.
//!
//! The command line selects the scenario (`scenario=NAME`: the protocol's `Scenario`, run as
//! `scenario.rs` sets it up); `touch=<guest-physical address>` tells the `migrate-dest` guest
//! which address to read after the restore (`vmce_qemu_protocol::boot_args`). The migration
//! scenarios add a second serial port, the migration channel (`channel.rs`, protocol in
//! `migration.rs`); the domain can be paused (`pause.rs`).
//! Serial lines are machine-readable; the run ends through `isa-debug-exit` (see `exit.rs`).
//!
//! Only the bare-metal build (`--target x86_64-unknown-none`, as the harness builds it) is the
//! kernel: every module below starts with `#![cfg(target_os = "none")]`, and a host build of
//! the workspace (`cargo test --workspace`, `cargo clippy --workspace`) compiles them empty
//! and this file's stub `main`, which says so. The entry points are in `entry.rs`.

#![cfg_attr(target_os = "none", no_std, no_main)]

/// The stub of a host build: the kernel only exists for `x86_64-unknown-none`.
#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "vmce-test-kernel is a bare-metal kernel: build it with --target x86_64-unknown-none \
         (the QEMU harness, harness/, does)"
    );
    std::process::exit(1);
}

mod apic;
mod boot;
mod channel;
mod cpu;
mod entry;
mod exit;
mod gdt;
mod guest;
mod hv;
mod hypercall;
mod idt;
mod mce;
mod migration;
mod paging;
mod pause;
mod percpu;
mod scenario;
mod serial;
mod smp;
mod trap;
mod vcpu;
