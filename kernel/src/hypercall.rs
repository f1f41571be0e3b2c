//! The guests' hypercall interface: `int 0x80` with the call number in `rax`, arguments in
//! `rdi`, `rsi`, `rdx`; the result comes back in `rax` and every other register is
//! preserved.

#![cfg(target_os = "none")]

use crate::exit::{ExitCode, exit_qemu};
use crate::trap::TrapFrame;
use crate::{cpu, hv, kprintln, mce, paging, vcpu};
use core::fmt::Write;
use core::sync::atomic::{AtomicU32, Ordering};
use vmce_qemu_protocol::console;

/// Call numbers (shared with `guest.rs`).
pub mod nr {
    /// `set_trap_table(machine_check_entry, general_protection_entry)`.
    pub const SET_TRAP_TABLE: u64 = 1;
    /// `puts(pointer, len)`: append guest text to this vCPU's console line.
    pub const PUTS: u64 = 2;
    /// `put_hex(value)`: append `0x...`.
    pub const PUT_HEX: u64 = 3;
    /// `put_dec(value)`: append a decimal number.
    pub const PUT_DEC: u64 = 4;
    /// `end_line()`: print the line as `VCPU <n> <text>`.
    pub const END_LINE: u64 = 5;
    /// `hello()`: the guest is running; the last one makes the kernel print `READY`.
    pub const HELLO: u64 = 6;
    /// `done()`: the guest finished its scenario; the last one ends the run successfully.
    pub const DONE: u64 = 7;
    /// `panic(pointer, len)`: the guest gives up; the run ends with the guest-panic code.
    pub const PANIC: u64 = 8;
    /// `trap_return(resume_rip)`: leave a trap handler (0 = resume where interrupted).
    pub const TRAP_RETURN: u64 = 9;
    /// `block(cell, value)`: sleep until the next interrupt (kick, #MC) reaches this CPU; with
    /// a `cell` (the guest address of a `u32`; 0: none), only if it still holds `value` when
    /// the kernel looks, with interrupts off. A kick that comes after that look wakes the
    /// sleep (`sti; hlt`); an update the guest's own trap handler made before it does not
    /// need one.
    pub const BLOCK: u64 = 10;
    /// `set_cr4_mce(enabled)`: the PV form of writing CR4.MCE.
    pub const SET_CR4_MCE: u64 = 11;
    /// `poll_host_mca()`: a VM exit on which the hypervisor polls this CPU's host banks;
    /// returns the number of valid banks it found (and logged).
    pub const POLL_HOST_MCA: u64 = 12;
    /// `set_up(up)`: the guest brings this vCPU up (1) or takes it offline (0), as an OS
    /// does when it hot-unplugs a CPU; what the hypervisor answers for `GuestCpus::is_up`.
    pub const SET_UP: u64 = 13;
    /// `hold_line()`: the kernel starts a console line, keeps it open (interrupts off, in
    /// ring 0) until a host machine check has reached this CPU, then finishes it; the
    /// machine check's own lines must come out whole, after it. The line's progress is a
    /// `u32` in kernel memory whose address the kernel prints first, for the harness to
    /// read through QEMU's monitor (`xp`): 1 while the line is open and waiting.
    pub const HOLD_LINE: u64 = 14;
}

/// Returned in `rax` for an unknown call.
const UNKNOWN_CALL: u64 = u64::MAX;

static NR_GUESTS: AtomicU32 = AtomicU32::new(0);
static GUESTS_STARTED: AtomicU32 = AtomicU32::new(0);
static GUESTS_DONE: AtomicU32 = AtomicU32::new(0);
/// `hold_line`'s progress: 0 before, 1 while the line is open and waiting for the host
/// machine check, 2 once it arrived.
static HOLDING_LINE: AtomicU32 = AtomicU32::new(0);

/// Records how many guests run (one per vCPU; see `Scenario::vcpus`).
pub fn init(nr_guests: u32) {
    NR_GUESTS.store(nr_guests, Ordering::Release);
}

fn guest_text(cpu: u32, pointer: u64, len: u64) -> &'static [u8] {
    if len > 256 || !paging::is_guest_range(pointer, len) {
        vcpu::guest_crash(cpu, format_args!("bad buffer {pointer:#x}+{len}"));
    }
    // SAFETY: the range was just checked to be guest memory, which stays mapped for the
    // kernel's lifetime; the guest may change it concurrently, which only garbles text.
    unsafe { core::slice::from_raw_parts(pointer as *const u8, len as usize) }
}

/// The `u32` at guest address `address` (4-byte aligned, in guest memory), read with
/// interrupts off.
fn guest_u32(cpu: u32, address: u64) -> u64 {
    if !address.is_multiple_of(4) || !paging::is_guest_range(address, 4) {
        vcpu::guest_crash(cpu, format_args!("bad block cell {address:#x}"));
    }
    // SAFETY: an aligned `u32` inside guest memory, which stays mapped for the kernel's
    // lifetime; guests only ever access it atomically.
    let cell = unsafe { &*(address as *const AtomicU32) };
    u64::from(cell.load(Ordering::Acquire))
}

/// The `hold_line` hypercall (see [`nr::HOLD_LINE`]).
fn hold_line(cpu: u32) {
    kprintln!(
        "HV vcpu {cpu} holds a console line open until a host machine check reaches CPU {cpu}; \
         progress at {:#x}",
        core::ptr::from_ref(&HOLDING_LINE) as u64
    );
    let before = mce::host_machine_checks();
    crate::serial::write_line(|line| {
        let _ = write!(
            line,
            "HV vcpu {cpu} HOLD this line was open when CPU {cpu} took "
        );
        HOLDING_LINE.store(1, Ordering::Release);
        while mce::host_machine_checks() == before {
            core::hint::spin_loop();
        }
        HOLDING_LINE.store(2, Ordering::Release);
        let _ = write!(line, "a host machine check; its lines follow");
    });
}

fn append_number(cpu: u32, value: u64, hex: bool) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = value;
    let base = if hex { 16 } else { 10 };
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[(rest % base) as usize];
        rest /= base;
        if rest == 0 {
            break;
        }
    }
    if hex {
        vcpu::line_append(cpu, b"0x");
    }
    vcpu::line_append(cpu, &digits[at..]);
}

/// Handles `int 0x80` from vCPU `cpu`'s guest.
pub fn dispatch(cpu: u32, frame: &mut TrapFrame) {
    let (a0, a1) = (frame.rdi, frame.rsi);
    let result = match frame.rax {
        nr::SET_TRAP_TABLE => {
            vcpu::set_trap_table(cpu, a0, a1);
            0
        }
        nr::PUTS => {
            vcpu::line_append(cpu, guest_text(cpu, a0, a1));
            0
        }
        nr::PUT_HEX | nr::PUT_DEC => {
            append_number(cpu, a0, frame.rax == nr::PUT_HEX);
            0
        }
        nr::END_LINE => {
            vcpu::line_flush(cpu);
            0
        }
        nr::HELLO => {
            let started = GUESTS_STARTED.fetch_add(1, Ordering::AcqRel) + 1;
            if started == NR_GUESTS.load(Ordering::Acquire) {
                kprintln!("{} cpus={started}", console::READY);
            }
            0
        }
        nr::DONE => {
            let done = GUESTS_DONE.fetch_add(1, Ordering::AcqRel) + 1;
            if done == NR_GUESTS.load(Ordering::Acquire) {
                mce::wait_for_expected_machine_checks();
                kprintln!("{}", console::DONE);
                exit_qemu(ExitCode::Success);
            }
            0
        }
        nr::PANIC => {
            let text = core::str::from_utf8(guest_text(cpu, a0, a1)).unwrap_or("?");
            kprintln!("{} {text} vcpu={cpu}", console::GUEST_PANIC);
            exit_qemu(ExitCode::GuestPanic);
        }
        nr::TRAP_RETURN => {
            // Restores the whole interrupted context, rax included: nothing to return.
            vcpu::trap_return(cpu, frame, a0);
            return;
        }
        nr::BLOCK => {
            if a0 == 0 || guest_u32(cpu, a0) == a1 {
                cpu::wait_for_interrupt();
            }
            0
        }
        nr::SET_CR4_MCE => {
            hv::set_cr4_mce(cpu as usize, a0 != 0);
            kprintln!("HV vcpu {cpu} CR4.MCE={}", u8::from(a0 != 0));
            0
        }
        nr::POLL_HOST_MCA => u64::from(mce::poll(cpu)),
        nr::SET_UP => {
            hv::set_vcpu_up(cpu as usize, a0 != 0);
            kprintln!("HV vcpu {cpu} up={}", u8::from(a0 != 0));
            0
        }
        nr::HOLD_LINE => {
            hold_line(cpu);
            0
        }
        _ => UNKNOWN_CALL,
    };
    frame.rax = result;
}
