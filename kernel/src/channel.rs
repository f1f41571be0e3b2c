//! The migration channel: the second serial port (COM2, I/O port 0x2F8), which the harness
//! wires to a socket chardev (`-chardev socket,id=mig,... -serial chardev:mig`).
//!
//! Polled, never interrupt-driven, and line-oriented ASCII in both directions: commands come
//! in as lines, and binary records travel as one hex line each (see `migration` for the
//! protocol). Only one CPU at a time uses the channel (CPU 0's timer tick on the source, the
//! bootstrap processor before the APs start on the destination), so it has no lock.

#![cfg(target_os = "none")]

use crate::cpu;
use core::fmt::{self, Write};

const COM2: u16 = 0x2F8;
const LINE_STATUS: u16 = COM2 + 5;
const DATA_READY: u8 = 1 << 0;
const TRANSMIT_EMPTY: u8 = 1 << 5;
const TRANSMITTER_IDLE: u8 = 1 << 6;

/// Longest line the channel takes (a hex record line is `RECORD ` and twice its bytes).
pub const LINE_MAX: usize = 2048;

/// Programs COM2 for 115200 baud, 8N1, FIFO on, no interrupts.
pub fn init() {
    crate::serial::program_uart(COM2);
}

fn read_byte() -> Option<u8> {
    (cpu::inb(LINE_STATUS) & DATA_READY != 0).then(|| cpu::inb(COM2))
}

fn write_byte(byte: u8) {
    while cpu::inb(LINE_STATUS) & TRANSMIT_EMPTY == 0 {
        core::hint::spin_loop();
    }
    cpu::outb(COM2, byte);
}

/// Waits until every byte written has left the UART (for QEMU: reached the chardev), so
/// that nothing is lost when the machine stops right afterwards.
pub fn drain() {
    while cpu::inb(LINE_STATUS) & TRANSMITTER_IDLE == 0 {
        core::hint::spin_loop();
    }
}

struct Com2;

impl Write for Com2 {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        text.bytes().for_each(write_byte);
        Ok(())
    }
}

/// Sends one formatted line (a newline is appended).
pub fn send_line(args: fmt::Arguments<'_>) {
    let _ = Com2.write_fmt(args);
    write_byte(b'\n');
}

/// Sends `prefix`, a space and `bytes` as lowercase hex, as one line.
pub fn send_hex_line(prefix: &str, bytes: &[u8]) {
    let _ = Com2.write_str(prefix);
    write_byte(b' ');
    for byte in bytes {
        write_byte(HEX_DIGITS[usize::from(byte >> 4)]);
        write_byte(HEX_DIGITS[usize::from(byte & 0xF)]);
    }
    write_byte(b'\n');
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Decodes the hex text `text` into the start of `out`; `None` when it is not an even number
/// of hex digits or does not fit.
pub fn decode_hex(text: &str, out: &mut [u8]) -> Option<usize> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) || digits.len() / 2 > out.len() {
        return None;
    }
    for (pair, slot) in digits.chunks_exact(2).zip(out.iter_mut()) {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        *slot = (high << 4 | low) as u8;
    }
    Some(digits.len() / 2)
}

/// What [`LineReader::poll`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// Nothing complete yet.
    Nothing,
    /// A line of this many bytes ended; read it with [`LineReader::line`].
    Line,
    /// A line longer than [`LINE_MAX`] ended; it was dropped.
    TooLong,
}

/// Assembles the bytes arriving on COM2 into lines (`\n`-terminated, `\r` ignored).
pub struct LineReader {
    bytes: [u8; LINE_MAX],
    len: usize,
    overflowed: bool,
    complete: bool,
}

impl LineReader {
    /// An empty reader.
    pub const fn new() -> Self {
        Self {
            bytes: [0; LINE_MAX],
            len: 0,
            overflowed: false,
            complete: false,
        }
    }

    /// Reads whatever COM2 holds, up to the end of the next line.
    pub fn poll(&mut self) -> Received {
        if self.complete {
            self.len = 0;
            self.overflowed = false;
            self.complete = false;
        }
        while let Some(byte) = read_byte() {
            match byte {
                b'\n' if self.overflowed => {
                    self.complete = true;
                    return Received::TooLong;
                }
                b'\n' => {
                    self.complete = true;
                    return Received::Line;
                }
                b'\r' => {}
                _ => match self.bytes.get_mut(self.len) {
                    Some(slot) => {
                        *slot = byte;
                        self.len += 1;
                    }
                    None => self.overflowed = true,
                },
            }
        }
        Received::Nothing
    }

    /// Polls until a line ends or about `timeout_cycles` TSC ticks have passed.
    pub fn wait(&mut self, timeout_cycles: u64) -> Received {
        let start = cpu::rdtsc();
        loop {
            let received = self.poll();
            if received != Received::Nothing || cpu::rdtsc().wrapping_sub(start) > timeout_cycles {
                return received;
            }
            core::hint::spin_loop();
        }
    }

    /// The last complete line (empty when it is not text).
    pub fn line(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}
