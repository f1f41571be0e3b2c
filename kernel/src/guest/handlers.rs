//! The guest's trap handlers, registered with the kernel by `start`: #MC (modelled on what
//! Linux does) and #GP (a trapped MSR access the kernel refused).

use super::runtime::*;
use super::shared::*;
use core::sync::atomic::Ordering;
use vmce::registers::msr::{IA32_MC0_CTL, IA32_MCG_CAP, IA32_MCG_STATUS};
use vmce::registers::{McgCap, MciStatus};

// `MCi_STATUS` bits as plain numbers, computed at compile time: guest code must not call
// into kernel (or vmce) text.
const VAL: u64 = MciStatus::VAL.bits();
const UC: u64 = MciStatus::UC.bits();
const MISCV: u64 = MciStatus::MISCV.bits();
const ADDRV: u64 = MciStatus::ADDRV.bits();
/// Action required: the interrupted instruction consumed the error.
const AR: u64 = MciStatus::AR.bits();

/// The guest's machine-check handler, modelled on what Linux does on #MC.
#[unsafe(link_section = ".guest.text")]
pub(super) extern "C" fn on_machine_check(_vector: u64, _error: u64, _rip: u64, vcpu: u64) -> ! {
    let me = slot(vcpu);
    let mcg_status = rdmsr(IA32_MCG_STATUS);
    let bank_count = (rdmsr(IA32_MCG_CAP) & McgCap::COUNT_MASK) as u32;
    let mut valid_banks = 0u32;
    let mut action_required = false;
    for bank in 0..bank_count {
        let status_msr = IA32_MC0_CTL + 4 * bank + 1;
        let status = rdmsr(status_msr);
        if status & VAL == 0 {
            continue;
        }
        let addr = if status & ADDRV != 0 {
            rdmsr(status_msr + 1)
        } else {
            0
        };
        let misc = if status & MISCV != 0 {
            rdmsr(status_msr + 2)
        } else {
            0
        };
        valid_banks += 1;
        action_required |= status & AR != 0;
        for (cell, value) in LAST_ERROR[me].iter().zip([mcg_status, status, addr, misc]) {
            cell.store(value, Ordering::Relaxed);
        }
        guest_print!(
            b"MC mcg_status=",
            hex(mcg_status),
            b" bank",
            dec(u64::from(bank)),
            b" status=",
            hex(status),
            b" addr=",
            hex(addr),
            b" misc=",
            hex(misc)
        );
        end_line();
        if status & (UC | AR | ADDRV) == UC | ADDRV {
            puts(guest_text!(b"MC action optional: offlining page "));
            put_hex(addr & !0xFFF);
            end_line();
        }
        wrmsr(status_msr, 0);
    }
    if valid_banks == 0 {
        guest_print!(b"MC mcg_status=", hex(mcg_status), b" no-bank");
        end_line();
    }

    let round = ROUNDS_DONE[me].load(Ordering::Acquire) + 1;
    if LOCAL_MACHINE_CHECKS.load(Ordering::Acquire) != 0 {
        puts(guest_text!(b"MC local: no rendezvous"));
        end_line();
    } else if SKIP_RENDEZVOUS.load(Ordering::Acquire) == vcpu as u32 {
        puts(guest_text!(b"MC skipping the rendezvous"));
        end_line();
    } else {
        let online = NR_VCPUS
            .load(Ordering::Acquire)
            .wrapping_sub(OFFLINE_VCPUS.load(Ordering::Acquire));
        let everyone = round.wrapping_mul(online);
        ARRIVED.fetch_add(1, Ordering::AcqRel);
        let timeout = RENDEZVOUS_TIMEOUT_TICKS.load(Ordering::Acquire);
        let start = rdtsc();
        while ARRIVED.load(Ordering::Acquire) < everyone {
            if timeout != 0 && rdtsc().wrapping_sub(start) > timeout {
                guest_panic(guest_text!(b"rendezvous-timeout"));
            }
            core::hint::spin_loop();
        }
        puts(guest_text!(b"RENDEZVOUS OK round="));
        put_dec(u64::from(round));
        end_line();
    }

    wrmsr(IA32_MCG_STATUS, 0);
    ROUNDS_DONE[me].store(round, Ordering::Release);
    HANDLED_ANYWHERE.fetch_add(1, Ordering::AcqRel);
    guest_print!(
        b"MC-DONE round=",
        dec(u64::from(round)),
        b" mcg_status=",
        hex(rdmsr(IA32_MCG_STATUS))
    );
    end_line();
    if action_required {
        let recovery = RECOVERY_RIP[me].swap(0, Ordering::AcqRel);
        if recovery != 0 {
            puts(guest_text!(
                b"MC action required: resuming at the recovery point"
            ));
            end_line();
            trap_return(recovery)
        }
        if ACTION_REQUIRED_NEEDS_RECOVERY.load(Ordering::Acquire) != 0 {
            guest_panic(guest_text!(b"action-required-without-recovery-point"))
        }
    }
    trap_return(0)
}

/// The guest's #GP handler: counts and reports the fault, then skips the faulting MSR
/// instruction (the only kind this guest expects to fault).
#[unsafe(link_section = ".guest.text")]
pub(super) extern "C" fn on_general_protection(vector: u64, error: u64, rip: u64, vcpu: u64) -> ! {
    GP_COUNT[slot(vcpu)].fetch_add(1, Ordering::AcqRel);
    guest_print!(
        b"GP vector=",
        dec(vector),
        b" error=",
        hex(error),
        b" rip=",
        hex(rip)
    );
    end_line();
    // SAFETY: `rip` is the faulting instruction in guest text, readable at CPL 3.
    let (first, second) = unsafe {
        (
            core::ptr::read_volatile(rip as *const u8),
            core::ptr::read_volatile((rip + 1) as *const u8),
        )
    };
    if first == 0x0F && (second == 0x30 || second == 0x32) {
        trap_return(rip + 2)
    }
    guest_panic(guest_text!(b"unexpected-gp"))
}
