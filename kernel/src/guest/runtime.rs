//! The guest-side primitives every program and handler is built from: hypercalls (console,
//! sleep, panic, trap return), the trapped `rdmsr`/`wrmsr`, start and finish, and a read that
//! survives a machine check. All `#[inline(always)]`: they run in ring 3, inside the caller.

use super::handlers::{on_general_protection, on_machine_check};
use super::shared::{NR_VCPUS, RECOVERY_RIP};
use crate::hypercall::nr;
use core::arch::asm;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[inline(always)]
pub(super) fn hypercall(number: u64, a0: u64, a1: u64) -> u64 {
    let result;
    // SAFETY: `int 0x80` enters the kernel's hypercall handler, which preserves every
    // register but rax and only reads the guest memory named by the arguments.
    unsafe {
        asm!("int 0x80", inlateout("rax") number => result, in("rdi") a0, in("rsi") a1, options(nostack))
    }
    result
}

#[inline(always)]
pub(super) fn puts(text: &[u8]) {
    hypercall(nr::PUTS, text.as_ptr() as u64, text.len() as u64);
}

#[inline(always)]
pub(super) fn put_hex(value: u64) {
    hypercall(nr::PUT_HEX, value, 0);
}

#[inline(always)]
pub(super) fn put_dec(value: u64) {
    hypercall(nr::PUT_DEC, value, 0);
}

#[inline(always)]
pub(super) fn end_line() {
    hypercall(nr::END_LINE, 0, 0);
}

/// Sleeps in the kernel until an interrupt (a kick, a machine check) reaches this CPU.
#[inline(always)]
pub(super) fn block() {
    hypercall(nr::BLOCK, 0, 0);
}

/// Sleeps in the kernel until an interrupt reaches this CPU, unless `cell` no longer holds
/// `value` when the kernel looks (with interrupts off, just before it halts). A machine check
/// that interrupts the guest between its own test of `cell` and this call runs its handler
/// first, and the handler's update of `cell` then stops the sleep, which an unconditional
/// [`block`] would not: its wake-up (the kick) was spent on the handler.
#[inline(always)]
pub(super) fn block_while(cell: &AtomicU32, value: u32) {
    hypercall(nr::BLOCK, cell as *const AtomicU32 as u64, u64::from(value));
}

#[inline(always)]
pub(super) fn guest_panic(reason: &[u8]) -> ! {
    // SAFETY: the panic hypercall ends the run and never returns to the guest.
    unsafe {
        asm!("int 0x80", in("rax") nr::PANIC, in("rdi") reason.as_ptr(), in("rsi") reason.len(), options(noreturn))
    }
}

#[inline(always)]
pub(super) fn trap_return(resume_rip: u64) -> ! {
    // SAFETY: the return-from-trap hypercall replaces this context with the interrupted one.
    unsafe { asm!("int 0x80", in("rax") nr::TRAP_RETURN, in("rdi") resume_rip, options(noreturn)) }
}

/// `rdmsr` as a PV guest executes it: at CPL 3 it faults and the kernel emulates it.
#[inline(always)]
pub(super) fn rdmsr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: at CPL 3 this traps to the kernel, which emulates it or reflects #GP.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high, options(nostack)) }
    (u64::from(high) << 32) | u64::from(low)
}

/// `wrmsr`, trapped and emulated like [`rdmsr`].
#[inline(always)]
pub(super) fn wrmsr(msr: u32, value: u64) {
    // SAFETY: as for `rdmsr`.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack))
    }
}

#[inline(always)]
pub(super) fn rdtsc() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: rdtsc is allowed at CPL 3 (CR4.TSD is clear) and only reads the counter.
    unsafe { asm!("rdtsc", out("eax") low, out("edx") high, options(nomem, nostack)) }
    (u64::from(high) << 32) | u64::from(low)
}

/// Publishes the vCPU count, registers the trap table and says hello.
///
/// The count comes first: a vCPU restored with a pending #MC takes it on its first entry to
/// the kernel (the trap-table hypercall), and the handler's rendezvous needs the count.
#[inline(always)]
pub(super) fn start(nr_vcpus: u64) {
    NR_VCPUS.store(nr_vcpus as u32, Ordering::Release);
    let machine_check: extern "C" fn(u64, u64, u64, u64) -> ! = on_machine_check;
    let general_protection: extern "C" fn(u64, u64, u64, u64) -> ! = on_general_protection;
    hypercall(
        nr::SET_TRAP_TABLE,
        machine_check as usize as u64,
        general_protection as usize as u64,
    );
    hypercall(nr::HELLO, 0, 0);
}

/// Reads the `u64` at `address`, arming this vCPU's recovery point around the load: when the
/// load consumes a machine check, the handler resumes at the recovery point and this returns
/// `None`.
#[inline(always)]
pub(super) fn read_recovering(me: usize, address: u64) -> Option<u64> {
    let slot = &RECOVERY_RIP[me] as *const AtomicU64 as *mut u64;
    let value: u64;
    let failed: u64;
    // SAFETY: `slot` is this vCPU's cell of guest data; `address` is in guest RAM, which is
    // mapped (or, for a broken frame, faults into the hypervisor, which raises a machine
    // check whose handler resumes at label 3 with every register as it was at the load).
    unsafe {
        asm!(
            "lea {fixup}, [rip + 3f]",
            "mov qword ptr [{slot}], {fixup}",
            "mov {value}, qword ptr [{address}]",
            "xor {failed:e}, {failed:e}",
            "jmp 4f",
            "3:",
            "mov {failed:e}, 1",
            "xor {value:e}, {value:e}",
            "4:",
            "mov qword ptr [{slot}], 0",
            slot = in(reg) slot,
            address = in(reg) address,
            fixup = out(reg) _,
            value = out(reg) value,
            failed = out(reg) failed,
            options(nostack)
        )
    }
    (failed == 0).then_some(value)
}

#[inline(always)]
pub(super) fn finish() -> ! {
    hypercall(nr::DONE, 0, 0);
    loop {
        block();
    }
}

/// Spins in ring 3 until `flag` is non-zero, as long as it takes (a run that hangs here is
/// caught by the harness's deadline, not by a guess at how fast the host runs the vCPUs).
#[inline(always)]
pub(super) fn wait_for(flag: &AtomicU32) {
    while flag.load(Ordering::Acquire) == 0 {
        core::hint::spin_loop();
    }
}
