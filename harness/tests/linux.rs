//! Debian's stock Linux takes vmce's machine checks: the guest of the SVM hypervisor
//! (`hypervisor/`) is `linux-image-6.1` amd64, unmodified, and its own console lines are the
//! verdict (the scenarios 1–7). See `src/linux.rs` for how a run is booted and
//! judged; each test boots its own machine and its transcript is in
//! `target/linux-transcripts/<name>.txt`.
//!
//! Where each scenario's host error comes from: scenarios 2 and 4–7 raise it on vmce's
//! simulated host at the MSR boundary (TCG's CPU raises none on its own, and QEMU's monitor
//! `mce` on a CPU in guest mode bypasses #VMEXIT), then run the real host path (`collect`,
//! `most_severe`, `GuestMce::from_classified`, `Domain::inject`) on the CPU of the vCPU that
//! printed READY, in host mode. Scenario 3 has no host bank: the frame is listed broken
//! through the domain record path and unmapped in the nested page tables, and the guest's
//! own access raises the error (`Domain::inject_broken_access`).

use vmce_qemu_harness::linux::{
    LinuxProfile, LinuxRun, LinuxScenario, LinuxTranscript, exceptions_line, smp_vcpus,
};
use vmce_qemu_protocol::linux::console;

/// Lines Linux prints when its machine-check set-up is not happy with what it sees.
const MCE_WARNINGS: &[&str] = &["Firmware Bug", "mce: Unable", "MCE: In-kernel MCE decoding"];

fn assert_no_linux_machine_check_lines(transcript: &LinuxTranscript, until: usize) {
    let lines: Vec<&String> = transcript.lines[..until]
        .iter()
        .filter(|line| {
            !line.starts_with(console::HYPERVISOR)
                && (line.contains("mce:")
                    || line.contains("Machine check")
                    || MCE_WARNINGS.iter().any(|w| line.contains(w)))
        })
        .collect();
    assert!(
        lines.is_empty(),
        "{}: Linux printed machine-check lines: {lines:?}",
        transcript.name
    );
}

fn boot_lines(run: LinuxRun) -> LinuxRun {
    let banks = format!("VMCE-GUEST banks=2 cpus={} ", run.vcpus);
    run.expect(banks).expect("VMCE-GUEST mce-warnings=0")
}

#[test]
fn scenario1_linux_boots_and_sees_the_profile() {
    let vcpus = smp_vcpus();
    let mut run = boot_lines(LinuxRun::new(
        "scenario1",
        LinuxScenario::Boot,
        LinuxProfile::Intel,
        vcpus,
    ))
    .expect(console::READY)
    .expect(exceptions_line(vcpus, 0));
    for warning in MCE_WARNINGS {
        run = run.forbid(*warning);
    }
    let transcript = run.check();
    assert_no_linux_machine_check_lines(&transcript, transcript.lines.len());
}

#[test]
fn scenario2_srao_on_a_guest_page_is_recovered() {
    // One vCPU: the injecting CPU is the only vCPU (no kick); scenario 4 is the SMP case.
    let transcript = LinuxRun::new("scenario2", LinuxScenario::Srao, LinuxProfile::Intel, 1)
        .expect(console::READY)
        .expect("[hv] vmce: reflected as SraoMemoryScrub: guest address 0x9000000")
        .expect("mce: [Hardware Error]: Machine check events logged")
        .expect("Memory failure: 0x9000: recovery action for free buddy page: Recovered")
        .expect(format!("{} 2 mce-exceptions: 1", console::ALIVE))
        .check();
    let ready = transcript.position(console::READY).expect("matched");
    assert_no_linux_machine_check_lines(&transcript, ready);
}

/// Scenario 3's run on either profile: a process spins in user mode; the frame under its
/// stack pointer breaks; its next access is a nested page fault that vmce turns into an
/// action-required #MC on that vCPU; Linux sends it SIGBUS and runs on.
fn broken_frame_run(name: &str, profile: LinuxProfile, delivery: &str) -> LinuxTranscript {
    let vcpus = smp_vcpus();
    let mut run = boot_lines(LinuxRun::new(
        name,
        LinuxScenario::BrokenFrame,
        profile,
        vcpus,
    ))
    .expect(console::VICTIM)
    .expect("[hv] 1 frame(s) unmapped in the nested page tables")
    .expect(": nested page fault on broken frame at guest-physical ")
    .expect(format!(
        "[hv] vmce: broken-frame access injected: {delivery}"
    ))
    .expect("mce: Uncorrected hardware memory error in user-access at")
    .expect(": Sending SIGBUS to sh:")
    .expect(": recovery action for dirty LRU page: Recovered")
    .expect("VMCE-GUEST victim exit=135")
    .expect(console::READY)
    .expect(format!("{} 2 mce-exceptions:", console::ALIVE))
    .forbid("VMCE-GUEST victim still alive");
    for warning in MCE_WARNINGS {
        run = run.forbid(*warning);
    }
    let transcript = run.check();
    // The frame Linux killed the process for is the one the hypervisor broke.
    let broken = transcript.lines_containing("[hv] guest frame ");
    assert_eq!(broken.len(), 1, "{broken:?}");
    let gpa = broken[0]
        .split_whitespace()
        .nth(3)
        .and_then(|word| u64::from_str_radix(word.trim_start_matches("0x"), 16).ok())
        .expect("the hypervisor names the frame");
    let sigbus = transcript.linux_lines_containing(": Sending SIGBUS to sh:");
    assert!(
        sigbus[0].contains(&format!("Memory failure: {:#x}:", gpa >> 12)),
        "{sigbus:?} is not about frame {gpa:#x}"
    );
    // The consuming access was the process's own, in user mode.
    let fault = transcript.lines_containing("nested page fault on broken frame");
    assert!(fault[0].ends_with(", CPL 3"), "{fault:?}");
    let victim = transcript.position(console::VICTIM).expect("matched");
    assert_no_linux_machine_check_lines(&transcript, victim);
    transcript
}

#[test]
fn scenario3_broken_frame_access_in_user_mode_kills_the_process_intel() {
    let transcript = broken_frame_run(
        "scenario3-intel",
        LinuxProfile::Intel,
        "broadcast to every vCPU, data on vCPU",
    );
    // Intel broadcasts: every vCPU took the #MC once (Linux's rendezvous completed).
    let alive = transcript.lines.last().expect("matched");
    assert!(alive.ends_with(&exceptions_line(smp_vcpus(), 1)), "{alive}");
}

#[test]
fn scenario3_broken_frame_access_in_user_mode_kills_the_process_amd() {
    let transcript = broken_frame_run(
        "scenario3-amd",
        LinuxProfile::Amd,
        "single vCPU, data on vCPU",
    );
    // AMD: the consuming vCPU alone took it.
    let alive = transcript.lines.last().expect("matched");
    let counts: Vec<u32> = alive
        .rsplit("mce-exceptions:")
        .next()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|count| count.parse().ok())
        .collect();
    assert_eq!(counts.len(), smp_vcpus() as usize, "{alive}");
    assert_eq!(counts.iter().sum::<u32>(), 1, "{alive}");
}

#[test]
fn scenario4_broadcast_every_vcpu_enters_the_handler_and_the_rendezvous_completes() {
    let vcpus = smp_vcpus();
    LinuxRun::new(
        "scenario4",
        LinuxScenario::Broadcast,
        LinuxProfile::Intel,
        vcpus,
    )
    .expect(console::READY)
    .expect("[hv] vmce: injected: broadcast to every vCPU")
    .expect("mce: [Hardware Error]: Machine check events logged")
    .expect("Memory failure: 0x9000: recovery action for free buddy page: Recovered")
    // Linux's own per-CPU #MC count: every vCPU entered do_machine_check once.
    .expect(exceptions_line(vcpus, 1))
    .forbid("Timeout: Not all CPUs entered")
    .check();
}

#[test]
fn scenario5_legacy_vcpu0_only_delivery_times_out_linux_rendezvous() {
    let transcript = LinuxRun::new(
        "scenario5",
        LinuxScenario::LegacyVcpu0,
        LinuxProfile::Intel,
        smp_vcpus(),
    )
    .expect(console::READY)
    .expect("[hv] vmce: injected: ")
    .expect("mce: CPUs not responding to MCE broadcast")
    .expect("Kernel panic - not syncing: Timeout: Not all CPUs entered broadcast exception handler")
    .check();
    let injected = transcript.lines_containing("[hv] vmce: injected");
    assert!(injected[0].contains("1 delivered"), "{injected:?}");
}

#[test]
fn scenario6_mce_off_is_a_shutdown_never_a_drop() {
    let vcpus = smp_vcpus();
    LinuxRun::new(
        "scenario6-mce-off",
        LinuxScenario::MceOff,
        LinuxProfile::Intel,
        vcpus,
    )
    .expect("mce: Unable to init MCE device")
    .expect(console::READY)
    .expect(format!(
        "{}: vCPU 0 cannot take the machine check (CR4.MCE clear); {vcpus} vCPU(s) affected",
        console::DOMAIN_SHUTDOWN
    ))
    .forbid("#MC (vector 18) injected")
    .check();
}

#[test]
fn scenario6_second_error_while_mcip_is_set_is_a_shutdown() {
    let vcpus = smp_vcpus();
    LinuxRun::new(
        "scenario6-mcip",
        LinuxScenario::McipStillSet,
        LinuxProfile::Intel,
        vcpus,
    )
    .expect(console::READY)
    .expect("[hv] vmce: injected")
    .expect(format!(
        "{}: vCPU 0 cannot take the machine check (MCIP still set); {vcpus} vCPU(s) affected",
        console::DOMAIN_SHUTDOWN
    ))
    .check();
}

#[test]
fn scenario7_corrected_error_is_never_reflected_and_linux_logs_nothing() {
    let vcpus = smp_vcpus();
    let transcript = LinuxRun::new(
        "scenario7",
        LinuxScenario::Corrected,
        LinuxProfile::Intel,
        vcpus,
    )
    .expect(console::READY)
    .expect("[hv] vmce: not reflected")
    .expect(format!(
        "{} 3 {}",
        console::ALIVE,
        exceptions_line(vcpus, 0)
    ))
    .forbid("#MC (vector 18) injected")
    .forbid("] mce:")
    .forbid("Machine check")
    .forbid("Hardware Error")
    .check();
    assert_no_linux_machine_check_lines(&transcript, transcript.lines.len());
}

/// AMD: the patrol-scrub error of scenario 2, raised while a vCPU runs a user process (that
/// vCPU is the consumer). Linux's AMD rules cannot tell action-optional from action-required
/// in the legacy bank layout and make an uncorrected error in kernel context fatal; in user
/// context it offlines the page, and the process, whose own memory is intact, runs on.
#[test]
fn amd_srao_while_a_vcpu_runs_user_code_is_recovered() {
    let vcpus = smp_vcpus();
    let mut run = boot_lines(LinuxRun::new(
        "amd-srao-user",
        LinuxScenario::SraoUserMode,
        LinuxProfile::Amd,
        vcpus,
    ))
    .expect(console::VICTIM)
    .expect("[hv] host error raised (simulated host bank 1)")
    .expect("[hv] vmce: reflected as AmdUncorrected: guest address 0x9000000")
    .expect("[hv] vmce: injected: single vCPU, data on vCPU")
    .expect("Memory failure: 0x9000: recovery action for free buddy page: Recovered")
    .expect("VMCE-GUEST victim state=R")
    .expect(console::READY)
    .expect(format!("{} 2 mce-exceptions:", console::ALIVE))
    .forbid("Sending SIGBUS");
    for warning in MCE_WARNINGS {
        run = run.forbid(*warning);
    }
    let transcript = run.check();
    let hunted = transcript.lines_containing("guest user mode at");
    let injected = transcript.lines_containing("#MC (vector 18) injected");
    assert_eq!(injected.len(), 1, "{injected:?}");
    let vcpu = hunted[0].split(':').next().unwrap_or("");
    assert!(
        injected[0].starts_with(vcpu),
        "the #MC went to {injected:?}, not the vCPU in user mode ({vcpu})"
    );
}
