//! Line-oriented console on COM1 (I/O port 0x3F8), shared by all CPUs.
//!
//! Lines from different CPUs never interleave: a line is written under a spin lock that
//! records its owner. The host #MC handler may interrupt a CPU that holds the lock (a machine
//! check is not maskable); the lock is then re-entered instead of deadlocking, which can
//! split that one line but never hangs the kernel.

use crate::{apic, cpu};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, Ordering};

const COM1: u16 = 0x3F8;
const LINE_STATUS: u16 = COM1 + 5;
const TRANSMIT_EMPTY: u8 = 1 << 5;
const NO_OWNER: u32 = u32::MAX;

static OWNER: AtomicU32 = AtomicU32::new(NO_OWNER);

/// Programs COM1 for 115200 baud, 8N1, FIFO on, no interrupts.
pub fn init() {
    program_uart(COM1);
}

/// Programs the 16550 UART at I/O port `base` for 115200 baud, 8N1, FIFO on, no interrupts.
pub fn program_uart(base: u16) {
    cpu::outb(base + 1, 0x00); // no interrupts
    cpu::outb(base + 3, 0x80); // DLAB on
    cpu::outb(base, 0x01); // divisor 1 = 115200 baud
    cpu::outb(base + 1, 0x00);
    cpu::outb(base + 3, 0x03); // 8 bits, no parity, one stop bit
    cpu::outb(base + 2, 0xC7); // FIFO on and cleared
    cpu::outb(base + 4, 0x03); // DTR, RTS
}

fn write_byte(byte: u8) {
    while cpu::inb(LINE_STATUS) & TRANSMIT_EMPTY == 0 {
        core::hint::spin_loop();
    }
    cpu::outb(COM1, byte);
}

struct Com1;

impl Write for Com1 {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for byte in text.bytes() {
            write_byte(byte);
        }
        Ok(())
    }
}

/// Writes one formatted line (a newline is appended) atomically with respect to other CPUs.
pub fn print_line(args: fmt::Arguments<'_>) {
    let me = apic::cpu_index();
    let reentered = OWNER.load(Ordering::Acquire) == me;
    if !reentered {
        while OWNER
            .compare_exchange_weak(NO_OWNER, me, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
    }
    let _ = Com1.write_fmt(args);
    write_byte(b'\n');
    if !reentered {
        OWNER.store(NO_OWNER, Ordering::Release);
    }
}

/// Prints one line on the serial console, `format!`-style.
#[macro_export]
macro_rules! kprintln {
    ($($arg:tt)*) => { $crate::serial::print_line(format_args!($($arg)*)) };
}
