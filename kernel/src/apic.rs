//! The local APIC (xAPIC, memory-mapped at its reset base 0xFEE0_0000) and the legacy PICs.
//!
//! The CPU index used throughout the kernel is the local APIC ID: QEMU numbers the CPUs of
//! `-smp N` with APIC IDs 0..N-1 in the same order as its monitor's CPU indexes, so
//! `mce 2 ...` in the monitor hits the CPU this kernel calls 2.

#![cfg(target_os = "none")]

use crate::cpu;
use core::ptr;

const LAPIC_BASE: usize = 0xFEE0_0000;
const REG_ID: usize = 0x20;
const REG_TPR: usize = 0x80;
const REG_EOI: usize = 0xB0;
const REG_SVR: usize = 0xF0;
const REG_ICR_LOW: usize = 0x300;
const REG_ICR_HIGH: usize = 0x310;
const REG_LVT_TIMER: usize = 0x320;
const REG_LVT_LINT0: usize = 0x350;
const REG_LVT_ERROR: usize = 0x370;
const REG_TIMER_INITIAL_COUNT: usize = 0x380;
const REG_TIMER_DIVIDE: usize = 0x3E0;

const SVR_ENABLE: u32 = 1 << 8;
const LVT_MASKED: u32 = 1 << 16;
const LVT_TIMER_PERIODIC: u32 = 1 << 17;
/// Divide configuration 0b0011: the timer counts at the APIC bus clock divided by 16.
const TIMER_DIVIDE_BY_16: u32 = 0b0011;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;
const ICR_LEVEL_ASSERT: u32 = 1 << 14;
const ICR_ALL_EXCLUDING_SELF: u32 = 0b11 << 18;
const ICR_INIT: u32 = 0b101 << 8;
const ICR_STARTUP: u32 = 0b110 << 8;

/// Vector of the spurious-interrupt register.
pub const SPURIOUS_VECTOR: u8 = 0xFF;
/// Vector of the inter-processor "kick" that makes a CPU re-enter the kernel.
pub const KICK_VECTOR: u8 = 0xF0;
/// Vector of the local APIC timer (used by the migration source's controller).
pub const TIMER_VECTOR: u8 = 0xF1;
/// The legacy PICs are moved here (and masked) so they can never alias an exception.
pub const PIC_VECTOR_BASE: u8 = 0x20;

fn read(register: usize) -> u32 {
    // SAFETY: the local APIC page is identity-mapped (uncached) by `paging::init`, and
    // `register` is one of the architectural 16-byte-aligned register offsets.
    unsafe { ptr::read_volatile((LAPIC_BASE + register) as *const u32) }
}

fn write(register: usize, value: u32) {
    // SAFETY: as for `read`; the kernel only writes registers with the documented layout.
    unsafe { ptr::write_volatile((LAPIC_BASE + register) as *mut u32, value) }
}

/// Index of the running CPU (its local APIC ID).
pub fn cpu_index() -> u32 {
    read(REG_ID) >> 24
}

/// Software-enables this CPU's local APIC with every local interrupt source masked.
pub fn init_local() {
    write(REG_TPR, 0);
    write(REG_LVT_TIMER, LVT_MASKED);
    write(REG_LVT_LINT0, LVT_MASKED);
    write(REG_LVT_ERROR, LVT_MASKED);
    write(REG_SVR, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
}

/// Starts this CPU's local APIC timer in periodic mode: [`TIMER_VECTOR`] every
/// `bus_cycles_by_16` ticks of the APIC bus clock divided by 16 (QEMU's bus runs at 1 GHz, so
/// 62 500 is a millisecond).
pub fn start_periodic_timer(bus_cycles_by_16: u32) {
    write(REG_TIMER_DIVIDE, TIMER_DIVIDE_BY_16);
    write(REG_LVT_TIMER, LVT_TIMER_PERIODIC | u32::from(TIMER_VECTOR));
    write(REG_TIMER_INITIAL_COUNT, bus_cycles_by_16);
}

/// Signals end-of-interrupt for the vector being serviced.
pub fn end_of_interrupt() {
    write(REG_EOI, 0);
}

fn send_icr(destination_field: u32, command: u32) {
    while read(REG_ICR_LOW) & ICR_DELIVERY_PENDING != 0 {
        core::hint::spin_loop();
    }
    write(REG_ICR_HIGH, destination_field);
    write(REG_ICR_LOW, command);
}

/// Sends a fixed interrupt with `vector` to the CPU with APIC ID `cpu` (possibly itself).
pub fn send_ipi(cpu: u32, vector: u8) {
    send_icr(cpu << 24, ICR_LEVEL_ASSERT | u32::from(vector));
}

/// INIT, then two STARTUP IPIs, to every other CPU: they start in real mode at
/// `trampoline_page * 4096`.
pub fn start_other_cpus(trampoline_page: u8) {
    send_icr(0, ICR_ALL_EXCLUDING_SELF | ICR_LEVEL_ASSERT | ICR_INIT);
    cpu::delay_cycles(10_000_000);
    for _ in 0..2 {
        send_icr(
            0,
            ICR_ALL_EXCLUDING_SELF | ICR_LEVEL_ASSERT | ICR_STARTUP | u32::from(trampoline_page),
        );
        cpu::delay_cycles(1_000_000);
    }
}

/// Remaps the two 8259 PICs to `PIC_VECTOR_BASE..+16` and masks every line: the kernel
/// uses only local APIC interrupts, and the firmware leaves the PIT unmasked on IRQ 0.
pub fn disable_legacy_pic() {
    const PIC1: u16 = 0x20;
    const PIC2: u16 = 0xA0;
    cpu::outb(PIC1, 0x11); // ICW1: initialise, expect ICW4
    cpu::outb(PIC2, 0x11);
    cpu::outb(PIC1 + 1, PIC_VECTOR_BASE); // ICW2: vector offsets
    cpu::outb(PIC2 + 1, PIC_VECTOR_BASE + 8);
    cpu::outb(PIC1 + 1, 0x04); // ICW3: slave on IRQ 2
    cpu::outb(PIC2 + 1, 0x02);
    cpu::outb(PIC1 + 1, 0x01); // ICW4: 8086 mode
    cpu::outb(PIC2 + 1, 0x01);
    cpu::outb(PIC1 + 1, 0xFF); // mask everything
    cpu::outb(PIC2 + 1, 0xFF);
}
