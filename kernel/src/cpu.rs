//! Thin wrappers over the privileged x86 instructions the kernel uses: port I/O, MSRs,
//! control registers, the TSC and halting.

#![cfg(target_os = "none")]

use core::arch::asm;

/// CR4.MCE: machine-check exceptions enabled.
pub const CR4_MCE: u64 = 1 << 6;

/// Writes one byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: the kernel runs at CPL 0; port writes touch device state only (the ports used
    // are COM1, the legacy PICs, fw_cfg and isa-debug-exit), never memory.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    }
}

/// Writes a 16-bit value to an I/O port.
pub fn outw(port: u16, value: u16) {
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags))
    }
}

/// Writes a 32-bit value to an I/O port.
pub fn outl(port: u16, value: u32) {
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    }
}

/// Reads one byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as for `outb`; reads have no memory effects.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    }
    value
}

/// Reads CR4.
pub fn read_cr4() -> u64 {
    let value: u64;
    // SAFETY: reading CR4 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) value, options(nomem, nostack, preserves_flags)) }
    value
}

/// Writes CR4.
///
/// # Safety
/// The new value must keep paging (PAE) and every other mode the kernel relies on.
pub unsafe fn write_cr4(value: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { asm!("mov cr4, {}", in(reg) value, options(nostack, preserves_flags)) }
}

/// Reads CR2 (the faulting address of the last page fault).
pub fn read_cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) }
    value
}

/// Reloads CR3 with its current value, flushing non-global TLB entries.
pub fn flush_tlb() {
    // SAFETY: writing back the same page-table root changes no mapping.
    unsafe { asm!("mov {0}, cr3", "mov cr3, {0}", out(reg) _, options(nostack, preserves_flags)) }
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: rdtsc only reads the counter.
    unsafe {
        asm!("rdtsc", out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags))
    }
    (u64::from(high) << 32) | u64::from(low)
}

/// Spins for about `cycles` TSC ticks.
pub fn delay_cycles(cycles: u64) {
    let start = rdtsc();
    while rdtsc().wrapping_sub(start) < cycles {
        core::hint::spin_loop();
    }
}

/// Enables interrupts, halts until one arrives, then disables them again.
///
/// `sti; hlt` is atomic with respect to interrupt delivery, so an interrupt already pending
/// (for example a self-IPI) wakes the `hlt` instead of being lost.
pub fn wait_for_interrupt() {
    // SAFETY: the kernel's IDT is loaded and every enabled vector has a handler; interrupts
    // are disabled again before returning, as the rest of the kernel expects.
    unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) }
}

/// Stops this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: halting with interrupts disabled only stops this CPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) }
    }
}
