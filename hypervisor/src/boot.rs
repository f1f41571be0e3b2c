//! Host boot: the PVH entry (32-bit protected mode, paging off) of the bootstrap processor,
//! the real-mode trampoline of the application processors, the host IDT stubs, and the
//! `VMRUN` sequence.
//!
//! Both entries build no page tables of their own at run time except the BSP, which fills
//! the identity map of the low 4 GiB (2 MiB pages) once; APs load the same `boot_pml4`.

#![cfg(target_os = "none")]

use core::arch::global_asm;

/// Host-physical address the AP trampoline is copied to (SIPI vector 0x08).
pub const TRAMPOLINE: usize = 0x8000;
/// Stack of each physical CPU.
pub const STACK_SIZE: usize = 64 * 1024;
/// CPUs the hypervisor runs on (one vCPU each).
pub const MAX_CPUS: usize = 4;

global_asm!(
    // The PVH ELF note: QEMU enters `pvh_start32` in 32-bit protected mode.
    ".pushsection .note.Xen, \"a\"",
    ".balign 4",
    ".long 4", ".long 4", ".long 18",
    ".asciz \"Xen\"",
    ".balign 4",
    ".long pvh_start32",
    ".balign 4",
    ".popsection",

    ".pushsection .text.boot, \"ax\"",
    ".code32",
    ".global pvh_start32",
    "pvh_start32:",
    "cli",
    "cld",
    // PML4[0] -> PDPT; PDPT[0..4] -> four page directories of 2 MiB pages: 4 GiB identity.
    "mov eax, offset boot_pdpt",
    "or eax, 3",
    "mov [boot_pml4], eax",
    "xor ecx, ecx",
    "2:",
    "mov eax, ecx",
    "shl eax, 12",
    "add eax, offset boot_pd",
    "or eax, 3",
    "mov [boot_pdpt + ecx * 8], eax",
    "inc ecx",
    "cmp ecx, 4",
    "jne 2b",
    "xor ecx, ecx",
    "3:",
    "mov eax, ecx",
    "shl eax, 21",
    "or eax, 0x83",
    "mov [boot_pd + ecx * 8], eax",
    "mov eax, ecx",
    "shr eax, 11",
    "mov [boot_pd + ecx * 8 + 4], eax",
    "inc ecx",
    "cmp ecx, 2048",
    "jne 3b",
    "mov esp, offset bsp_stack_top",
    "jmp enter_long_mode",

    // Shared by the BSP and the APs (already in protected mode with flat segments).
    "enter_long_mode:",
    "mov eax, offset boot_pml4",
    "mov cr3, eax",
    "mov eax, cr4",
    "or eax, (1 << 5) | (1 << 9) | (1 << 10)", // PAE, OSFXSR, OSXMMEXCPT
    "mov cr4, eax",
    "mov ecx, 0xC0000080",
    "rdmsr",
    "or eax, (1 << 8) | (1 << 12)", // LME, SVME
    "wrmsr",
    "mov eax, cr0",
    "or eax, (1 << 31) | (1 << 16) | 1", // PG, WP, PE
    "and eax, ~((1 << 2) | (1 << 30) | (1 << 29))", // EM, CD, NW off
    "or eax, 2", // MP
    "mov cr0, eax",
    "lgdt [host_gdt_pointer]",
    ".byte 0xea", // ljmp 0x08:long_entry
    ".long long_entry",
    ".word 0x08",

    ".code64",
    "long_entry:",
    "mov ax, 0x10",
    "mov ds, ax",
    "mov es, ax",
    "mov ss, ax",
    "xor eax, eax",
    "mov fs, ax",
    "mov gs, ax",
    // The CPU's initial APIC ID picks its stack: 0 is the BSP's (already loaded).
    "mov eax, 1",
    "cpuid",
    "shr ebx, 24",
    "test ebx, ebx",
    "jz 5f",
    "cmp ebx, {max_cpus}",
    "jae 6f",
    "lea rsp, [rip + ap_stacks]",
    "mov rax, rbx",
    "imul rax, {stack_size}",
    "add rsp, rax",
    "mov edi, ebx",
    "call {ap_main}",
    "jmp 6f",
    "5:",
    "mov rsp, offset bsp_stack_top",
    "call {bsp_main}",
    "6:",
    "cli",
    "hlt",
    "jmp 6b",
    ".popsection",

    ".pushsection .rodata.gdt, \"a\"",
    ".balign 16",
    "host_gdt:",
    ".quad 0",
    ".quad 0x00af9a000000ffff", // 0x08: 64-bit code
    ".quad 0x00cf92000000ffff", // 0x10: data
    "host_gdt_pointer:",
    ".word host_gdt_pointer - host_gdt - 1",
    ".quad host_gdt",
    ".popsection",

    ".pushsection .bss.boot, \"aw\", @nobits",
    ".balign 4096",
    ".global boot_pml4",
    "boot_pml4: .skip 4096",
    "boot_pdpt: .skip 4096",
    "boot_pd: .skip 4096 * 4",
    ".balign 16",
    "bsp_stack: .skip {stack_size}",
    "bsp_stack_top:",
    // ap_stacks + (id + 1) * size is the top of AP id's stack (id 0 is never used).
    "ap_stacks: .skip {stack_size} * {max_cpus}",
    ".popsection",

    // Host exception stubs: NMI returns at once (it is only the kick that made the guest
    // exit, and arrives when the host sets GIF); every other vector reports and stops.
    ".pushsection .text.idt, \"ax\"",
    ".global host_nmi",
    "host_nmi:",
    "iretq",
    ".balign 16",
    ".global host_fault_stubs",
    "host_fault_stubs:",
    ".irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    "mov edi, \\v",
    "mov rsi, rsp",
    "jmp host_fault_common",
    ".balign 16",
    ".endr",
    "host_fault_common:",
    "and rsp, -16",
    "call {host_fault}",
    "7:",
    "cli",
    "hlt",
    "jmp 7b",
    ".popsection",

    // vmrun_guest(vmcb_pa: u64 in rdi, regs: *mut GuestRegs in rsi)
    // GuestRegs: rbx rcx rdx rsi rdi rbp r8..r15 (RAX lives in the VMCB).
    ".pushsection .text.vmrun, \"ax\"",
    ".global vmrun_guest",
    "vmrun_guest:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rsi",
    "mov rax, rdi",
    "mov rbx, [rsi]",
    "mov rcx, [rsi + 8]",
    "mov rdx, [rsi + 16]",
    "mov rdi, [rsi + 32]",
    "mov rbp, [rsi + 40]",
    "mov r8, [rsi + 48]",
    "mov r9, [rsi + 56]",
    "mov r10, [rsi + 64]",
    "mov r11, [rsi + 72]",
    "mov r12, [rsi + 80]",
    "mov r13, [rsi + 88]",
    "mov r14, [rsi + 96]",
    "mov r15, [rsi + 104]",
    "mov rsi, [rsi + 24]",
    "clgi",
    "vmrun rax",
    "push rsi",
    "mov rsi, [rsp + 8]",
    "mov [rsi], rbx",
    "mov [rsi + 8], rcx",
    "mov [rsi + 16], rdx",
    "mov [rsi + 32], rdi",
    "mov [rsi + 40], rbp",
    "mov [rsi + 48], r8",
    "mov [rsi + 56], r9",
    "mov [rsi + 64], r10",
    "mov [rsi + 72], r11",
    "mov [rsi + 80], r12",
    "mov [rsi + 88], r13",
    "mov [rsi + 96], r14",
    "mov [rsi + 104], r15",
    "pop rax",
    "mov [rsi + 24], rax",
    "pop rsi",
    // GIF set with IF still 0: a pending NMI (the kick) is taken here, nothing else.
    "stgi",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    ".popsection",
    max_cpus = const MAX_CPUS,
    stack_size = const STACK_SIZE,
    ap_main = sym crate::entry::ap_main,
    bsp_main = sym crate::entry::bsp_main,
    host_fault = sym crate::entry::host_fault,
);

// AP trampoline (AT&T syntax for the label arithmetic): copied to TRAMPOLINE, entered in
// real mode by the SIPI; continues at `enter_long_mode` in protected mode.
global_asm!(
    ".pushsection .rodata.trampoline, \"a\"",
    ".balign 16",
    ".global ap_trampoline_start",
    ".global ap_trampoline_end",
    "ap_trampoline_start:",
    ".code16",
    "cli",
    "xor %ax, %ax",
    "mov %ax, %ds",
    "lgdtl (ap_gdt_pointer - ap_trampoline_start + {tramp})",
    "mov %cr0, %eax",
    "or $1, %eax",
    "mov %eax, %cr0",
    "ljmpl $0x18, $(ap_protected - ap_trampoline_start + {tramp})",
    ".code32",
    "ap_protected:",
    "mov $0x10, %ax",
    "mov %ax, %ds",
    "mov %ax, %es",
    "mov %ax, %ss",
    "mov $enter_long_mode, %eax",
    "jmp *%eax",
    ".balign 8",
    "ap_gdt:",
    ".quad 0",
    ".quad 0x00af9a000000ffff",
    ".quad 0x00cf92000000ffff",
    ".quad 0x00cf9a000000ffff",
    "ap_gdt_pointer:",
    ".word ap_gdt_pointer - ap_gdt - 1",
    ".long ap_gdt - ap_trampoline_start + {tramp}",
    "ap_trampoline_end:",
    ".code64",
    ".popsection",
    tramp = const TRAMPOLINE,
    options(att_syntax),
);

/// The guest's general-purpose registers while it is not running (RAX is in the VMCB).
#[repr(C)]
#[derive(Default)]
pub struct GuestRegs {
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8_r15: [u64; 8],
}

unsafe extern "C" {
    /// Runs the guest of `vmcb` (host-physical = virtual) until its next #VMEXIT.
    pub fn vmrun_guest(vmcb: u64, regs: *mut GuestRegs);
    pub static ap_trampoline_start: u8;
    pub static ap_trampoline_end: u8;
    pub static host_fault_stubs: u8;
    pub static host_nmi: u8;
}
