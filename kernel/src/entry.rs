//! The kernel's entry points: [`kernel_main`] on the bootstrap processor (called by
//! `boot.rs`), [`ap_main`] on each application processor (called by `smp.rs`), the per-CPU
//! start-up they share, the start of each CPU's guest, and the panic handler.

#![cfg(target_os = "none")]

use crate::exit::exit_qemu;
use crate::scenario::Setup;
use crate::{
    apic, boot, channel, cpu, gdt, guest, hv, hypercall, idt, kprintln, mce, migration, paging,
    serial, smp, trap,
};
use vmce_qemu_protocol::{ExitCode, Scenario, boot_args, console};

/// The scenario chosen on the command line, set once by the bootstrap processor before the
/// application processors start.
static SCENARIO: spin::Once<Scenario> = spin::Once::new();

fn scenario() -> Scenario {
    SCENARIO.get().copied().unwrap_or(Scenario::Boot)
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
    let Setup {
        program, parameter, ..
    } = Setup::of(scenario());
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
    let name = command_line
        .value_of(boot_args::SCENARIO)
        .unwrap_or(Scenario::Boot.name());
    let Some(scenario) = Scenario::parse(name) else {
        panic!("unknown scenario \"{name}\"");
    };
    let setup = Setup::of(*SCENARIO.call_once(|| scenario));
    if let Some(count) = command_line.value_of(boot_args::HOST_MACHINE_CHECKS) {
        match count.parse() {
            Ok(count) => mce::expect_host_machine_checks(count),
            Err(_) => panic!("host-mces=\"{count}\" is not a count"),
        }
    }
    if let Some(address) = command_line.value_of(boot_args::TOUCH) {
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
    let nr_vcpus = setup.vcpus(nr_cpus);
    kprintln!(
        "{}={scenario} cpus={nr_cpus} vcpus={nr_vcpus}",
        boot_args::SCENARIO
    );
    let host = mce::host_capabilities();
    hv::init(
        nr_vcpus as usize,
        host,
        setup.profile(host.vendor()),
        setup.delivery,
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
    run_guest(cpu, Setup::of(scenario()).vcpus(smp::cpu_count()))
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    kprintln!(
        "{} cpu={}: {info}",
        console::KERNEL_PANIC,
        apic::cpu_index()
    );
    exit_qemu(ExitCode::KernelFailure)
}
