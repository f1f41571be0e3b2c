//! Per-CPU GDT, TSS and stacks.
//!
//! Every CPU gets the same GDT layout (so selectors are constants) but its own copy, because
//! each GDT holds that CPU's TSS descriptor. The TSS gives the ring-0 stack used when a guest
//! traps (RSP0), and interrupt-stack-table stacks for #MC and #DF, which therefore always run
//! on a known-good stack even if the kernel stack is corrupt.

#![cfg(target_os = "none")]

use crate::percpu::{MAX_CPUS, PerCpu};
use core::arch::asm;
use core::cell::UnsafeCell;
use core::mem::size_of;

/// Kernel code selector (ring 0, 64-bit).
pub const KERNEL_CODE: u16 = 0x08;
/// Kernel data/stack selector.
pub const KERNEL_DATA: u16 = 0x10;
/// Guest data/stack selector (ring 3).
pub const USER_DATA: u16 = 0x18 | 3;
/// Guest code selector (ring 3, 64-bit).
pub const USER_CODE: u16 = 0x20 | 3;
const TSS_SELECTOR: u16 = 0x28;

/// IST slot (1-based, as the IDT encodes it) of the machine-check stack.
pub const IST_MACHINE_CHECK: u8 = 1;
/// IST slot of the double-fault stack.
pub const IST_DOUBLE_FAULT: u8 = 2;

const KERNEL_STACK_SIZE: usize = 32 * 1024;
const MACHINE_CHECK_STACK_SIZE: usize = 16 * 1024;
const DOUBLE_FAULT_STACK_SIZE: usize = 8 * 1024;

/// 64-bit task-state segment (only the stack pointers are used).
#[repr(C, packed(4))]
struct TaskStateSegment {
    reserved0: u32,
    privilege_stacks: [u64; 3],
    reserved1: u64,
    interrupt_stacks: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    io_map_base: u16,
}

#[repr(C, align(16))]
struct Stack<const N: usize>([u8; N]);

impl<const N: usize> Stack<N> {
    fn top(&self) -> u64 {
        self.0.as_ptr() as u64 + N as u64
    }
}

#[repr(C, align(16))]
struct CpuTables {
    gdt: [u64; 7],
    tss: TaskStateSegment,
    kernel_stack: Stack<KERNEL_STACK_SIZE>,
    machine_check_stack: Stack<MACHINE_CHECK_STACK_SIZE>,
    double_fault_stack: Stack<DOUBLE_FAULT_STACK_SIZE>,
}

const EMPTY_TABLES: CpuTables = CpuTables {
    gdt: [0; 7],
    tss: TaskStateSegment {
        reserved0: 0,
        privilege_stacks: [0; 3],
        reserved1: 0,
        interrupt_stacks: [0; 7],
        reserved2: 0,
        reserved3: 0,
        io_map_base: 0,
    },
    kernel_stack: Stack([0; KERNEL_STACK_SIZE]),
    machine_check_stack: Stack([0; MACHINE_CHECK_STACK_SIZE]),
    double_fault_stack: Stack([0; DOUBLE_FAULT_STACK_SIZE]),
};

// All-zero, so it lives in .bss and costs nothing in the image.
static TABLES: PerCpu<CpuTables> = PerCpu::new([const { UnsafeCell::new(EMPTY_TABLES) }; MAX_CPUS]);

/// Top of CPU `cpu`'s ring-0 stack: where the CPU lands when its guest traps.
pub fn kernel_stack_top(cpu: u32) -> u64 {
    // SAFETY: only the address of the stack is taken; the stack memory is not read.
    unsafe { (*TABLES.slot(cpu)).kernel_stack.top() }
}

fn tss_descriptor(base: u64) -> [u64; 2] {
    let limit = (size_of::<TaskStateSegment>() - 1) as u64;
    let low = (limit & 0xFFFF)
        | ((base & 0xFF_FFFF) << 16)
        | (0x89 << 40) // present, available 64-bit TSS
        | (((limit >> 16) & 0xF) << 48)
        | (((base >> 24) & 0xFF) << 56);
    [low, base >> 32]
}

/// Builds and loads this CPU's GDT and TSS, and reloads every segment register.
///
/// # Safety
/// Called once per CPU, by that CPU (`cpu` is its own index), with interrupts disabled.
pub unsafe fn init(cpu: u32) {
    // SAFETY: the caller is CPU `cpu`, the only user of this slot.
    let tables = unsafe { TABLES.get_mut(cpu) };
    // No I/O permission bitmap: the map base points past the segment's limit.
    tables.tss.io_map_base = size_of::<TaskStateSegment>() as u16;
    tables.tss.privilege_stacks[0] = tables.kernel_stack.top();
    tables.tss.interrupt_stacks[usize::from(IST_MACHINE_CHECK) - 1] =
        tables.machine_check_stack.top();
    tables.tss.interrupt_stacks[usize::from(IST_DOUBLE_FAULT) - 1] =
        tables.double_fault_stack.top();
    let [tss_low, tss_high] = tss_descriptor(&raw const tables.tss as u64);
    tables.gdt = [
        0,
        0x00AF_9B00_0000_FFFF, // kernel code: present, DPL 0, 64-bit
        0x00CF_9300_0000_FFFF, // kernel data
        0x00CF_F300_0000_FFFF, // user data: DPL 3
        0x00AF_FB00_0000_FFFF, // user code: DPL 3, 64-bit
        tss_low,
        tss_high,
    ];
    let pointer = DescriptorTablePointer {
        limit: (size_of::<[u64; 7]>() - 1) as u16,
        base: tables.gdt.as_ptr() as u64,
    };
    // SAFETY: the GDT lives in a static for the kernel's lifetime; the selectors reloaded
    // below index valid descriptors of it, and the far return lands on the next instruction.
    unsafe {
        asm!(
            "lgdt [{pointer}]",
            "push {code}",
            "lea {scratch}, [rip + 2f]",
            "push {scratch}",
            "retfq",
            "2:",
            "mov ds, {data:x}",
            "mov es, {data:x}",
            "mov ss, {data:x}",
            "ltr {tss:x}",
            pointer = in(reg) &raw const pointer,
            code = in(reg) u64::from(KERNEL_CODE),
            data = in(reg) u64::from(KERNEL_DATA),
            tss = in(reg) u64::from(TSS_SELECTOR),
            scratch = out(reg) _,
        );
    }
}

/// The operand of `lgdt` / `lidt`.
#[repr(C, packed(2))]
pub struct DescriptorTablePointer {
    /// Size of the table in bytes, minus one.
    pub limit: u16,
    /// Linear address of the table.
    pub base: u64,
}
