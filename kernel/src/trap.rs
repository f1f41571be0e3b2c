//! Trap dispatch: what the kernel does with each vector, and the return-to-guest hook.

#![cfg(target_os = "none")]

use crate::{apic, gdt, hypercall, idt, mce, migration, vcpu};
use core::arch::asm;
use core::mem::size_of;

/// The register state saved by `trap_common` (see `idt`), lowest address first.
///
/// For a trap from ring 3 this *is* the guest's context: the kernel edits it to emulate an
/// instruction, to enter a guest trap handler or to restore an interrupted guest context,
/// and `trap_exit` resumes whatever it holds.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
#[allow(missing_docs)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Pushed by the entry stub.
    pub vector: u64,
    /// Pushed by the CPU, or zero from the stub.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl TrapFrame {
    /// Every register zero (for static initialisers).
    pub const ZERO: Self = Self {
        r15: 0,
        r14: 0,
        r13: 0,
        r12: 0,
        r11: 0,
        r10: 0,
        r9: 0,
        r8: 0,
        rbp: 0,
        rdi: 0,
        rsi: 0,
        rdx: 0,
        rcx: 0,
        rbx: 0,
        rax: 0,
        vector: 0,
        error_code: 0,
        rip: 0,
        cs: 0,
        rflags: 0,
        rsp: 0,
        ss: 0,
    };

    /// Whether the trap interrupted ring 3 (a guest).
    pub fn interrupted_guest(&self) -> bool {
        self.cs & 3 == 3
    }
}

/// RFLAGS of a freshly started guest: interrupts enabled (bit 1 is always set).
const GUEST_RFLAGS: u64 = 0x202;

/// Entered from `trap_common` for every interrupt and exception, on CPU `cpu`.
pub extern "C" fn dispatch(frame: &mut TrapFrame, cpu: u32) {
    let vector = frame.vector as u8;
    match vector {
        idt::MACHINE_CHECK => mce::host_machine_check(cpu, frame),
        idt::HYPERCALL if frame.interrupted_guest() => hypercall::dispatch(cpu, frame),
        apic::KICK_VECTOR => apic::end_of_interrupt(),
        apic::TIMER_VECTOR => {
            apic::end_of_interrupt();
            migration::source::on_timer_tick();
        }
        apic::SPURIOUS_VECTOR => {}
        // The legacy PICs are masked; only their spurious IRQ 7/15 can still arrive.
        v if (apic::PIC_VECTOR_BASE..apic::PIC_VECTOR_BASE + 16).contains(&v) => {}
        idt::GENERAL_PROTECTION if frame.interrupted_guest() => {
            vcpu::general_protection(cpu, frame)
        }
        _ if frame.interrupted_guest() => vcpu::guest_fault(cpu, frame),
        _ => kernel_fault(cpu, frame),
    }
    if frame.interrupted_guest() {
        vcpu::before_return_to_guest(cpu, frame);
    }
}

fn kernel_fault(cpu: u32, frame: &TrapFrame) -> ! {
    let cr2 = if frame.vector == u64::from(idt::PAGE_FAULT) {
        crate::cpu::read_cr2()
    } else {
        0
    };
    panic!(
        "CPU {cpu}: exception {} error={:#x} rip={:#x} rsp={:#x} cr2={cr2:#x}",
        frame.vector, frame.error_code, frame.rip, frame.rsp
    );
}

/// Starts ring-3 execution on this CPU: `entry(args[0], args[1], args[2], args[3])` with the
/// stack pointer at `stack`, interrupts on.
///
/// The initial context is written where a trap from the guest would leave it (at the top of
/// the CPU's ring-0 stack) and resumed through `trap_exit`, exactly like a return from a trap.
///
/// # Safety
/// `cpu` is the running CPU, its GDT/TSS/IDT are loaded, the caller does not run on the
/// ring-0 stack (which is reused from its top), and `entry`/`stack` are user-accessible.
pub unsafe fn enter_guest(cpu: u32, entry: u64, stack: u64, args: [u64; 4]) -> ! {
    let top = gdt::kernel_stack_top(cpu);
    let frame_address = top - size_of::<TrapFrame>() as u64;
    let frame = TrapFrame {
        rdi: args[0],
        rsi: args[1],
        rdx: args[2],
        rcx: args[3],
        rip: entry,
        cs: u64::from(gdt::USER_CODE),
        rflags: GUEST_RFLAGS,
        rsp: stack,
        ss: u64::from(gdt::USER_DATA),
        ..TrapFrame::ZERO
    };
    // SAFETY: the frame slot is inside this CPU's ring-0 stack, which nothing else uses yet
    // (caller's contract); `trap_exit` pops exactly a `TrapFrame` and `iretq`s to ring 3.
    unsafe {
        core::ptr::write(frame_address as *mut TrapFrame, frame);
        asm!("mov rsp, {}", "jmp trap_exit", in(reg) frame_address, options(noreturn));
    }
}
