//! vmce on a real (emulated) CPU: the bare-metal test kernel (`kernel/`) boots in QEMU,
//! QEMU's own MCA emulation raises machine checks through its monitor `mce` command, and the
//! kernel's host #MC handler runs vmce's collector on the real banks, classifies, translates
//! and injects into ring-3 guests that handle them as Linux does. See the crate's `src/lib.rs`
//! for the harness; each test boots its own machine.

use vmce_qemu_harness::{
    AMD_CPU, BootArgs, ExitCode, GUEST_ADDR, HOST_ADDR, Injection, Qemu, Scenario, data_line,
};

#[test]
fn four_cpus_boot_and_the_guest_profile_ignores_the_host() {
    let mut machine = Qemu::start(Scenario::Boot);
    machine.wait_for_line(
        "HV host Intel MCG_CAP 0x100010a (banks=10 CTL_P SER_P); guest profile Intel MCG_CAP 0x1000c02 \
         (banks=2 CMCI_P TES_P SER_P)",
    );
    for cpu in 0..4 {
        machine.wait_for_line(&format!("CPU {cpu} online mcg_cap=0x100010a"));
    }
    machine.wait_until_ready(4);
    machine.expect_done();
    for line in machine.lines_containing(" online ") {
        let cr4 = u64::from_str_radix(line.rsplit("cr4=0x").next().unwrap(), 16).unwrap();
        assert_ne!(cr4 & (1 << 6), 0, "CR4.MCE set: {line}");
    }
}

/// The guest's own `rdmsr`/`wrmsr` of every docs/behaviour.md §3 row, trapped at CPL 3 and emulated by
/// vmce; a #GP outcome is delivered to the guest's #GP handler.
#[test]
fn guest_msr_probe_matches_spec_row_by_row() {
    const GP: &str = "#GP";
    let rows: &[(&str, &str)] = &[
        ("rdmsr 0x179", "= 0x1000c02"), // MCG_CAP: the profile
        ("wrmsr 0x179 0x0", GP),        // read-only
        ("wrmsr 0x179 0x1000c02", GP),  // even its own value
        ("rdmsr 0x17a", "= 0x0"),       // MCG_STATUS
        ("wrmsr 0x17a 0x1", "ok"),
        ("rdmsr 0x17a", "= 0x1"),
        ("wrmsr 0x17a 0x8", GP),  // LMCE_S without LMCE_P
        ("wrmsr 0x17a 0x10", GP), // reserved
        ("wrmsr 0x17a 0x0", "ok"),
        ("rdmsr 0x17a", "= 0x0"),
        ("rdmsr 0x17b", "= 0x0"), // MCG_CTL absent: RAZ/WI, no #GP
        ("wrmsr 0x17b 0xffffffffffffffff", "ok"),
        ("rdmsr 0x17b", "= 0x0"),
        ("rdmsr 0x400", "= 0xffffffffffffffff"), // MC0_CTL
        ("rdmsr 0x404", "= 0xffffffffffffffff"), // MC1_CTL
        ("wrmsr 0x404 0x0", "ok"),               // ignored
        ("rdmsr 0x404", "= 0xffffffffffffffff"),
        ("rdmsr 0x408", "= 0x0"), // MC2_CTL, beyond the count
        ("rdmsr 0x47c", "= 0x0"), // MC31_CTL
        ("rdmsr 0x405", "= 0x0"), // MC1_STATUS
        ("wrmsr 0x405 0x0", "ok"),
        ("wrmsr 0x405 0x1", GP),  // only 0 may be written
        ("wrmsr 0x402 0x5", GP),  // MC0_ADDR
        ("rdmsr 0x407", "= 0x0"), // MC1_MISC
        ("rdmsr 0x415", "= 0x0"), // MC5_STATUS: RAZ
        ("wrmsr 0x415 0x0", "ok"),
        ("wrmsr 0x416 0x1", GP),
        ("rdmsr 0x47f", "= 0x0"),         // MC31_MISC
        ("wrmsr 0x281 0x40000005", "ok"), // MC1_CTL2: CMCI_EN + threshold
        ("rdmsr 0x281", "= 0x40000005"),
        ("wrmsr 0x281 0x80000000", GP), // reserved
        ("rdmsr 0x280", "= 0x0"),
        ("wrmsr 0x282 0x40000001", "ok"), // MC2_CTL2: ignored
        ("rdmsr 0x282", "= 0x0"),
        ("rdmsr 0x29f", "= 0x0"),
        ("rdmsr 0x4d0", GP), // MCG_EXT_CTL without LMCE_P
        ("wrmsr 0x4d0 0x1", GP),
        ("rdmsr 0x0", "= 0x0"), // P5_MC_ADDR = MC1_ADDR
        ("rdmsr 0x1", "= 0x0"), // P5_MC_TYPE = MC1_STATUS
        ("wrmsr 0x1 0x0", GP),  // read-only
        ("rdmsr 0x3a", GP),     // not ours; this kernel has no other MSRs
        ("rdmsr 0x480", GP),
    ];
    let mut machine = Qemu::start(Scenario::MsrProbe);
    machine.wait_for_line("VCPU 0 PROBE end");
    machine.expect_done();
    let seen: Vec<String> = machine
        .lines_containing("VCPU 0 PROBE ")
        .into_iter()
        .filter(|line| !line.ends_with("PROBE end"))
        .collect();
    let expected: Vec<String> = rows
        .iter()
        .map(|(access, outcome)| format!("VCPU 0 PROBE {access} {outcome}"))
        .collect();
    assert_eq!(seen, expected, "docs/behaviour.md §3, row by row, in order");
    let faults = rows.iter().filter(|(_, outcome)| *outcome == GP).count();
    assert_eq!(
        machine
            .lines_containing("VCPU 0 GP vector=13 error=0x0")
            .len(),
        faults,
        "each #GP reached the guest's handler"
    );
    assert_eq!(
        machine.lines_containing(": #GP (").len(),
        faults,
        "each #GP has a named reason in the hypervisor's log"
    );
}

#[test]
fn srao_memory_scrub_reaches_every_vcpu_with_the_data_on_vcpu_0() {
    let mut machine = Qemu::start(Scenario::Mce);
    machine.wait_until_ready(4);
    machine.inject_mce(&Injection::srao(1, HOST_ADDR));
    machine.wait_for_line(
        "HOST MC cpu=1 bank=9 status=0xbd000000004000cf [VAL|UC|EN|MISCV|ADDRV|S] MCACOD=0x00cf (memory scrub",
    );
    machine.wait_for_line("HV cpu=1 bank=9 class: reflect: SRAO memory scrub (action optional)");
    machine
        .wait_for_line("HV reflect cpu=1 owner=guest host 0x4123abc -> guest 0x123abc consumer=1");
    machine.wait_for_line(
        "HV injected: broadcast to every vCPU, data on vCPU 0, delivered=4 shutdown=0",
    );
    // MSCOD (0x0040) cleared, address translated, MISC passed through.
    machine.wait_for_line(&data_line(0, 0x5, 0xBD00_0000_0000_00CF, GUEST_ADDR, 0x86));
    for vcpu in 1..4 {
        machine.wait_for_line(&format!("VCPU {vcpu} MC mcg_status=0x5 no-bank"));
    }
    machine.assert_rendezvous(4, 1);
    machine.expect_done();
    assert_eq!(
        machine.lines_containing("HOST MC cpu=").len(),
        2,
        "one host #MC (status and bank lines)"
    );
    assert_eq!(
        machine.lines_containing(" bank1 status=").len(),
        1,
        "the data on one vCPU only"
    );
}

#[test]
fn srar_on_an_application_processor_goes_to_the_vcpu_that_consumed_it() {
    let mut machine = Qemu::start(Scenario::Mce);
    machine.wait_until_ready(4);
    machine.inject_mce(&Injection::srar(2, HOST_ADDR));
    machine.wait_for_line("HV cpu=2 bank=1 class: reflect: SRAR data load (action required)");
    machine.wait_for_line(
        "HV injected: broadcast to every vCPU, data on vCPU 2, delivered=4 shutdown=0",
    );
    machine.wait_for_line(&data_line(2, 0x7, 0xBD80_0000_0000_0134, GUEST_ADDR, 0x86));
    for vcpu in [0, 1, 3] {
        machine.wait_for_line(&format!("VCPU {vcpu} MC mcg_status=0x5 no-bank"));
    }
    machine.assert_rendezvous(4, 1);
    machine.expect_exit(ExitCode::Success);
}

/// The #MC must interrupt the guest itself, in ring 3. QEMU raises the monitor's `mce` when
/// the target CPU next looks for interrupts, wherever it is then, so the injection waits for
/// the guest's word (vCPU 0's `BUSY` line) that vCPUs 1-3 spin in ring 3 with nothing that
/// could take them into the kernel before their machine check. After it they sleep on the
/// round count they read before it (`block` on a stale value), which must not hang.
#[test]
fn srar_interrupting_a_guest_running_in_ring_3() {
    let mut machine = Qemu::start(Scenario::MceBusy);
    machine.wait_until_ready(4);
    machine.wait_for_line(
        "VCPU 0 BUSY vcpus=3 spin in ring 3 and enter the kernel only on a machine check",
    );
    machine.inject_mce(&Injection::srar(3, HOST_ADDR));
    let host = machine.wait_for_line("HOST MC cpu=3 mcg_status=");
    assert!(
        host.ends_with("ring=3"),
        "the #MC interrupted the guest: {host}"
    );
    machine.wait_for_line(&data_line(3, 0x7, 0xBD80_0000_0000_0134, GUEST_ADDR, 0x86));
    machine.assert_rendezvous(4, 1);
    machine.expect_done();
}

#[test]
fn broadcast_form_reflects_the_error_once() {
    // QEMU raises the other CPUs' #MCs asynchronously: the run may only end after all four.
    let mut machine = Qemu::start(BootArgs::new(Scenario::Mce).host_machine_checks(4));
    machine.wait_until_ready(4);
    machine.inject_mce(&Injection::srar(2, HOST_ADDR).broadcast());
    // QEMU's -b: every other CPU takes #MC with bank 1 = VAL|UC and no address: UCNA, host only.
    for cpu in [0, 1, 3] {
        machine.wait_for_line(&format!(
            "HOST MC cpu={cpu} bank=1 status=0xa000000000000000 [VAL|UC]"
        ));
        machine.wait_for_line(&format!("HV cpu={cpu} bank=1 class: host only: UCNA"));
    }
    machine.wait_for_line(&data_line(2, 0x7, 0xBD80_0000_0000_0134, GUEST_ADDR, 0x86));
    machine.assert_rendezvous(4, 1);
    machine.expect_exit(ExitCode::Success);
    assert_eq!(machine.lines_containing("HV reflect").len(), 1);
    assert_eq!(
        machine.lines_containing(" MC-DONE ").len(),
        4,
        "one vMCE per vCPU"
    );
}

#[test]
fn a_second_error_after_the_guests_cleared_mcip_is_delivered_again() {
    let mut machine = Qemu::start(Scenario::MceTwice);
    machine.wait_until_ready(4);
    machine.inject_mce(&Injection::srar(2, HOST_ADDR));
    machine.assert_rendezvous(4, 1);
    machine.inject_mce(&Injection::srar(1, 0x0445_6000));
    machine.wait_for_line(&data_line(1, 0x7, 0xBD80_0000_0000_0134, 0x45_6000, 0x86));
    machine.assert_rendezvous(4, 2);
    machine.expect_done();
    assert!(
        machine.lines_containing("OVER").is_empty(),
        "the guests cleared bank 1 in between"
    );
}

#[test]
fn memory_the_guest_does_not_own_is_not_reflected() {
    let mut machine = Qemu::start(Scenario::Mce);
    machine.wait_until_ready(4);
    machine.inject_mce(&Injection::srar(3, 0x0010_0000));
    machine.wait_for_line(
        "HV cpu=3 bank=1: not reflected: host frame 0x100 is not owned by the domain",
    );
    // The guests saw nothing; a reflectable error afterwards is delivered normally.
    machine.inject_mce(&Injection::srar(0, HOST_ADDR));
    machine.wait_for_line(&data_line(0, 0x7, 0xBD80_0000_0000_0134, GUEST_ADDR, 0x86));
    machine.assert_rendezvous(4, 1);
    machine.expect_exit(ExitCode::Success);
    assert_eq!(machine.lines_containing(" MC-DONE ").len(), 4);
}

/// Patch 4 of the Xen vMCE series: with the error on vCPU 0 alone, a guest whose handler
/// rendezvouses every CPU waits for CPUs that never come, and the guest dies. The same error
/// with every vCPU signalled completes (`srao_memory_scrub_reaches_every_vcpu...`).
#[test]
fn legacy_vcpu0_only_delivery_times_out_the_guest_rendezvous() {
    let mut machine = Qemu::start(Scenario::LegacyVcpu0);
    machine.wait_until_ready(4);
    machine.inject_mce(&Injection::srao(1, HOST_ADDR));
    machine.wait_for_line(
        "HV injected: broadcast to every vCPU, data on vCPU 0, delivered=1 shutdown=0",
    );
    machine.wait_for_line(&data_line(0, 0x5, 0xBD00_0000_0000_00CF, GUEST_ADDR, 0x86));
    machine.wait_for_line("GUEST PANIC rendezvous-timeout vcpu=0");
    machine.expect_exit(ExitCode::GuestPanic);
    assert!(machine.lines_containing("RENDEZVOUS OK").is_empty());
    for vcpu in 1..4 {
        assert!(
            machine
                .lines_containing(&format!("VCPU {vcpu} MC"))
                .is_empty(),
            "vCPU {vcpu} never took #MC"
        );
    }
}

#[test]
fn a_rendezvous_a_vcpu_skips_is_a_guest_panic() {
    let mut machine = Qemu::start(Scenario::MceTimeout);
    machine.wait_until_ready(4);
    machine.inject_mce(&Injection::srar(2, HOST_ADDR));
    machine.wait_for_line("VCPU 3 MC skipping the rendezvous");
    machine.wait_for_line("GUEST PANIC rendezvous-timeout");
    machine.expect_exit(ExitCode::GuestPanic);
}

/// vCPUs 0-2 wait in the rendezvous for vCPU 3, which skipped it, with no timeout
/// (`mcip-held`): they hold `MCIP` however long the second error takes to come.
#[test]
fn an_error_while_guest_mcip_is_still_set_is_a_shutdown() {
    let mut machine = Qemu::start(Scenario::McipHeld);
    machine.wait_until_ready(4);
    machine.inject_mce(&Injection::srar(2, HOST_ADDR));
    // vCPU 3 skips the rendezvous and clears MCIP; vCPUs 0-2 wait with MCIP still set.
    machine.wait_for_line("VCPU 3 MC-DONE round=1");
    machine.inject_mce(&Injection::srar(3, HOST_ADDR));
    machine.wait_for_line("HV vCPU 0: cannot take #MC (MCIP still set): shut down");
    machine.wait_for_line(
        "HV injected: broadcast to every vCPU, data on vCPU 3, delivered=1 shutdown=3",
    );
    machine
        .wait_for_line("HV vCPU 0 cannot take the machine check (MCIP still set): domain shutdown");
    machine.expect_exit(ExitCode::GuestCrash);
}

#[test]
fn cr4_mce_clear_in_the_guest_is_a_shutdown() {
    let mut machine = Qemu::start(Scenario::Cr4Off);
    machine.wait_until_ready(4);
    for vcpu in 0..4 {
        machine.wait_for_line(&format!("HV vcpu {vcpu} CR4.MCE=0"));
    }
    machine.inject_mce(&Injection::srao(2, HOST_ADDR));
    machine.wait_for_line("HV vCPU 0: cannot take #MC (CR4.MCE clear): shut down");
    machine
        .wait_for_line("HV vCPU 0 cannot take the machine check (CR4.MCE clear): domain shutdown");
    machine.expect_exit(ExitCode::GuestCrash);
    assert!(machine.lines_containing("VCPU 0 MC").is_empty());
}

/// A vCPU the guest took offline (`CR4.MCE` cleared, then the hypervisor told, as an OS takes a
/// CPU down) is skipped: the vCPUs online take the error and rendezvous without it, and the
/// domain runs on. Had vmce not asked whether a vCPU is up, the offline vCPU would have been a
/// `CR4.MCE`-clear shutdown and the kernel would have killed the domain, as Xen did.
#[test]
fn a_vcpu_the_guest_took_offline_is_skipped_not_shut_down() {
    let mut machine = Qemu::start(Scenario::OfflineVcpu);
    machine.wait_until_ready(4);
    machine.wait_for_line("HV vcpu 3 CR4.MCE=0");
    machine.wait_for_line("HV vcpu 3 up=0");
    machine.inject_mce(&Injection::srao(1, HOST_ADDR));
    machine.wait_for_line(
        "HV injected: broadcast to every vCPU, data on vCPU 0, delivered=3 shutdown=0 skipped=1",
    );
    machine.wait_for_line("HV vCPU 3: not up: skipped");
    machine.wait_for_line(&data_line(0, 0x5, 0xBD00_0000_0000_00CF, GUEST_ADDR, 0x86));
    for vcpu in 1..3 {
        machine.wait_for_line(&format!("VCPU {vcpu} MC mcg_status=0x5 no-bank"));
    }
    machine.assert_rendezvous(3, 1);
    machine.expect_done();
    assert!(machine.lines_containing("domain shutdown").is_empty());
    assert!(
        machine.lines_containing("VCPU 3 MC").is_empty(),
        "the offline vCPU took no #MC"
    );
}

/// An SRAR raised on a CPU that runs no vCPU (the hypervisor itself touched the poison) was
/// consumed by no vCPU of the domain: the guest gets it as action-optional (`AR` clear,
/// `MCACOD` 0x00C0, `MCG_STATUS` = `MCIP|RIPV`) on every vCPU, the data on vCPU 0, which
/// offlines the page and runs on. As an SRAR it would have reached vCPU 0, idle and with no
/// recovery point armed, and this guest, like Linux there, panics.
#[test]
fn an_srar_no_vcpu_consumed_reaches_the_guest_as_action_optional() {
    let mut machine = Qemu::start_with_cpus(Scenario::SrarUnconsumed, 5);
    machine.wait_for_line("CPU 4 runs no vCPU");
    machine.wait_until_ready(4);
    machine.inject_mce(&Injection::srar(4, HOST_ADDR));
    let host = machine.wait_for_line("HOST MC cpu=4 mcg_status=");
    assert!(
        host.ends_with("ring=0"),
        "the #MC interrupted the hypervisor: {host}"
    );
    machine.wait_for_line("HV cpu=4 bank=1 class: reflect: SRAR data load (action required)");
    machine
        .wait_for_line("HV reflect cpu=4 owner=guest host 0x4123abc -> guest 0x123abc consumer=-1");
    machine.wait_for_line(
        "HV injected: broadcast to every vCPU, data on vCPU 0, delivered=4 shutdown=0 skipped=0",
    );
    machine.wait_for_line(
        "HV action-required error consumed by no vCPU of the domain: reflected as action-optional",
    );
    // AR cleared, MCACOD 0x0134 (data load) became 0x00c0; MCG_STATUS lost EIPV.
    machine.wait_for_line(&data_line(0, 0x5, 0xBD00_0000_0000_00C0, GUEST_ADDR, 0x86));
    machine.wait_for_line("VCPU 0 MC action optional: offlining page 0x123000");
    for vcpu in 1..4 {
        machine.wait_for_line(&format!("VCPU {vcpu} MC mcg_status=0x5 no-bank"));
    }
    machine.assert_rendezvous(4, 1);
    machine.expect_done();
    assert!(machine.lines_containing("MC action required").is_empty());
}

#[test]
fn a_corrected_error_is_never_reflected_and_no_cmci_is_raised() {
    let mut machine = Qemu::start(Scenario::Corrected);
    machine.wait_until_ready(4);
    machine.inject_mce(&Injection::corrected(0, 2, HOST_ADDR));
    machine.wait_for_line("HOST POLL cpu=0 bank=2 status=0x9c00000000000090 [VAL|EN|MISCV|ADDRV]");
    machine.wait_for_line("class: host only: corrected error");
    for vcpu in 0..4 {
        machine.wait_for_line(&format!(
            "VCPU {vcpu} CE seen mcg_status=0x0 mc1_status=0x0 machine_checks=0"
        ));
    }
    machine.expect_done();
    assert!(
        machine.lines_containing("HOST MC").is_empty(),
        "a corrected error raises no #MC"
    );
    assert!(machine.lines_containing("HV reflect").is_empty());
}

#[test]
fn an_amd_guest_takes_the_error_on_one_vcpu_only() {
    let mut machine = Qemu::start_on(Scenario::Amd, 4, AMD_CPU);
    machine.wait_for_line("HV host AMD MCG_CAP 0x100010a (banks=10 CTL_P SER_P); guest profile AMD MCG_CAP 0x2 (banks=2)");
    machine.wait_until_ready(4);
    machine.inject_mce(&Injection::amd_uncorrected(2, HOST_ADDR));
    machine.wait_for_line(
        "HV cpu=2 bank=4 class: reflect: AMD uncorrected memory error (action required)",
    );
    machine.wait_for_line("HV injected: single vCPU, data on vCPU 2, delivered=1 shutdown=0");
    // MSCOD cleared; AMD's POISON bit passes through.
    machine.wait_for_line(&data_line(2, 0x7, 0xB400_0800_0000_0136, GUEST_ADDR, 0));
    machine.wait_for_line("VCPU 2 MC local: no rendezvous");
    machine.expect_done();
    for vcpu in [0, 1, 3] {
        assert!(
            machine
                .lines_containing(&format!("VCPU {vcpu} MC"))
                .is_empty(),
            "AMD: never broadcast"
        );
    }
}

#[test]
fn the_lmce_profile_is_refused_on_a_host_without_lmce_p() {
    let mut machine = Qemu::start(Scenario::LmceProfile);
    machine.wait_for_line(
        "cannot create the guest's vMCE: profile Intel+LMCE cannot be backed: LMCE asked for but host lacks LMCE_P",
    );
    machine.expect_exit(ExitCode::KernelFailure);
}

#[test]
fn a_single_cpu_guest() {
    let mut machine = Qemu::start_with_cpus(Scenario::Mce, 1);
    machine.wait_until_ready(1);
    machine.inject_mce(&Injection::srar(0, HOST_ADDR));
    machine.wait_for_line(
        "HV injected: broadcast to every vCPU, data on vCPU 0, delivered=1 shutdown=0",
    );
    machine.wait_for_line(&data_line(0, 0x7, 0xBD80_0000_0000_0134, GUEST_ADDR, 0x86));
    machine.assert_rendezvous(1, 1);
    machine.expect_exit(ExitCode::Success);
}

/// A host #MC may interrupt its CPU in the middle of a console line (QEMU raises the
/// monitor's #MC when the CPU next looks for interrupts: in the broadcast form, the other
/// CPUs' #MCs can come while they print their guests' lines). Its lines are held back and
/// follow that line, whole, instead of tearing it. Here the line is held open on purpose:
/// the kernel's `hold_line` starts it and waits for the #MC in ring 0, and the harness raises
/// the #MC only once the kernel's progress cell, read through the monitor, says the line is
/// open.
#[test]
fn a_host_machine_check_in_the_middle_of_a_console_line_does_not_tear_it() {
    const HELD: &str = "HV vcpu 1 HOLD this line was open when CPU 1 took a host machine check; \
                        its lines follow";
    let mut machine = Qemu::start(Scenario::HeldLine);
    let announced = machine.wait_for_line("HV vcpu 1 holds a console line open");
    let progress = announced
        .rsplit_once("progress at 0x")
        .and_then(|(_, hex)| u64::from_str_radix(hex, 16).ok())
        .expect("the progress cell's address");
    machine.wait_for_physical_u32(progress, 1);
    machine.inject_mce(&Injection::ucna(1, 1));
    machine.expect_done();
    let transcript = machine.transcript();
    assert_eq!(
        machine.lines_containing(" HOLD "),
        [HELD],
        "the held line is whole"
    );
    let held = transcript.iter().position(|line| line == HELD).unwrap();
    let after: Vec<&str> = transcript[held + 1..]
        .iter()
        .take(3)
        .map(String::as_str)
        .collect();
    assert!(
        after[0].starts_with("HOST MC cpu=1 mcg_status=0x5 (RIPV|MCIP) rip=")
            && after[0].ends_with(" ring=0"),
        "the #MC interrupted the kernel, and its lines follow the held one: {after:?}"
    );
    assert!(
        after[1].starts_with("HOST MC cpu=1 bank=1 status=0xa000000000000000 [VAL|UC]"),
        "{after:?}"
    );
    assert_eq!(
        after[2],
        "HV cpu=1 bank=1 class: host only: UCNA (uncorrected, no action required)"
    );
}

#[test]
fn an_unknown_scenario_is_a_kernel_panic() {
    let mut machine = Qemu::start(BootArgs::unknown_scenario("no-such-scenario"));
    machine.wait_for_line("KERNEL PANIC cpu=0: panicked at");
    machine.expect_exit(ExitCode::KernelFailure);
}
