//! PVH entry and the 32-bit to 64-bit trampoline of the bootstrap processor.
//!
//! QEMU's `-kernel` loader boots an ELF that carries a `XEN_ELFNOTE_PHYS32_ENTRY` note the
//! "PVH" way: 32-bit protected mode, paging off, flat segments, and EBX holding the physical
//! address of an `hvm_start_info` structure (which carries the `-append` command line).
//!
//! The entry code zeroes `.bss`, builds an identity map of the low 4 GiB with 2 MiB pages
//! (supervisor-only; `paging::init` later opens the guest ranges to ring 3), enters long
//! mode through a minimal GDT and calls [`crate::entry::kernel_main`] on the boot stack.

#![cfg(target_os = "none")]

use core::arch::global_asm;

/// The switch to long mode, from 32-bit protected mode with paging off, onto the boot page
/// tables (`boot_pml4`): CR4.PAE, CR3, EFER.LME, then CR0.PG | WP | PE. The caller then
/// loads 64-bit code with a far jump. The bootstrap processor's entry below and the
/// application processors' trampoline (`smp.rs`) both expand it; it clobbers EAX, ECX, EDX.
macro_rules! enable_long_mode {
    () => {
        concat!(
            "mov %cr4, %eax\n",
            "or $0x20, %eax\n",
            "mov %eax, %cr4\n",
            "mov $boot_pml4, %eax\n",
            "mov %eax, %cr3\n",
            "mov $0xC0000080, %ecx\n", // IA32_EFER
            "rdmsr\n",
            "or $0x100, %eax\n", // EFER.LME
            "wrmsr\n",
            "mov %cr0, %eax\n",
            "or $0x80010001, %eax\n",
            "mov %eax, %cr0",
        )
    };
}
pub(crate) use enable_long_mode;

/// Loads DS, ES and SS with selector 0x10, the flat data descriptor of both the boot GDT
/// below and the application processors' trampoline GDT (`smp.rs`). Expanded in 32-bit code
/// after entering protected mode and in 64-bit code after the far jump to long mode; it
/// clobbers AX.
macro_rules! load_data_segments {
    () => {
        concat!(
            "mov $0x10, %ax\n",
            "mov %ax, %ds\n",
            "mov %ax, %es\n",
            "mov %ax, %ss",
        )
    };
}
pub(crate) use load_data_segments;

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the note type QEMU looks for.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Number of 2 MiB pages mapped at boot (4 GiB, so the local APIC page is covered).
pub const BOOT_LARGE_PAGES: usize = 2048;
/// Size of the bootstrap processor's boot stack.
const BOOT_STACK_SIZE: usize = 64 * 1024;

global_asm!(
    // The PVH note: namesz, descsz, type, "Xen\0", then the 32-bit entry point. QEMU reads
    // the descriptor of a 64-bit ELF as a 64-bit value, so it is a .quad.
    ".pushsection .note.Xen, \"a\", @note",
    ".balign 4",
    ".long 4",
    ".long 8",
    ".long {note_type}",
    ".asciz \"Xen\"",
    ".balign 4",
    ".quad pvh_start32",
    ".popsection",

    // Page tables and the boot stack (zeroed by the entry code itself).
    ".pushsection .bss.boot, \"aw\", @nobits",
    ".balign 4096",
    ".global boot_pml4",
    "boot_pml4: .skip 4096",
    "boot_pdpt: .skip 4096",
    ".global boot_page_directories",
    "boot_page_directories: .skip 4096 * 4",
    "boot_stack: .skip {stack_size}",
    "boot_stack_top:",
    ".popsection",

    // A GDT just good enough to reach 64-bit code: null, code64 (0x08), data (0x10).
    ".pushsection .rodata.boot_gdt, \"a\"",
    ".balign 16",
    "boot_gdt:",
    ".quad 0",
    ".quad 0x00AF9B000000FFFF",
    ".quad 0x00CF93000000FFFF",
    "boot_gdt_end:",
    "boot_gdt_pointer:",
    ".word boot_gdt_end - boot_gdt - 1",
    ".quad boot_gdt",
    ".popsection",

    ".pushsection .text.boot, \"ax\", @progbits",
    ".code32",
    ".global pvh_start32",
    "pvh_start32:",
    "cli",
    "cld",
    // Zero .bss; EBX (hvm_start_info) is preserved throughout.
    "mov $__bss_start, %edi",
    "mov $__bss_end, %ecx",
    "sub %edi, %ecx",
    "xor %eax, %eax",
    "rep stosb",
    // PML4[0] -> PDPT; PDPT[0..4] -> the four page directories. Upper levels allow user
    // access; the 2 MiB leaves decide.
    "mov $boot_pdpt, %eax",
    "or $0x7, %eax",
    "mov %eax, boot_pml4",
    "mov $boot_page_directories, %eax",
    "or $0x7, %eax",
    "xor %ecx, %ecx",
    "3:",
    "mov %eax, boot_pdpt(,%ecx,8)",
    "add $0x1000, %eax",
    "inc %ecx",
    "cmp $4, %ecx",
    "jb 3b",
    // Identity map: entry i maps i * 2 MiB, present + writable + large page.
    "xor %ecx, %ecx",
    "2:",
    "mov %ecx, %eax",
    "shl $21, %eax",
    "or $0x83, %eax",
    "mov %eax, boot_page_directories(,%ecx,8)",
    "inc %ecx",
    "cmp ${pages}, %ecx",
    "jb 2b",
    enable_long_mode!(),
    "lgdt boot_gdt_pointer",
    "ljmp $0x08, $4f",
    ".code64",
    "4:",
    load_data_segments!(),
    "xor %eax, %eax",
    "mov %ax, %fs",
    "mov %ax, %gs",
    "lea boot_stack_top(%rip), %rsp",
    "mov %ebx, %edi",
    "call {kernel_main}",
    "ud2",
    ".popsection",
    note_type = const XEN_ELFNOTE_PHYS32_ENTRY,
    stack_size = const BOOT_STACK_SIZE,
    pages = const BOOT_LARGE_PAGES,
    kernel_main = sym crate::entry::kernel_main,
    options(att_syntax),
);

/// `hvm_start_info.magic`.
const START_INFO_MAGIC: u32 = 0x336E_C578;
/// Offset of `cmdline_paddr` (u64) in `hvm_start_info`.
const START_INFO_CMDLINE: usize = 24;
/// Longest command line kept.
pub const CMDLINE_MAX: usize = 256;

/// The boot command line, copied out of firmware memory before anything below 1 MiB is
/// reused (the AP trampoline is copied there).
pub struct CommandLine {
    bytes: [u8; CMDLINE_MAX],
    len: usize,
}

impl CommandLine {
    /// Reads the command line from the `hvm_start_info` at physical address `start_info`.
    ///
    /// # Safety
    /// `start_info` is the value the PVH loader passed in EBX, and the memory it describes is
    /// still intact (identity-mapped, nothing written below 1 MiB yet).
    pub unsafe fn from_start_info(start_info: u32) -> Self {
        let mut line = Self {
            bytes: [0; CMDLINE_MAX],
            len: 0,
        };
        let base = start_info as usize;
        // SAFETY: per the caller, `base` points at a readable hvm_start_info.
        let magic = unsafe { core::ptr::read_volatile(base as *const u32) };
        if magic != START_INFO_MAGIC {
            return line;
        }
        // SAFETY: as above; cmdline_paddr is an aligned u64 at offset 24.
        let text = unsafe { core::ptr::read_volatile((base + START_INFO_CMDLINE) as *const u64) };
        if text == 0 {
            return line;
        }
        while line.len < CMDLINE_MAX {
            // SAFETY: the loader placed a NUL-terminated string at `text`, in identity-mapped
            // low memory; reading stops at the NUL or after CMDLINE_MAX bytes.
            let byte = unsafe { core::ptr::read_volatile((text as usize + line.len) as *const u8) };
            if byte == 0 {
                break;
            }
            line.bytes[line.len] = byte;
            line.len += 1;
        }
        line
    }

    /// The whole command line (lossy: anything not UTF-8 reads as empty).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }

    /// The value of the first `key=value` word, if any.
    pub fn value_of(&self, key: &str) -> Option<&str> {
        self.as_str().split_ascii_whitespace().find_map(|word| {
            word.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
        })
    }
}
