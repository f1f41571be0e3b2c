//! The demo: a real machine check, raised by QEMU's emulated CPU, reflected by vmce into a
//! 4-vCPU guest.
//!
//! ```text
//! cargo run -p vmce-qemu-harness --example qemu_demo            # SRAR data load consumed on CPU 2 (default)
//! cargo run -p vmce-qemu-harness --example qemu_demo -- srao    # patrol scrub found by the memory controller
//! cargo run -p vmce-qemu-harness --example qemu_demo -- legacy  # the same, delivered the old Xen way: vCPU 0 only
//! ```
//!
//! It builds the bare-metal test kernel (`kernel/`), boots it in `qemu-system-x86_64`
//! (TCG, `-smp 4`), injects one host memory error through the QEMU monitor, and prints what
//! the host saw, how vmce classified and translated it, and what every vCPU saw and did.

use std::process::ExitCode;
use vmce_qemu_harness::ExitCode as KernelExit;
use vmce_qemu_harness::{HOST_ADDR, INTEL_CPU, Injection, Qemu, Scenario, vcpu_line};
use vmce_qemu_protocol::console;

fn section(title: &str) {
    println!("\n-- {title}");
}

fn show(machine: &Qemu, prefix: &str, strip: &str) {
    for line in machine.lines_containing(prefix) {
        println!("   {}", line.trim_start_matches(strip));
    }
}

fn main() -> ExitCode {
    let choice = std::env::args().nth(1).unwrap_or_else(|| "srar".into());
    let (scenario, injection, story) = match choice.as_str() {
        "srar" => (
            Scenario::Mce,
            // With a model-specific code (MSCOD 0x0012) that the guest must not see.
            Injection {
                status: 0xBD80_0000_0012_0134,
                ..Injection::srar(2, HOST_ADDR)
            },
            "a guest task on vCPU 2 loads data from a broken DIMM cell (SRAR, data load)",
        ),
        "srao" => (
            Scenario::Mce,
            Injection::srao(1, HOST_ADDR),
            "the memory controller's patrol scrubber finds an uncorrectable cell (SRAO)",
        ),
        "legacy" => (
            Scenario::LegacyVcpu0,
            Injection::srao(1, HOST_ADDR),
            "the patrol-scrub error again, delivered to vCPU 0 only (Xen before its vMCE rework)",
        ),
        other => {
            eprintln!("unknown demo {other:?}: try srar, srao or legacy");
            return ExitCode::FAILURE;
        }
    };
    println!("== vmce demo: {story}");
    println!(
        "   building the bare-metal kernel and booting it: qemu-system-x86_64 -cpu {} -smp 4",
        INTEL_CPU
    );
    let mut machine = Qemu::start(scenario);
    machine.wait_until_ready(4);
    show(&machine, "HV host ", "HV ");

    let command = injection.monitor_command();
    section(&format!("QEMU monitor: {command}"));
    machine.inject_mce(&injection);
    let settled = if scenario == Scenario::LegacyVcpu0 {
        console::GUEST_PANIC
    } else {
        console::DONE
    };
    machine.wait_for_line(settled);
    let status = machine.wait_for_exit();

    section("the host's #MC handler (vmce::host::collect on the real banks)");
    show(&machine, "HOST MC ", "HOST MC ");
    section("vmce: class, owner, translated address, delivery");
    for line in machine.lines_containing("HV ") {
        if !line.starts_with("HV host ") && !line.contains(" rdmsr ") && !line.contains(" wrmsr ") {
            println!("   {}", line.trim_start_matches("HV "));
        }
    }
    section("what each vCPU saw and did (its own #MC handler, Linux style)");
    for vcpu in 0..4 {
        let lines = machine.lines_containing(&vcpu_line(vcpu, ""));
        if lines.is_empty() {
            println!("   vCPU {vcpu}: no machine check");
        }
        for line in lines {
            println!("   {line}");
        }
    }
    for line in machine.lines_containing(console::GUEST_PANIC) {
        println!("   {line}");
    }
    section("outcome");
    let outcome = match KernelExit::from_qemu_status(status) {
        Some(KernelExit::Success) => "every vCPU handled the machine check and the guest runs on",
        Some(KernelExit::GuestPanic) => {
            "the guest panicked: its rendezvous waited for vCPUs that never took the #MC"
        }
        Some(KernelExit::GuestCrash) => {
            "the hypervisor shut the domain down: a vCPU could not take the #MC"
        }
        _ => "the kernel stopped unexpectedly",
    };
    println!("   {outcome} (QEMU exit status {status})");
    ExitCode::SUCCESS
}
