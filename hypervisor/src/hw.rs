//! The host CPU: port I/O, MSRs, CPUID, the local APIC (xAPIC MMIO at 0xFEE0_0000, identity
//! mapped), the serial port, and QEMU's debug-exit port.

#![cfg(target_os = "none")]

use core::arch::asm;
use core::fmt;

pub fn outb(port: u16, value: u8) {
    // SAFETY: port I/O on the emulated PC's fixed devices (COM1, the debug-exit port).
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack)) }
}

pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as in `outb`.
    unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack)) }
    value
}

pub fn outl(port: u16, value: u32) {
    // SAFETY: as in `outb`.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack)) }
}

pub fn wrmsr(index: u32, value: u64) {
    // SAFETY: only MSRs every SVM-capable CPU has (VM_HSAVE_PA) are written.
    unsafe {
        asm!("wrmsr", in("ecx") index, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack))
    }
}

pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

pub fn rdtsc() -> u64 {
    // SAFETY: reads the time-stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Ends QEMU with exit status `(code << 1) | 1` (isa-debug-exit at 0xf4).
pub fn qemu_exit(code: u32) -> ! {
    outl(0xf4, code);
    loop {
        // SAFETY: stops this CPU; nothing follows.
        unsafe { asm!("cli; hlt") }
    }
}

const LAPIC: usize = 0xFEE0_0000;
const ICR_LOW: usize = 0x300;
const ICR_HIGH: usize = 0x310;

fn lapic_read(register: usize) -> u32 {
    // SAFETY: the xAPIC page is identity-mapped; 32-bit aligned register reads.
    unsafe { core::ptr::read_volatile((LAPIC + register) as *const u32) }
}

fn lapic_write(register: usize, value: u32) {
    // SAFETY: as in `lapic_read`.
    unsafe { core::ptr::write_volatile((LAPIC + register) as *mut u32, value) }
}

fn send_icr(apic_id: u32, low: u32) {
    // The guest owns this local APIC too (devices pass through): keep its ICR high half.
    let saved = lapic_read(ICR_HIGH);
    lapic_write(ICR_HIGH, apic_id << 24);
    lapic_write(ICR_LOW, low);
    while lapic_read(ICR_LOW) & (1 << 12) != 0 {
        core::hint::spin_loop();
    }
    lapic_write(ICR_HIGH, saved);
}

/// INIT, then two STARTUPs at `page`, to every other CPU (the host's own APs).
pub fn start_other_cpus(page: u8) {
    const ALL_BUT_SELF: u32 = 0b11 << 18;
    lapic_write(0xF0, lapic_read(0xF0) | 0x1FF);
    lapic_write(ICR_LOW, ALL_BUT_SELF | (1 << 14) | (0b101 << 8));
    delay_cycles(10_000_000);
    for _ in 0..2 {
        lapic_write(
            ICR_LOW,
            ALL_BUT_SELF | (1 << 14) | (0b110 << 8) | u32::from(page),
        );
        delay_cycles(1_000_000);
    }
}

/// An NMI to the CPU with `apic_id`: the kick that makes its guest exit (NMI intercept).
pub fn send_nmi(apic_id: u32) {
    send_icr(apic_id, (1 << 14) | (0b100 << 8));
}

pub fn delay_cycles(cycles: u64) {
    let end = rdtsc() + cycles;
    while rdtsc() < end {
        core::hint::spin_loop();
    }
}

static SERIAL: spin::Mutex<()> = spin::Mutex::new(());

fn putc_raw(byte: u8) {
    while inb(0x3fd) & 0x20 == 0 {
        core::hint::spin_loop();
    }
    outb(0x3f8, byte);
}

/// A byte the guest wrote to COM1 (under the serial lock, so host lines never split it).
pub fn guest_putc(byte: u8) {
    let _guard = SERIAL.lock();
    putc_raw(byte);
}

struct Raw;

impl fmt::Write for Raw {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            putc_raw(byte);
        }
        Ok(())
    }
}

pub fn print(args: fmt::Arguments<'_>) {
    let _guard = SERIAL.lock();
    let _ = fmt::write(&mut Raw, args);
}

#[macro_export]
macro_rules! hvprintln {
    ($($arg:tt)*) => { $crate::hw::print(format_args!("[hv] {}\n", format_args!($($arg)*))) };
}
