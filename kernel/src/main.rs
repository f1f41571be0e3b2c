//! vmce-kernel: a tiny PV-style "hypervisor" for proving vmce on an emulated CPU.
//!
//! Boot (PVH, `boot.rs`) → per-CPU tables (`gdt.rs`, `idt.rs`), local APIC (`apic.rs`),
//! host MCA (`mce.rs`) → application processors (`smp.rs`) → one ring-3 guest per CPU
//! (`guest.rs`; a scenario may keep the last CPU for the hypervisor alone) that reaches the
//! kernel through hypercalls (`hypercall.rs`) and trapped MSR instructions (`vcpu.rs`).
//! Every virtual-MCA decision is in `hv.rs`, the seam where the vmce crate plugs in.
//!
//! The command line selects the guest program (`scenario=NAME`, see `guest::Scenario`);
//! `touch=<guest-physical address>` tells the `migrate-dest` guest which address to read
//! after the restore. The migration scenarios add a second serial port, the migration
//! channel (`channel.rs`, protocol in `migration.rs`); the domain can be paused
//! (`pause.rs`).
//! Serial lines are machine-readable; the run ends through `isa-debug-exit` (see `exit.rs`).

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

mod apic;
mod boot;
mod channel;
mod cpu;
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
mod serial;
mod smp;
mod trap;
mod vcpu;

use core::sync::atomic::{AtomicU8, Ordering};
use exit::{ExitCode, exit_qemu};
use guest::Scenario;

/// The scenario chosen on the command line (a `Scenario` discriminant).
static SCENARIO: AtomicU8 = AtomicU8::new(Scenario::Boot as u8);

fn scenario() -> Scenario {
    let value = SCENARIO.load(Ordering::Acquire);
    Scenario::ALL
        .into_iter()
        .find(|scenario| *scenario as u8 == value)
        .unwrap_or(Scenario::Boot)
}

/// Per-CPU initialisation shared by the BSP and the APs.
fn init_this_cpu(cpu: u32) {
    // SAFETY: called once per CPU, by that CPU, with interrupts disabled.
    unsafe { gdt::init(cpu) };
    idt::load();
    apic::init_local();
    let mcg_cap = mce::init_cpu();
    kprintln!(
        "CPU {cpu} online mcg_cap={:#x} cr4={:#x}",
        mcg_cap.bits(),
        cpu::read_cr4()
    );
}

/// Starts this CPU's guest (vCPU `cpu`), or, on a CPU beyond the domain's `nr_vcpus`, idles
/// in the kernel (where host machine checks still reach it); never returns.
fn run_guest(cpu: u32, nr_vcpus: u32) -> ! {
    if cpu >= nr_vcpus {
        kprintln!("CPU {cpu} runs no vCPU");
        loop {
            cpu::wait_for_interrupt();
        }
    }
    let (program, parameter) = scenario().program();
    let stack = paging::guest_stack_top(cpu) - 8;
    // SAFETY: this CPU's tables are loaded; the caller runs on a boot stack, not on the
    // ring-0 stack; the program is in the user-accessible guest image and the stack in
    // user-accessible guest RAM.
    unsafe {
        trap::enter_guest(
            cpu,
            program as usize as u64,
            stack,
            [u64::from(cpu), u64::from(nr_vcpus), parameter, 0],
        )
    }
}

/// Bootstrap processor entry, called by `boot.rs` in long mode with the PVH start info.
pub extern "C" fn kernel_main(start_info: u32) -> ! {
    serial::init();
    // SAFETY: `start_info` is what the PVH loader passed in EBX, and nothing below 1 MiB has
    // been written yet.
    let command_line = unsafe { boot::CommandLine::from_start_info(start_info) };
    kprintln!("vmce-kernel: command line \"{}\"", command_line.as_str());
    let name = command_line.value_of("scenario").unwrap_or("boot");
    let Some(scenario) = Scenario::parse(name) else {
        panic!("unknown scenario \"{name}\"");
    };
    SCENARIO.store(scenario as u8, Ordering::Release);
    if let Some(count) = command_line.value_of("host-mces") {
        match count.parse() {
            Ok(count) => mce::expect_host_machine_checks(count),
            Err(_) => panic!("host-mces=\"{count}\" is not a count"),
        }
    }
    if let Some(address) = command_line.value_of("touch") {
        let digits = address.trim_start_matches("0x");
        match u64::from_str_radix(digits, 16) {
            Ok(guest_physical) => guest::set_touch_address(guest_physical),
            Err(_) => panic!("touch=\"{address}\" is not a hex address"),
        }
    }
    if scenario.uses_migration_channel() {
        channel::init();
    }

    apic::disable_legacy_pic();
    paging::init();
    // SAFETY: the BSP builds the IDT once, before any CPU loads it.
    unsafe { idt::build() };
    let cpu = apic::cpu_index();
    assert_eq!(cpu, 0, "the bootstrap processor must have APIC ID 0");
    let nr_cpus = smp::cpu_count();
    let nr_vcpus = scenario.vcpus(nr_cpus);
    kprintln!(
        "scenario={} cpus={nr_cpus} vcpus={nr_vcpus}",
        scenario.name()
    );
    let host = mce::host_capabilities();
    hv::init(
        nr_vcpus as usize,
        host,
        scenario.profile(host.vendor()),
        scenario.delivery(),
    );
    hypercall::init(nr_vcpus);
    init_this_cpu(cpu);
    if scenario == Scenario::MigrateDest {
        // SAFETY: the bootstrap processor, after `hv::init`, before the APs start.
        unsafe { migration::destination::receive_and_restore() };
    }
    smp::mark_online();
    smp::start_application_processors(nr_cpus);
    smp::release_application_processors();
    if scenario == Scenario::MigrateSource {
        migration::source::start();
    }
    run_guest(cpu, nr_vcpus)
}

/// Application processor entry, called by `smp.rs` on the AP's boot stack.
pub extern "C" fn ap_main(cpu: u32) -> ! {
    init_this_cpu(cpu);
    smp::mark_online();
    smp::wait_for_release();
    run_guest(cpu, scenario().vcpus(smp::cpu_count()))
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    kprintln!("KERNEL PANIC cpu={}: {info}", apic::cpu_index());
    exit_qemu(ExitCode::KernelFailure)
}
