//! The demo: a real machine check, raised by QEMU's emulated CPU, reflected by vmce into a
//! 4-vCPU guest.
//!
//! ```text
//! cargo run -p vmce-qemu-harness --example qemu_demo            # SRAR data load consumed on CPU 2 (default)
//! cargo run -p vmce-qemu-harness --example qemu_demo -- srao    # patrol scrub found by the memory controller
//! cargo run -p vmce-qemu-harness --example qemu_demo -- legacy  # the same, delivered the old Xen way: vCPU 0 only
//! cargo run -p vmce-qemu-harness --example qemu_demo -- linux   # a patrol-scrub error, and Debian's Linux handles it
//! cargo run -p vmce-qemu-harness --example qemu_demo -- linux-broken-frame  # a user process reads a broken frame (AMD)
//! ```
//!
//! The `linux` demos boot Debian's stock kernel on the SVM hypervisor (`hypervisor/`, see
//! the harness's `linux` module) and show its own log lines.
//!
//! On a fresh machine it first installs what it needs (`scripts/setup.sh`: the bare-metal
//! target and `qemu-system-x86`), as `scripts/test.sh` does. It builds the bare-metal test
//! kernel (`kernel/`), boots it in `qemu-system-x86_64`
//! (TCG, `-smp 4`), injects one host memory error through the QEMU monitor, and prints what
//! the host saw, how vmce classified and translated it, and what every vCPU saw and did.

use std::process::ExitCode;
use vmce_qemu_harness::ExitCode as KernelExit;
use vmce_qemu_harness::linux::{
    LinuxProfile, LinuxRun, LinuxScenario, LinuxTranscript, Outcome, guest,
};
use vmce_qemu_harness::{HOST_ADDR, INTEL_CPU, Injection, Qemu, Scenario, vcpu_line};
use vmce_qemu_protocol::console;
use vmce_qemu_protocol::linux::console as linux_console;

fn section(title: &str) {
    println!("\n-- {title}");
}

fn show(machine: &Qemu, prefix: &str, strip: &str) {
    for line in machine.lines_containing(prefix) {
        println!("   {}", line.trim_start_matches(strip));
    }
}

/// The `linux` demos: one error's story from the host bank (or the broken frame) to Linux's
/// own log line.
fn linux_demo(scenario: LinuxScenario, profile: LinuxProfile) -> ExitCode {
    let (story, run) = match scenario {
        LinuxScenario::BrokenFrame => (
            "a user process on an AMD guest reads a page whose frame broke",
            LinuxRun::new("demo-linux-broken-frame", scenario, profile, 4)
                .expect("VMCE-GUEST victim exit=")
                .expect(format!("{} 2 ", linux_console::ALIVE)),
        ),
        _ => (
            "the memory controller's patrol scrubber finds an uncorrectable cell in guest memory (SRAO)",
            LinuxRun::new("demo-linux", scenario, profile, 4)
                .expect(linux_console::READY)
                .expect("Memory failure: ")
                .expect(format!("{} 2 ", linux_console::ALIVE)),
        ),
    };
    println!("== vmce demo with a real guest: {story}");
    println!(
        "   guest: Debian's {} (unmodified), 4 vCPUs, {profile} profile, on the SVM hypervisor in qemu-system-x86_64 -cpu max",
        guest().package
    );
    let transcript = run.run();
    let show = |title: &str, lines: Vec<&str>| {
        section(title);
        for line in lines {
            println!("   {}", line.trim_start_matches(linux_console::HYPERVISOR));
        }
    };
    let hv = |needle: &str| -> Vec<&str> {
        transcript
            .lines_containing(needle)
            .into_iter()
            .filter(|line| line.starts_with(linux_console::HYPERVISOR))
            .collect()
    };
    if scenario == LinuxScenario::BrokenFrame {
        show(
            "the guest: a process spins in user mode",
            transcript
                .lines_containing(linux_console::VICTIM)
                .into_iter()
                .take(1)
                .collect(),
        );
        show(
            "the hypervisor: the frame under its stack breaks (listed by vmce, unmapped in the NPT)",
            [hv("user mode at"), hv("guest frame"), hv("unmapped")].concat(),
        );
        show(
            "the process's next access: a nested page fault, and vmce's inject_broken_access",
            [
                hv("nested page fault"),
                hv("vmce:"),
                hv("  vCPU"),
                hv("#MC (vector 18)"),
            ]
            .concat(),
        );
    } else {
        show(
            "the host bank (vmce's simulated host at the MSR boundary, on the CPU of the vCPU that said READY)",
            hv("host error raised"),
        );
        show(
            "vmce: collect, classify once, translate to the guest's address, deliver",
            [
                hv("vmce: host bank"),
                hv("vmce: reflected"),
                hv("  vCPU"),
                hv("vmce: injected"),
            ]
            .concat(),
        );
        show(
            "the hypervisor: EVENTINJ vector 18 at each vCPU's next VMRUN",
            hv("#MC (vector 18)"),
        );
    }
    show(
        "Linux's own log",
        [
            transcript.linux_lines_containing("mce:"),
            transcript.linux_lines_containing("Memory failure"),
        ]
        .concat(),
    );
    finish_linux(&transcript)
}

fn finish_linux(transcript: &LinuxTranscript) -> ExitCode {
    section("outcome");
    for line in transcript.lines_containing("VMCE-GUEST victim exit=") {
        println!("   the process's exit status: {line} (128 + SIGBUS)");
    }
    if let Some(alive) = transcript.lines_containing(linux_console::ALIVE).last() {
        println!("   the guest runs on: {alive} (Linux's #MC count per CPU)");
    }
    println!(
        "   {} after {:.1?}; transcript: {}",
        transcript.outcome,
        transcript.elapsed,
        transcript.path.display()
    );
    if transcript.outcome == Outcome::Passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let choice = std::env::args().nth(1).unwrap_or_else(|| "srar".into());
    // A fresh machine gets the bare-metal target and QEMU first, as scripts/test.sh does.
    vmce_qemu_harness::set_up();
    match choice.as_str() {
        "linux" => return linux_demo(LinuxScenario::Broadcast, LinuxProfile::Intel),
        "linux-broken-frame" => return linux_demo(LinuxScenario::BrokenFrame, LinuxProfile::Amd),
        _ => {}
    }
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
            eprintln!(
                "unknown demo {other:?}: try srar, srao, legacy, linux or linux-broken-frame"
            );
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
    // The kernel's hand-formatted summary lines (which its tests wait for) say what its
    // `HV event:` lines (vmce::Event) say: the demo shows the events.
    let said_by_an_event = [
        "HV injected: ",
        "HV reflect cpu=",
        "reflected as action-optional",
        "domain shutdown",
        ": not reflected",
    ];
    for line in machine.lines_containing("HV ") {
        if !line.starts_with("HV host ")
            && !line.contains(" rdmsr ")
            && !line.contains(" wrmsr ")
            && !said_by_an_event.iter().any(|said| line.contains(said))
        {
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
