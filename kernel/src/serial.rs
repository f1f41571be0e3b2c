//! Line-oriented console on COM1 (I/O port 0x3F8), shared by all CPUs.
//!
//! Lines never interleave, and a line is never torn:
//! - Between CPUs: a line is written under a spin lock that records its owner.
//! - On one CPU: the host #MC handler may interrupt its CPU anywhere, also in the middle of a
//!   line (a machine check is not maskable, and QEMU raises the monitor's `mce` whenever the
//!   target CPU next checks for interrupts). It cannot wait for the lock its own CPU holds,
//!   so it re-enters it; if the interrupted line is already under way, its lines are held
//!   back in a per-CPU buffer and the interrupted writer prints them right after its own
//!   newline. At a line boundary they are written at once. Only the host #MC handler ever
//!   re-enters (everything else in the kernel runs with interrupts off, and a console line
//!   is never written from `hlt`), and only once per machine check.
//! - Before the machine stops ([`before_exit`]), lines still held back are written, after a
//!   newline that cuts the interrupted line.

#![cfg(target_os = "none")]

use crate::percpu::MAX_CPUS;
use crate::{apic, cpu};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicUsize, Ordering};

const COM1: u16 = 0x3F8;
const LINE_STATUS: u16 = COM1 + 5;
const TRANSMIT_EMPTY: u8 = 1 << 5;
const NO_OWNER: u32 = u32::MAX;
/// Room for the lines one host #MC prints while a line of its CPU is under way (the event,
/// one line per bank, the classification, and one line per vCPU of an injection).
const HELD_MAX: usize = 4096;
/// Written in place of what did not fit in the held-back buffer.
const HELD_OVERFLOW: &[u8] = b"[console: lines dropped]\n";

static OWNER: AtomicU32 = AtomicU32::new(NO_OWNER);
/// Per CPU: a line of this CPU is under way (its first byte may be out, its newline is not),
/// or held-back lines are being written; a re-entering writer must hold its lines back.
static MID_LINE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Per CPU: lines held back (see the module docs).
static HELD: [HeldLines; MAX_CPUS] = [const { HeldLines::new() }; MAX_CPUS];

/// One CPU's held-back lines. Only that CPU touches it: its host #MC handler appends (while
/// the interrupted writer is stopped), the interrupted writer drains (atomics, so that the
/// two never need a `&mut` to the same memory).
struct HeldLines {
    bytes: [AtomicU8; HELD_MAX],
    len: AtomicUsize,
    overflowed: AtomicBool,
}

impl HeldLines {
    const fn new() -> Self {
        Self {
            bytes: [const { AtomicU8::new(0) }; HELD_MAX],
            len: AtomicUsize::new(0),
            overflowed: AtomicBool::new(false),
        }
    }

    fn push(&self, byte: u8) {
        let len = self.len.load(Ordering::Relaxed);
        match self.bytes.get(len) {
            Some(slot) => {
                slot.store(byte, Ordering::Relaxed);
                self.len.store(len + 1, Ordering::Release);
            }
            None => self.overflowed.store(true, Ordering::Relaxed),
        }
    }

    /// Writes everything held back from `from` on; returns where it stopped (the length).
    fn write_from(&self, mut from: usize) -> usize {
        while let Some(slot) = self.bytes.get(from) {
            if from >= self.len.load(Ordering::Acquire) {
                break;
            }
            write_byte(slot.load(Ordering::Relaxed));
            from += 1;
        }
        if from >= HELD_MAX && self.overflowed.swap(false, Ordering::Relaxed) {
            HELD_OVERFLOW.iter().copied().for_each(write_byte);
        }
        from
    }
}

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

/// Where the text of one line goes: COM1, or the CPU's held-back lines.
pub struct Line {
    held: Option<&'static HeldLines>,
}

impl Write for Line {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        match self.held {
            None => text.bytes().for_each(write_byte),
            Some(held) => text.bytes().for_each(|byte| held.push(byte)),
        }
        Ok(())
    }
}

/// CPU `cpu`'s cell (APIC IDs stop below [`MAX_CPUS`]: `smp` parks any other CPU).
fn slot<T>(cells: &'static [T; MAX_CPUS], cpu: u32) -> &'static T {
    &cells[(cpu as usize).min(MAX_CPUS - 1)]
}

/// Writes one line: what `body` writes to the [`Line`], then a newline, atomically with
/// respect to other CPUs and never torn by a host #MC on this CPU (see the module docs).
/// `body` runs with the console lock held: it must not print lines itself.
pub fn write_line(body: impl FnOnce(&mut Line)) {
    let me = apic::cpu_index();
    let mid_line = slot(&MID_LINE, me);
    let held = slot(&HELD, me);
    if OWNER.load(Ordering::Acquire) == me {
        // The host #MC handler, interrupting its CPU inside this function.
        if mid_line.load(Ordering::Acquire) {
            let mut line = Line { held: Some(held) };
            body(&mut line);
            let _ = line.write_str("\n");
        } else {
            mid_line.store(true, Ordering::Release);
            body(&mut Line { held: None });
            write_byte(b'\n');
            mid_line.store(false, Ordering::Release);
        }
        return;
    }
    while OWNER
        .compare_exchange_weak(NO_OWNER, me, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    mid_line.store(true, Ordering::Release);
    body(&mut Line { held: None });
    write_byte(b'\n');
    // Lines a host #MC held back while this one was under way; one that arrives after
    // `mid_line` is cleared writes its own lines at once.
    let mut written = 0;
    loop {
        written = held.write_from(written);
        mid_line.store(false, Ordering::Release);
        if held.len.load(Ordering::Acquire) == written {
            break;
        }
        mid_line.store(true, Ordering::Release);
    }
    held.len.store(0, Ordering::Release);
    OWNER.store(NO_OWNER, Ordering::Release);
}

/// Writes one formatted line (a newline is appended); see [`write_line`].
pub fn print_line(args: fmt::Arguments<'_>) {
    write_line(|line| {
        let _ = line.write_fmt(args);
    });
}

/// Called just before the machine stops, on the CPU that stops it: when that CPU's host #MC
/// handler interrupted a line and held its own lines back, cuts the interrupted line with a
/// newline and writes them, so that no line of the machine's last moments is lost.
pub fn before_exit() {
    let me = apic::cpu_index();
    let held = slot(&HELD, me);
    if OWNER.load(Ordering::Acquire) == me && held.len.load(Ordering::Acquire) > 0 {
        write_byte(b'\n');
        held.write_from(0);
        held.len.store(0, Ordering::Release);
    }
}

/// Prints one line on the serial console, `format!`-style.
#[macro_export]
macro_rules! kprintln {
    ($($arg:tt)*) => { $crate::serial::print_line(format_args!($($arg)*)) };
}
