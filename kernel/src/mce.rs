//! Host machine-check architecture: per-CPU enabling and the host #MC handler.
//!
//! The handler runs on the #MC interrupt-stack-table stack of the CPU that took the
//! exception, wherever that CPU was (guest or kernel). It reads the host registers through
//! vmce's collector over the real `rdmsr`, prints them, releases the hardware (clears the valid banks' STATUS and writes
//! `MCG_STATUS` = 0, which clears MCIP: a second #MC while MCIP is set is a shutdown, and
//! QEMU turns it into a triple fault), and hands the error to [`hv::reflect_host_mce`].

#![cfg(target_os = "none")]

use crate::trap::TrapFrame;
use crate::{hv, kprintln};
use core::sync::atomic::{AtomicU32, Ordering};
use vmce::arch::HardwareMsrs;
use vmce::host::{HostCapabilities, MsrAccess, collect, release};
use vmce::registers::{McgCap, McgStatus, msr};

/// Host #MCs taken so far, on every CPU.
static HOST_MACHINE_CHECKS: AtomicU32 = AtomicU32::new(0);
/// Host #MCs a run must see before it may end (`host-mces=N` on the command line): QEMU's
/// `mce -b` raises the extra #MCs on the other CPUs asynchronously, possibly after the
/// guests are done.
static EXPECTED_HOST_MACHINE_CHECKS: AtomicU32 = AtomicU32::new(0);

/// Sets how many host #MCs the run expects.
pub fn expect_host_machine_checks(count: u32) {
    EXPECTED_HOST_MACHINE_CHECKS.store(count, Ordering::Release);
}

/// Waits until every expected host #MC arrived, as long as it takes: QEMU raises them when
/// each CPU next looks for interrupts, which no bound on time can promise, and a run that
/// never gets one is caught by the harness's deadline.
pub fn wait_for_expected_machine_checks() {
    let expected = EXPECTED_HOST_MACHINE_CHECKS.load(Ordering::Acquire);
    while HOST_MACHINE_CHECKS.load(Ordering::Acquire) < expected {
        core::hint::spin_loop();
    }
}

/// Host #MCs taken so far, on every CPU.
pub fn host_machine_checks() -> u32 {
    HOST_MACHINE_CHECKS.load(Ordering::Acquire)
}

/// Enables machine-check reporting on this CPU; returns its `MCG_CAP`.
///
/// QEMU drops an uncorrected injection unless `MCG_CTL` (when `CTL_P`) and the bank's
/// `MCi_CTL` are all ones, and turns it into a triple fault when CR4.MCE is clear.
pub fn init_cpu() -> McgCap {
    // SAFETY: CPL 0; the kernel only runs on CPUs with MCA (QEMU `-cpu max`), so MCG_CAP,
    // MCG_CTL (when CTL_P) and banks below the count exist.
    let mut msrs = unsafe { HardwareMsrs::new() };
    let cap = McgCap::from_bits_retain(msrs.read(msr::IA32_MCG_CAP));
    if cap.contains(McgCap::CTL_P) {
        msrs.write(msr::IA32_MCG_CTL, u64::MAX);
    }
    for bank in 0..cap.count().min(msr::ARCH_BANKS) {
        msrs.write(msr::ia32_mci_ctl(bank), u64::MAX);
        msrs.write(msr::ia32_mci_status(bank), 0);
    }
    // SAFETY: setting CR4.MCE only enables the #MC exception, whose handler is installed.
    unsafe { crate::cpu::write_cr4(crate::cpu::read_cr4() | crate::cpu::CR4_MCE) };
    cap
}

static HOST: spin::Once<HostCapabilities> = spin::Once::new();

/// The host's capabilities (CPUID vendor and `MCG_CAP`), read once on first use, or a
/// kernel panic on a CPU vmce cannot model. QEMU gives every CPU the same model, so the
/// bootstrap processor's answer holds for all.
pub fn host_capabilities() -> HostCapabilities {
    // SAFETY: CPL 0.
    *HOST.call_once(|| match unsafe { vmce::arch::host_capabilities() } {
        Some(host) => host,
        None => panic!("this CPU has no MCA, or a vendor vmce does not model"),
    })
}

/// Polls this CPU's banks for errors that raise no #MC (corrected errors, UCNA), the way a
/// hypervisor's periodic poller does: each is classified, logged and released. Returns how
/// many valid banks were found. Nothing here ever reaches a guest: vmce never injects a CMCI.
pub fn poll(cpu: u32) -> u32 {
    let host = host_capabilities();
    // SAFETY: CPL 0; vmce names only MSRs the host's MCG_CAP has.
    let mut msrs = unsafe { HardwareMsrs::new() };
    let event = collect(&mut msrs, &host);
    for bank in event.banks() {
        let disposition = vmce::classify::classify(&host, event.mcg_status, bank.status, bank.misc);
        kprintln!(
            "HOST POLL cpu={cpu} bank={} status={} class: {disposition}",
            bank.bank,
            bank.status.describe(host.vendor())
        );
        msrs.write(msr::ia32_mci_status(bank.bank), 0);
    }
    event.banks().len() as u32
}

/// The host #MC handler (vector 18), on CPU `cpu`: collect with vmce through the real
/// MSRs, release the hardware, and hand the event to the virtual MCA.
pub fn host_machine_check(cpu: u32, frame: &TrapFrame) {
    let host = host_capabilities();
    let _ = HOST_MACHINE_CHECKS.fetch_add(1, Ordering::AcqRel);
    // SAFETY: CPL 0 (a trap handler); vmce names only MSRs the host's MCG_CAP has.
    let mut msrs = unsafe { HardwareMsrs::new() };
    let event = collect(&mut msrs, &host);
    release(&mut msrs, &event);
    kprintln!(
        "HOST MC cpu={cpu} mcg_status={} rip={:#x} ring={}",
        event.mcg_status,
        frame.rip,
        frame.cs & 3
    );
    for bank in event.banks() {
        kprintln!(
            "HOST MC cpu={cpu} bank={} status={} addr={:#x} misc={:#x}",
            bank.bank,
            bank.status.describe(host.vendor()),
            bank.addr,
            bank.misc.0
        );
    }
    if !event.mcg_status.contains(McgStatus::RIPV) && !event.mcg_status.contains(McgStatus::EIPV) {
        panic!("CPU {cpu}: machine check without RIPV or EIPV, nothing can resume");
    }
    hv::reflect_host_mce(cpu, &host, &event);
}
