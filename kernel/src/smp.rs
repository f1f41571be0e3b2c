//! Application-processor startup (INIT-SIPI-SIPI), the CPU count, and the "kick" IPI.
//!
//! The APs start in real mode at the trampoline copied to 0x8000. It loads a tiny GDT,
//! enters protected mode, then long mode on the BSP's page tables (the BSP's own switch and
//! segment loads, `boot::enable_long_mode` and `boot::load_data_segments`), and jumps to
//! `ap_entry64` in the kernel image. That picks a boot stack by the CPU's initial APIC ID
//! (CPUID leaf 1), so all APs can start at once without handing anything over, and calls
//! [`crate::entry::ap_main`].

#![cfg(target_os = "none")]

use crate::boot::{enable_long_mode, load_data_segments};
use crate::percpu::MAX_CPUS;
use crate::{apic, cpu};
use core::arch::global_asm;
use core::sync::atomic::{AtomicU32, Ordering};

/// Physical address the real-mode trampoline is copied to (page 8: SIPI vector 0x08).
const TRAMPOLINE_ADDRESS: usize = 0x8000;
const AP_BOOT_STACK_SIZE: usize = 16 * 1024;

global_asm!(
    ".pushsection .rodata.ap_trampoline, \"a\"",
    ".balign 16",
    "ap_trampoline_start:",
    ".code16",
    "cli",
    "cld",
    "xor %ax, %ax",
    "mov %ax, %ds",
    "lgdtl (ap_gdt_pointer - ap_trampoline_start + {base})",
    "mov %cr0, %eax",
    "or $1, %eax",
    "mov %eax, %cr0",
    "ljmpl $0x08, $(ap_protected_mode - ap_trampoline_start + {base})",
    ".code32",
    "ap_protected_mode:",
    load_data_segments!(),
    enable_long_mode!(),
    "ljmp $0x18, $(ap_long_mode - ap_trampoline_start + {base})",
    ".code64",
    "ap_long_mode:",
    "movabs $ap_entry64, %rax",
    "jmp *%rax",
    ".balign 8",
    "ap_gdt:",
    ".quad 0",
    ".quad 0x00CF9B000000FFFF", // 0x08: 32-bit code
    ".quad 0x00CF93000000FFFF", // 0x10: data
    ".quad 0x00AF9B000000FFFF", // 0x18: 64-bit code
    "ap_gdt_end:",
    "ap_gdt_pointer:",
    ".word ap_gdt_end - ap_gdt - 1",
    ".long ap_gdt - ap_trampoline_start + {base}",
    "ap_trampoline_end:",
    ".popsection",

    ".pushsection .bss.ap_boot_stacks, \"aw\", @nobits",
    ".balign 16",
    "ap_boot_stacks: .skip {stack_size} * {max_cpus}",
    ".popsection",

    ".pushsection .text.ap_entry64, \"ax\", @progbits",
    "ap_entry64:",
    load_data_segments!(),
    "mov $1, %eax",
    "cpuid",
    "shr $24, %ebx",
    "cmp ${max_cpus}, %ebx",
    "jae 3f",
    "lea ap_boot_stacks(%rip), %rsp",
    "lea 1(%rbx), %rax",
    "imul ${stack_size}, %rax",
    "add %rax, %rsp",
    "mov %ebx, %edi",
    "call {ap_main}",
    "3:",
    "cli",
    "hlt",
    "jmp 3b",
    ".popsection",
    base = const TRAMPOLINE_ADDRESS,
    stack_size = const AP_BOOT_STACK_SIZE,
    max_cpus = const MAX_CPUS,
    ap_main = sym crate::entry::ap_main,
    options(att_syntax),
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
}

/// CPUs that finished their own initialisation (the BSP included).
static ONLINE: AtomicU32 = AtomicU32::new(0);
/// Set by the BSP once every CPU is online and the shared state is ready.
static RELEASED: AtomicU32 = AtomicU32::new(0);

static CPU_COUNT: spin::Once<u32> = spin::Once::new();

/// Number of CPUs of the machine, from QEMU's fw_cfg (`FW_CFG_NB_CPUS`), read once: the
/// bootstrap processor asks first, before the APs run, and every later call (any CPU, the
/// migration timer) reads the cached value instead of racing on fw_cfg's selector port.
pub fn cpu_count() -> u32 {
    const FW_CFG_SELECTOR: u16 = 0x510;
    const FW_CFG_DATA: u16 = 0x511;
    const FW_CFG_NB_CPUS: u16 = 0x05;
    *CPU_COUNT.call_once(|| {
        cpu::outw(FW_CFG_SELECTOR, FW_CFG_NB_CPUS);
        let low = cpu::inb(FW_CFG_DATA);
        let high = cpu::inb(FW_CFG_DATA);
        u32::from(u16::from_le_bytes([low, high])).clamp(1, MAX_CPUS as u32)
    })
}

/// Records that the calling CPU finished its initialisation.
pub fn mark_online() {
    ONLINE.fetch_add(1, Ordering::AcqRel);
}

/// Starts every other CPU and waits until `expected` CPUs (the BSP included) are online, as
/// long as it takes; after a few seconds it says how many are (a run that hangs here is
/// caught by the harness's deadline, not by a guess at how fast the host runs the vCPUs).
pub fn start_application_processors(expected: u32) {
    if expected <= 1 {
        return;
    }
    // Only the addresses of the trampoline symbols are taken (no read: safe).
    let (start, end) = (&raw const ap_trampoline_start, &raw const ap_trampoline_end);
    let len = end as usize - start as usize;
    // SAFETY: 0x8000..0x8000+len (well under a page) is conventional memory that neither the
    // kernel image nor the firmware data still needed (the command line was copied out
    // already) occupies; it is identity-mapped and writable.
    unsafe { core::ptr::copy_nonoverlapping(start, TRAMPOLINE_ADDRESS as *mut u8, len) };
    apic::start_other_cpus((TRAMPOLINE_ADDRESS >> 12) as u8);
    let slow = cpu::rdtsc() + 10_000_000_000;
    let mut reported = false;
    while ONLINE.load(Ordering::Acquire) < expected {
        if !reported && cpu::rdtsc() > slow {
            reported = true;
            crate::kprintln!(
                "SMP still waiting: {} of {expected} CPUs online",
                ONLINE.load(Ordering::Acquire)
            );
        }
        core::hint::spin_loop();
    }
}

/// Lets every AP waiting in [`wait_for_release`] continue.
pub fn release_application_processors() {
    RELEASED.store(1, Ordering::Release);
}

/// Called by each AP after [`mark_online`]: waits for the BSP's go.
pub fn wait_for_release() {
    while RELEASED.load(Ordering::Acquire) == 0 {
        core::hint::spin_loop();
    }
}

/// Sends the kick IPI to every CPU whose bit is set in `cpus` (the caller's own included):
/// each re-enters the kernel and runs its before-returning-to-the-guest hook.
pub fn kick_cpus(cpus: u32) {
    for cpu in 0..MAX_CPUS as u32 {
        if cpus & (1 << cpu) != 0 {
            apic::send_ipi(cpu, apic::KICK_VECTOR);
        }
    }
}
