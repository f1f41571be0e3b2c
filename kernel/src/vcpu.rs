//! Per-vCPU kernel state and PV-style trap bounces.
//!
//! vCPU `n` runs on CPU `n` in ring 3. Its guest registers a trap table (a machine-check
//! entry and a #GP entry). To deliver a trap the kernel saves the interrupted guest context
//! (the trap frame) on a small per-vCPU stack of saved contexts and rewrites the frame so the
//! `iretq` lands in the guest's handler, in ring 3, on the guest's own stack (below a 128-byte
//! red zone), with `rdi` = vector, `rsi` = error code, `rdx` = interrupted RIP, `rcx` = vCPU.
//! The handler ends with the "return from trap" hypercall, which restores the saved context
//! (optionally at another RIP, e.g. past a faulting instruction).
//!
//! While a vCPU runs its machine-check handler, further virtual #MCs stay pending (the
//! kernel's equivalent of Xen's async-exception mask) until that handler returns.

#![cfg(target_os = "none")]

use crate::exit::{ExitCode, exit_qemu};
use crate::hv::{self, Outcome};
use crate::percpu::{MAX_CPUS, PerCpu};
use crate::trap::TrapFrame;
use crate::{idt, kprintln, paging, pause};
use core::cell::UnsafeCell;
use core::fmt;
use vmce_qemu_protocol::console;

/// Deepest nesting of bounced traps (e.g. #MC inside a #GP handler).
const MAX_NESTING: usize = 4;
/// Longest guest console line.
const LINE_MAX: usize = 200;
/// Bytes below the guest's stack pointer that a bounce leaves untouched (the SysV red zone).
const RED_ZONE: u64 = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BounceKind {
    GeneralProtection,
    MachineCheck,
}

#[derive(Clone, Copy)]
struct SavedContext {
    frame: TrapFrame,
    kind: BounceKind,
}

/// What the kernel keeps for one vCPU.
pub struct VcpuState {
    machine_check_entry: u64,
    general_protection_entry: u64,
    saved: [SavedContext; MAX_NESTING],
    depth: usize,
    machine_check_masked: bool,
    line: [u8; LINE_MAX],
    line_len: usize,
}

// All-zero, so it lives in .bss.
static VCPUS: PerCpu<VcpuState> = PerCpu::new(
    [const {
        UnsafeCell::new(VcpuState {
            machine_check_entry: 0,
            general_protection_entry: 0,
            saved: [SavedContext {
                frame: TrapFrame::ZERO,
                kind: BounceKind::GeneralProtection,
            }; MAX_NESTING],
            depth: 0,
            machine_check_masked: false,
            line: [0; LINE_MAX],
            line_len: 0,
        })
    }; MAX_CPUS],
);

fn state(cpu: u32) -> &'static mut VcpuState {
    // SAFETY: called only on CPU `cpu` for its own vCPU, from trap handlers that never run
    // nested on the same CPU (interrupts are off in the kernel; the #MC handler does not call
    // into this module when it interrupted kernel code), so no other reference is alive.
    unsafe { VCPUS.get_mut(cpu) }
}

/// Kills the domain because vCPU `cpu`'s guest misbehaved.
pub fn guest_crash(cpu: u32, reason: fmt::Arguments<'_>) -> ! {
    kprintln!("GUEST CRASH vcpu={cpu}: {reason}");
    exit_qemu(ExitCode::GuestCrash)
}

/// The "set trap table" hypercall.
pub fn set_trap_table(cpu: u32, machine_check_entry: u64, general_protection_entry: u64) {
    for entry in [machine_check_entry, general_protection_entry] {
        if entry != 0 && !paging::is_guest_range(entry, 1) {
            guest_crash(
                cpu,
                format_args!("trap entry {entry:#x} outside guest memory"),
            );
        }
    }
    let vcpu = state(cpu);
    vcpu.machine_check_entry = machine_check_entry;
    vcpu.general_protection_entry = general_protection_entry;
}

fn bounce(
    cpu: u32,
    frame: &mut TrapFrame,
    kind: BounceKind,
    entry: u64,
    vector: u8,
    error_code: u64,
) {
    let vcpu = state(cpu);
    if entry == 0 {
        guest_crash(
            cpu,
            format_args!(
                "{kind:?} at rip={:#x} with no handler registered",
                frame.rip
            ),
        );
    }
    let Some(slot) = vcpu.saved.get_mut(vcpu.depth) else {
        guest_crash(
            cpu,
            format_args!("{kind:?} nested more than {MAX_NESTING} deep"),
        );
    };
    *slot = SavedContext {
        frame: *frame,
        kind,
    };
    vcpu.depth += 1;
    if kind == BounceKind::MachineCheck {
        vcpu.machine_check_masked = true;
    }
    let interrupted_rip = frame.rip;
    // 16-byte aligned minus 8: the handler starts as if it had just been called.
    frame.rsp = ((frame.rsp - RED_ZONE) & !0xF) - 8;
    frame.rip = entry;
    frame.rdi = u64::from(vector);
    frame.rsi = error_code;
    frame.rdx = interrupted_rip;
    frame.rcx = u64::from(cpu);
}

/// The "return from trap" hypercall: resumes the context the last bounce interrupted, at
/// `resume_rip` instead of its own RIP when that is non-zero.
pub fn trap_return(cpu: u32, frame: &mut TrapFrame, resume_rip: u64) {
    let vcpu = state(cpu);
    let Some(depth) = vcpu.depth.checked_sub(1) else {
        guest_crash(cpu, format_args!("return from trap outside a trap handler"));
    };
    let saved = vcpu.saved[depth];
    vcpu.depth = depth;
    if saved.kind == BounceKind::MachineCheck {
        vcpu.machine_check_masked = false;
    }
    *frame = saved.frame;
    if resume_rip != 0 {
        if !paging::is_guest_range(resume_rip, 1) {
            guest_crash(
                cpu,
                format_args!("return from trap to {resume_rip:#x} outside guest memory"),
            );
        }
        frame.rip = resume_rip;
    }
}

/// The MSR instruction at a guest RIP, if any.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MsrInstruction {
    Read,
    Write,
}

fn decode_msr_instruction(rip: u64) -> Option<MsrInstruction> {
    if !paging::is_guest_range(rip, 2) {
        return None;
    }
    // SAFETY: the two bytes are inside guest memory, which is identity-mapped and readable
    // by the kernel; a racing guest write can only change which instruction is decoded.
    let bytes = unsafe { core::ptr::read_volatile(rip as *const [u8; 2]) };
    match bytes {
        [0x0F, 0x32] => Some(MsrInstruction::Read),
        [0x0F, 0x30] => Some(MsrInstruction::Write),
        _ => None,
    }
}

/// #GP from ring 3: emulate `rdmsr`/`wrmsr` through [`hv`], otherwise reflect the fault.
pub fn general_protection(cpu: u32, frame: &mut TrapFrame) {
    let gp_entry = state(cpu).general_protection_entry;
    let Some(instruction) = decode_msr_instruction(frame.rip) else {
        let error_code = frame.error_code;
        return bounce(
            cpu,
            frame,
            BounceKind::GeneralProtection,
            gp_entry,
            idt::GENERAL_PROTECTION,
            error_code,
        );
    };
    let vcpu = cpu as usize;
    let msr = frame.rcx as u32;
    let outcome = match instruction {
        MsrInstruction::Read => hv::emulate_rdmsr(vcpu, msr),
        MsrInstruction::Write => {
            hv::emulate_wrmsr(vcpu, msr, (frame.rdx << 32) | (frame.rax & 0xFFFF_FFFF))
        }
    };
    match outcome {
        Outcome::Handled(value) => {
            if instruction == MsrInstruction::Read {
                frame.rax = value & 0xFFFF_FFFF;
                frame.rdx = value >> 32;
            }
            frame.rip += 2;
        }
        Outcome::RaiseGp => {
            kprintln!(
                "KERNEL vcpu={cpu} msr={msr:#x} rip={:#x}: #GP reflected to the guest",
                frame.rip
            );
            bounce(
                cpu,
                frame,
                BounceKind::GeneralProtection,
                gp_entry,
                idt::GENERAL_PROTECTION,
                0,
            );
        }
    }
}

/// Any other exception from ring 3 kills the domain, except a page fault on a frame the
/// domain knows to be broken: that becomes an action-required machine check (see
/// [`hv::broken_frame_access`]), delivered on the way back to the guest.
pub fn guest_fault(cpu: u32, frame: &TrapFrame) {
    const PAGE_FAULT_PRESENT: u64 = 1 << 0;
    const PAGE_FAULT_FETCH: u64 = 1 << 4;
    let cr2 = if frame.vector == u64::from(idt::PAGE_FAULT) {
        crate::cpu::read_cr2()
    } else {
        0
    };
    let not_present_page =
        frame.vector == u64::from(idt::PAGE_FAULT) && frame.error_code & PAGE_FAULT_PRESENT == 0;
    if not_present_page
        && hv::broken_frame_access(cpu, cr2, frame.error_code & PAGE_FAULT_FETCH != 0)
    {
        return;
    }
    guest_crash(
        cpu,
        format_args!(
            "exception {} error={:#x} rip={:#x} rsp={:#x} cr2={cr2:#x}",
            frame.vector, frame.error_code, frame.rip, frame.rsp
        ),
    )
}

/// The hook run on every return to ring 3: waits while the domain is paused, then delivers
/// a pending virtual #MC.
pub fn before_return_to_guest(cpu: u32, frame: &mut TrapFrame) {
    pause::park_while_paused(cpu);
    if state(cpu).machine_check_masked || !hv::take_pending_mce(cpu as usize) {
        return;
    }
    let entry = state(cpu).machine_check_entry;
    bounce(
        cpu,
        frame,
        BounceKind::MachineCheck,
        entry,
        idt::MACHINE_CHECK,
        0,
    );
}

/// Appends guest text to vCPU `cpu`'s console line (silently truncated when full).
pub fn line_append(cpu: u32, text: &[u8]) {
    let vcpu = state(cpu);
    for &byte in text {
        if let Some(slot) = vcpu.line.get_mut(vcpu.line_len) {
            *slot = if byte.is_ascii_graphic() || byte == b' ' {
                byte
            } else {
                b'?'
            };
            vcpu.line_len += 1;
        }
    }
}

/// Prints and clears vCPU `cpu`'s console line, prefixed `VCPU <n> `.
pub fn line_flush(cpu: u32) {
    let vcpu = state(cpu);
    let text = core::str::from_utf8(&vcpu.line[..vcpu.line_len]).unwrap_or("?");
    kprintln!("{} {cpu} {text}", console::VCPU);
    vcpu.line_len = 0;
}
