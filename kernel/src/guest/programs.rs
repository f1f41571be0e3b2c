//! The scenario programs: each vCPU's guest enters one with rdi = its vCPU number, rsi = the
//! vCPU count and rdx = the scenario's parameter (the kernel's scenario table says which
//! program and parameter a scenario runs).

use super::runtime::*;
use super::shared::*;
use super::{GUEST_RAM_BASE, RENDEZVOUS_TIMEOUT};
use crate::hypercall::nr;
use core::sync::atomic::Ordering;
use vmce::registers::MciCtl2;
use vmce::registers::msr::{IA32_MCG_STATUS, ia32_mci_ctl2, ia32_mci_status};

// Computed at compile time: guest code must not call into kernel (or vmce) text.
const MC1_STATUS: u32 = ia32_mci_status(1);
const MC1_CTL2: u32 = ia32_mci_ctl2(1);
const CMCI_EN: u64 = MciCtl2::CMCI_EN.bits();

/// `scenario=boot`: start, say hello, finish.
#[unsafe(link_section = ".guest.text")]
pub extern "C" fn boot_guest(_vcpu: u64, nr_vcpus: u64, _parameter: u64) -> ! {
    start(nr_vcpus);
    finish()
}

/// `mce_guest`'s parameter: bits 0-7 are the rounds to wait for, then flags. With this one the
/// guest spins in ring 3 instead of blocking in the kernel.
pub const MCE_BUSY: u64 = 1 << 8;
/// With this one the rendezvous gives up after [`RENDEZVOUS_TIMEOUT`] (a guest panic).
pub const MCE_RENDEZVOUS_TIMES_OUT: u64 = 1 << 9;

/// `scenario=mce` / `mce-twice` / `mce-busy` / `legacy-vcpu0`: wait until this vCPU has
/// handled the given number of machine checks.
///
/// The vCPU sleeps in the kernel ([`block_while`], so a #MC finds its CPU in ring 0, or in
/// ring 3 between two sleeps) or, with [`MCE_BUSY`], spins in ring 3 for good: every vCPU but
/// vCPU 0 counts itself in [`SPINNING_IN_RING_3`] and from then on runs nothing but the spin
/// loop below until its machine check (no hypercall, no fault, and no interrupt is aimed at
/// it before then), and vCPU 0 says so once all have (`VCPU 0 BUSY ...`). That line is what
/// the harness waits for before it raises the #MC on one of them: the #MC then cannot find
/// that CPU anywhere but in ring 3. After its machine check a busy vCPU still sleeps on the
/// count it read before: the window between a guest's test and its sleep, stretched over the
/// whole wait, out of which [`block_while`] must return at once.
#[unsafe(link_section = ".guest.text")]
pub extern "C" fn mce_guest(vcpu: u64, nr_vcpus: u64, parameter: u64) -> ! {
    if parameter & MCE_RENDEZVOUS_TIMES_OUT != 0 {
        RENDEZVOUS_TIMEOUT_TICKS.store(RENDEZVOUS_TIMEOUT, Ordering::Release);
    }
    start(nr_vcpus);
    let busy = parameter & MCE_BUSY != 0;
    let rounds = (parameter & 0xFF) as u32;
    let done = &ROUNDS_DONE[slot(vcpu)];
    if busy {
        announce_spinning(vcpu, nr_vcpus);
    }
    loop {
        let seen = done.load(Ordering::Acquire);
        if seen >= rounds {
            break;
        }
        if busy {
            while done.load(Ordering::Acquire) == seen {
                core::hint::spin_loop();
            }
        }
        block_while(done, seen);
    }
    finish()
}

/// `mce-busy`: every vCPU but 0 counts itself as spinning in ring 3; vCPU 0 waits until all
/// have, then reports it.
#[inline(always)]
fn announce_spinning(vcpu: u64, nr_vcpus: u64) {
    if vcpu != 0 {
        SPINNING_IN_RING_3.fetch_add(1, Ordering::AcqRel);
        return;
    }
    while u64::from(SPINNING_IN_RING_3.load(Ordering::Acquire)) + 1 < nr_vcpus {
        core::hint::spin_loop();
    }
    puts(guest_text!(b"BUSY vcpus="));
    put_dec(nr_vcpus - 1);
    puts(guest_text!(
        b" spin in ring 3 and enter the kernel only on a machine check"
    ));
    end_line();
}

/// `scenario=mce-timeout`: like `mce`, but the last vCPU never joins the rendezvous, and the
/// others give up after [`RENDEZVOUS_TIMEOUT`].
#[unsafe(link_section = ".guest.text")]
pub extern "C" fn mce_timeout_guest(vcpu: u64, nr_vcpus: u64, _parameter: u64) -> ! {
    SKIP_RENDEZVOUS.store(nr_vcpus.wrapping_sub(1) as u32, Ordering::Release);
    mce_guest(vcpu, nr_vcpus, 1 | MCE_RENDEZVOUS_TIMES_OUT)
}

/// `scenario=mcip-held`: like `mce`, but the last vCPU never joins the rendezvous, and the
/// others wait for it without a timeout: they hold `MCIP` until the run ends.
#[unsafe(link_section = ".guest.text")]
pub extern "C" fn mcip_held_guest(vcpu: u64, nr_vcpus: u64, _parameter: u64) -> ! {
    SKIP_RENDEZVOUS.store(nr_vcpus.wrapping_sub(1) as u32, Ordering::Release);
    mce_guest(vcpu, nr_vcpus, 1)
}

/// `scenario=held-line`: vCPU 1 has the kernel hold a console line open until a host machine
/// check reaches its CPU (the `hold_line` hypercall); then every vCPU finishes.
#[unsafe(link_section = ".guest.text")]
pub extern "C" fn held_line_guest(vcpu: u64, nr_vcpus: u64, _parameter: u64) -> ! {
    start(nr_vcpus);
    if vcpu == 1 {
        hypercall(nr::HOLD_LINE, 0, 0);
    }
    finish()
}

/// `scenario=offline-vcpu`: the last vCPU starts, then goes offline as an OS takes a CPU
/// down (out of the rendezvous count, `CR4.MCE` cleared, the hypervisor told) and parks for
/// good; the others wait for one machine check like `mce`, rendezvousing the vCPUs online.
#[unsafe(link_section = ".guest.text")]
pub extern "C" fn offline_guest(vcpu: u64, nr_vcpus: u64, _parameter: u64) -> ! {
    if vcpu + 1 != nr_vcpus {
        mce_guest(vcpu, nr_vcpus, 1)
    }
    start(nr_vcpus);
    OFFLINE_VCPUS.fetch_add(1, Ordering::AcqRel);
    hypercall(nr::SET_CR4_MCE, 0, 0);
    hypercall(nr::SET_UP, 0, 0);
    // Its part is over; the run ends when the vCPUs online are done too.
    finish()
}

/// `scenario=srar-unconsumed`: like `mce` on every CPU but the last, which runs no vCPU
/// ([`crate::scenario::Setup::spare_cpu`]); an action-required #MC without a recovery point is a guest panic.
#[unsafe(link_section = ".guest.text")]
pub extern "C" fn srar_unconsumed_guest(vcpu: u64, nr_vcpus: u64, _parameter: u64) -> ! {
    ACTION_REQUIRED_NEEDS_RECOVERY.store(1, Ordering::Release);
    mce_guest(vcpu, nr_vcpus, 1)
}

/// `scenario=cr4-off`: every vCPU clears its (virtual) CR4.MCE, then waits for a machine
/// check it cannot take.
#[unsafe(link_section = ".guest.text")]
pub extern "C" fn cr4_off_guest(vcpu: u64, nr_vcpus: u64, _parameter: u64) -> ! {
    hypercall(nr::SET_CR4_MCE, 0, 0);
    mce_guest(vcpu, nr_vcpus, 1)
}

/// `scenario=amd`: machine checks are local, so only the vCPU that gets one handles it; every
/// vCPU finishes once one was handled anywhere.
#[unsafe(link_section = ".guest.text")]
pub extern "C" fn local_guest(_vcpu: u64, nr_vcpus: u64, _parameter: u64) -> ! {
    LOCAL_MACHINE_CHECKS.store(1, Ordering::Release);
    start(nr_vcpus);
    wait_for(&HANDLED_ANYWHERE);
    finish()
}

/// `scenario=corrected`: vCPU 0 exits to the hypervisor (which polls the host banks) until
/// the host has seen an error; then every vCPU reports what it sees of its own MCA.
#[unsafe(link_section = ".guest.text")]
pub extern "C" fn corrected_guest(vcpu: u64, nr_vcpus: u64, _parameter: u64) -> ! {
    start(nr_vcpus);
    if vcpu == 0 {
        let mut found = 0;
        while found == 0 {
            found = hypercall(nr::POLL_HOST_MCA, 0, 0);
        }
        puts(guest_text!(b"CE host-found="));
        put_dec(found);
        end_line();
        LEADER_DONE.store(1, Ordering::Release);
    } else {
        wait_for(&LEADER_DONE);
    }
    guest_print!(
        b"CE seen mcg_status=",
        hex(rdmsr(IA32_MCG_STATUS)),
        b" mc1_status=",
        hex(rdmsr(MC1_STATUS)),
        b" machine_checks=",
        dec(u64::from(ROUNDS_DONE[slot(vcpu)].load(Ordering::Acquire)))
    );
    end_line();
    finish()
}

/// `scenario=migrate-source`: every vCPU enables CMCI on bank 1 with threshold `vcpu + 1`
/// (state a migration must carry), then waits for one machine check like `mce`. When the
/// domain migrates away the machine stops first; when the migration is abandoned the
/// in-flight machine check is taken here.
#[unsafe(link_section = ".guest.text")]
pub extern "C" fn migrate_source_guest(vcpu: u64, nr_vcpus: u64, _parameter: u64) -> ! {
    // Before `start`, so that READY means every vCPU has written it.
    wrmsr(MC1_CTL2, CMCI_EN | (vcpu + 1));
    mce_guest(vcpu, nr_vcpus, 1)
}

/// `scenario=migrate-dest`: the guest restored on the destination. Every vCPU takes the
/// machine checks restored pending (on its first entry to the kernel) and reports what it
/// has; then the last vCPU reads the `touch=` address, through a recovery point, while the
/// others wait.
#[unsafe(link_section = ".guest.text")]
pub extern "C" fn migrate_dest_guest(vcpu: u64, nr_vcpus: u64, _parameter: u64) -> ! {
    start(nr_vcpus);
    let me = slot(vcpu);
    guest_print!(
        b"RESUMED machine_checks=",
        dec(u64::from(ROUNDS_DONE[me].load(Ordering::Acquire))),
        b" mcg_status=",
        hex(rdmsr(IA32_MCG_STATUS)),
        b" mc1_ctl2=",
        hex(rdmsr(MC1_CTL2))
    );
    end_line();
    RESUMED.fetch_add(1, Ordering::AcqRel);
    if vcpu + 1 != nr_vcpus {
        wait_for(&LEADER_DONE);
        finish()
    }
    while u64::from(RESUMED.load(Ordering::Acquire)) < nr_vcpus {
        core::hint::spin_loop();
    }
    let touch = TOUCH_GUEST_PHYSICAL.load(Ordering::Acquire);
    if touch != 0 {
        puts(guest_text!(b"TOUCH reading guest "));
        put_hex(touch);
        end_line();
        match read_recovering(me, GUEST_RAM_BASE + touch) {
            Some(value) => {
                guest_print!(b"TOUCH read ok value=", hex(value), b": no machine check");
            }
            None => puts(guest_text!(b"TOUCH machine check: read abandoned")),
        }
        end_line();
    }
    LEADER_DONE.store(1, Ordering::Release);
    finish()
}
