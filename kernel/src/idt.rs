//! The interrupt descriptor table and the assembly entry stubs of all 256 vectors.
//!
//! Stable Rust has no `x86-interrupt` ABI, so entry is plain assembly: stub `v` (16 bytes
//! each, at `trap_stubs + 16 * v`) pushes a zero error code when the CPU does not push one,
//! then the vector number, and jumps to `trap_common`. That saves every general-purpose
//! register, forming a [`TrapFrame`](crate::trap::TrapFrame) on the stack, and calls
//! [`crate::trap::dispatch`] with the frame and the CPU index (the local APIC ID). On return
//! it restores the (possibly rewritten) frame and `iretq`s; `trap_exit` is also how a CPU
//! first enters its guest.
//!
//! #MC and #DF run on interrupt-stack-table stacks (see `gdt`), the hypercall vector is
//! reachable from ring 3, and every gate is an interrupt gate: the kernel always runs with
//! interrupts disabled.

#![cfg(target_os = "none")]

use crate::gdt::{self, DescriptorTablePointer};
use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;
use core::mem::size_of;

/// Vector of the machine-check exception.
pub const MACHINE_CHECK: u8 = 18;
/// Vector of the double fault.
pub const DOUBLE_FAULT: u8 = 8;
/// Vector of the general-protection fault.
pub const GENERAL_PROTECTION: u8 = 13;
/// Vector of the page fault.
pub const PAGE_FAULT: u8 = 14;
/// The guests' hypercall vector (`int 0x80`, allowed from ring 3).
pub const HYPERCALL: u8 = 0x80;

global_asm!(
    ".pushsection .text.trap_stubs, \"ax\", @progbits",
    ".balign 16",
    ".global trap_stubs",
    "trap_stubs:",
    ".set vector, 0",
    ".rept 256",
    ".balign 16",
    // Vectors for which the CPU pushes an error code itself.
    ".if (vector == 8) || (vector == 10) || (vector == 11) || (vector == 12) || (vector == 13) || (vector == 14) || (vector == 17) || (vector == 21) || (vector == 29) || (vector == 30)",
    ".else",
    "push $0",
    ".endif",
    "push $vector",
    "jmp trap_common",
    ".set vector, vector + 1",
    ".endr",
    "trap_common:",
    "push %rax",
    "push %rbx",
    "push %rcx",
    "push %rdx",
    "push %rsi",
    "push %rdi",
    "push %rbp",
    "push %r8",
    "push %r9",
    "push %r10",
    "push %r11",
    "push %r12",
    "push %r13",
    "push %r14",
    "push %r15",
    "mov %rsp, %rdi",
    // Second argument: this CPU's index, the local APIC ID register's top byte.
    "movabs $0xFEE00020, %rax",
    "mov (%rax), %esi",
    "shr $24, %esi",
    // The CPU aligned RSP to 16 before pushing its frame; 22 quadwords later it still is.
    "cld",
    "call {dispatch}",
    ".global trap_exit",
    "trap_exit:",
    "pop %r15",
    "pop %r14",
    "pop %r13",
    "pop %r12",
    "pop %r11",
    "pop %r10",
    "pop %r9",
    "pop %r8",
    "pop %rbp",
    "pop %rdi",
    "pop %rsi",
    "pop %rdx",
    "pop %rcx",
    "pop %rbx",
    "pop %rax",
    "add $16, %rsp",
    "iretq",
    ".popsection",
    dispatch = sym crate::trap::dispatch,
    options(att_syntax),
);

unsafe extern "C" {
    /// First of the 256 entry stubs (16 bytes apart).
    static trap_stubs: [u8; 256 * 16];
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_middle: u16,
    offset_high: u32,
    reserved: u32,
}

const INTERRUPT_GATE: u8 = 0x8E; // present, DPL 0, 64-bit interrupt gate
const USER_INTERRUPT_GATE: u8 = 0xEE; // same, callable from ring 3 with `int`

struct Idt(UnsafeCell<[Gate; 256]>);

// SAFETY: the table is written once by the bootstrap processor before any other CPU runs
// (`build`), and only read (by the CPUs' `lidt`) afterwards.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new(
    [Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        attributes: 0,
        offset_middle: 0,
        offset_high: 0,
        reserved: 0,
    }; 256],
));

/// Fills the shared IDT.
///
/// # Safety
/// Called once, by the bootstrap processor, before any CPU loads the table.
pub unsafe fn build() {
    // SAFETY: only the address of the stubs is taken.
    let stubs = unsafe { trap_stubs.as_ptr() } as u64;
    // SAFETY: per the contract, nobody else accesses the table yet.
    let gates = unsafe { &mut *IDT.0.get() };
    for (vector, gate) in gates.iter_mut().enumerate() {
        let handler = stubs + 16 * vector as u64;
        let ist = match vector as u8 {
            MACHINE_CHECK => gdt::IST_MACHINE_CHECK,
            DOUBLE_FAULT => gdt::IST_DOUBLE_FAULT,
            _ => 0,
        };
        *gate = Gate {
            offset_low: handler as u16,
            selector: gdt::KERNEL_CODE,
            ist,
            attributes: if vector as u8 == HYPERCALL {
                USER_INTERRUPT_GATE
            } else {
                INTERRUPT_GATE
            },
            offset_middle: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        };
    }
}

/// Loads the shared IDT on this CPU.
pub fn load() {
    let pointer = DescriptorTablePointer {
        limit: (size_of::<[Gate; 256]>() - 1) as u16,
        base: IDT.0.get() as u64,
    };
    // SAFETY: the IDT is a static built by `build` before any CPU calls `load`, and every
    // gate points at a stub of `trap_stubs`.
    unsafe {
        asm!("lidt [{}]", in(reg) &raw const pointer, options(readonly, nostack, preserves_flags))
    }
}
