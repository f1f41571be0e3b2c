//! Pausing the domain, as a toolstack does for the stop-and-copy phase of a migration.
//!
//! While the domain is paused no vCPU re-enters its guest: every return to ring 3 goes
//! through `vcpu::before_return_to_guest`, which parks the CPU here first (in `hlt`, with
//! interrupts on, so kicks, the timer and host machine checks still reach it). A parked vCPU
//! takes no pending #MC: an error reflected now stays in flight in vmce's state, pending flag
//! and banks, which is exactly what the final save must carry.

#![cfg(target_os = "none")]

use crate::{cpu, kprintln, smp};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

static PAUSED: AtomicBool = AtomicBool::new(false);
/// vCPUs currently parked.
static PARKED: AtomicU32 = AtomicU32::new(0);

fn every_cpu() -> u32 {
    let count = smp::cpu_count();
    if count >= 32 {
        u32::MAX
    } else {
        (1 << count) - 1
    }
}

/// Stops every vCPU at its next return to the guest, and kicks them all so that it comes
/// now. [`parked`] says when they have all stopped.
pub fn pause_domain() {
    PAUSED.store(true, Ordering::Release);
    smp::kick_cpus(every_cpu());
}

/// Lets every parked vCPU return to its guest.
pub fn unpause_domain() {
    PAUSED.store(false, Ordering::Release);
    smp::kick_cpus(every_cpu());
}

/// How many vCPUs are parked.
pub fn parked() -> u32 {
    PARKED.load(Ordering::Acquire)
}

/// Called on every return to vCPU `cpu`'s guest: waits here while the domain is paused.
pub fn park_while_paused(cpu: u32) {
    if !PAUSED.load(Ordering::Acquire) {
        return;
    }
    PARKED.fetch_add(1, Ordering::AcqRel);
    kprintln!("HV vcpu {cpu} paused");
    while PAUSED.load(Ordering::Acquire) {
        cpu::wait_for_interrupt();
    }
    PARKED.fetch_sub(1, Ordering::AcqRel);
    kprintln!("HV vcpu {cpu} unpaused");
}
