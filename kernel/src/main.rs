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
//! kernel; a host build of the workspace compiles a stub `main` that says so.

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

// Every item below is the kernel, compiled for the bare-metal target only (`cfg` on each:
// rustfmt and rustdoc only follow modules declared outside macros).

#[cfg(target_os = "none")]
mod apic;
#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
mod channel;
#[cfg(target_os = "none")]
mod cpu;
#[cfg(target_os = "none")]
mod exit;
#[cfg(target_os = "none")]
mod gdt;
#[cfg(target_os = "none")]
mod guest;
#[cfg(target_os = "none")]
mod hv;
#[cfg(target_os = "none")]
mod hypercall;
#[cfg(target_os = "none")]
mod idt;
#[cfg(target_os = "none")]
mod mce;
#[cfg(target_os = "none")]
mod migration;
#[cfg(target_os = "none")]
mod paging;
#[cfg(target_os = "none")]
mod pause;
#[cfg(target_os = "none")]
mod percpu;
#[cfg(target_os = "none")]
mod scenario;
#[cfg(target_os = "none")]
mod serial;
#[cfg(target_os = "none")]
mod smp;
#[cfg(target_os = "none")]
mod trap;
#[cfg(target_os = "none")]
mod vcpu;

#[cfg(target_os = "none")]
use exit::exit_qemu;
#[cfg(target_os = "none")]
use scenario::Setup;
#[cfg(target_os = "none")]
use vmce_qemu_protocol::{ExitCode, Scenario, boot_args, console};

/// The scenario chosen on the command line, set once by the bootstrap processor before the
/// application processors start.
#[cfg(target_os = "none")]
static SCENARIO: spin::Once<Scenario> = spin::Once::new();

#[cfg(target_os = "none")]
fn scenario() -> Scenario {
    SCENARIO.get().copied().unwrap_or(Scenario::Boot)
}

/// Per-CPU initialisation shared by the BSP and the APs.
#[cfg(target_os = "none")]
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
#[cfg(target_os = "none")]
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
#[cfg(target_os = "none")]
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
#[cfg(target_os = "none")]
pub extern "C" fn ap_main(cpu: u32) -> ! {
    init_this_cpu(cpu);
    smp::mark_online();
    smp::wait_for_release();
    run_guest(cpu, Setup::of(scenario()).vcpus(smp::cpu_count()))
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    kprintln!(
        "{} cpu={}: {info}",
        console::KERNEL_PANIC,
        apic::cpu_index()
    );
    exit_qemu(ExitCode::KernelFailure)
}
