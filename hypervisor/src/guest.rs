//! The guest: Debian's vmlinux loaded into guest RAM, the PVH start info, the nested page
//! tables, the CPUID the guest sees, the ACPI tables that describe its vCPUs (MADT with a
//! multiprocessor wakeup mailbox), and the application processors' wait at that mailbox.

#![cfg(target_os = "none")]

use crate::entry::Scenario;
use crate::svm::{self, Pages};
use crate::{boot, hvprintln};
use core::ops::Range;
use vmce::Profile;

/// Host-physical address of guest-physical 0.
pub const RAM_HPA: u64 = 0x1000_0000;
/// Guest RAM: 256 MiB, the last MiB of it reserved for the firmware tables below.
pub const RAM_SIZE: u64 = 0x1000_0000;
const VMLINUX_HPA: u64 = vmce_qemu_protocol::linux::params::VMLINUX;
const INITRD_HPA: u64 = vmce_qemu_protocol::linux::params::INITRD;

// Guest-physical layout of what the hypervisor writes.
const START_INFO: u64 = 0x6000;
const MEMMAP: u64 = 0x6100;
const MODLIST: u64 = 0x6200;
const CMDLINE: u64 = 0x7000;
const INITRD: u64 = 0x0800_0000;
const FIRMWARE: u64 = 0x0FF0_0000;
const RSDP: u64 = FIRMWARE;
const XSDT: u64 = FIRMWARE + 0x100;
const MADT: u64 = FIRMWARE + 0x200;
/// The ACPI multiprocessor wakeup mailbox (4 KiB aligned).
pub const MAILBOX: u64 = FIRMWARE + 0x1000;
/// Identity page tables for the 64-bit AP wakeup (PML4, PDPT, PD: the low 1 GiB).
const AP_PML4: u64 = FIRMWARE + 0x2000;

/// Every machine-check MSR the issue names: `P5_MC_ADDR`/`P5_MC_TYPE`, `MCG_CAP`,
/// `MCG_STATUS`, `MCG_CTL`, `MCi_CTL2` of 32 banks, `MCG_EXT_CTL`, and `MCi_CTL/STATUS/
/// ADDR/MISC` of 32 banks.
pub const MCA_MSRS: [Range<u32>; 5] = [
    0x0..0x2,
    0x179..0x17C,
    0x280..0x2A0,
    0x4D0..0x4D1,
    0x400..0x480,
];

/// AMD's `MSR_CU_DEF_ERR`: the deferred-error interrupt's LVT offset. A Linux guest with
/// SUCCOR reads it (with `rdmsr_safe`) to route deferred errors through an extended APIC LVT
/// entry; QEMU's local APIC has none, and vmce reflects no deferred errors. The hypervisor
/// answers #GP, on which Linux leaves the deferred-error interrupt off without a word.
/// Answering QEMU's value (offset 0) makes Linux print `[Firmware Bug]: Your BIOS is not
/// setting up LVT offset 0x2 for deferred error IRQs correctly`.
pub const DEFERRED_ERROR_MSR: u32 = 0xC000_0410;

/// Where a vCPU starts.
#[derive(Clone, Copy, Debug)]
pub enum Entry {
    /// The boot vCPU: the PVH entry, 32-bit protected mode, paging off, RBX = start info.
    Pvh(u64),
    /// An application processor: the wakeup vector from the mailbox, 64-bit mode with
    /// identity paging (ACPI 6.4 multiprocessor wakeup).
    Wakeup(u64),
}

fn host(gpa: u64) -> u64 {
    RAM_HPA + gpa
}

fn rd<T: Copy>(hpa: u64) -> T {
    // SAFETY: identity-mapped host memory (guest RAM or the loader's images), unaligned read.
    unsafe { core::ptr::read_unaligned(hpa as *const T) }
}

fn wr<T: Copy>(hpa: u64, value: T) {
    // SAFETY: identity-mapped guest RAM, written before the guest runs (or the mailbox).
    unsafe { core::ptr::write_unaligned(hpa as *mut T, value) }
}

fn wr_bytes(gpa: u64, bytes: &[u8]) {
    // SAFETY: guest RAM, inside RAM_SIZE (all callers use fixed small layouts).
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), host(gpa) as *mut u8, bytes.len()) }
}

// Nested page tables: guest-physical [0, 256 MiB) → RAM_HPA, [3 GiB, 4 GiB) identity (MMIO:
// the IOAPIC, the local APIC, PCI). Anything else is a nested page fault.
static NPML4: Pages<4096> = Pages::new();
static NPDPT: Pages<4096> = Pages::new();
static NPD_LOW: Pages<4096> = Pages::new();
static NPD_MMIO: Pages<4096> = Pages::new();
/// 4 KiB nested page tables for the 2 MiB regions in which a frame was unmapped.
static NPT_SPLIT: [Pages<4096>; 8] = [const { Pages::new() }; 8];
/// Which 2 MiB region (index + 1; 0 = free) each [`NPT_SPLIT`] table maps.
static NPT_SPLIT_REGION: spin::Mutex<[u64; 8]> = spin::Mutex::new([0; 8]);

pub fn nested_cr3() -> u64 {
    NPML4.addr()
}

fn build_nested_tables() {
    NPML4.write::<u64>(0, NPDPT.addr() | 7);
    NPDPT.write::<u64>(0, NPD_LOW.addr() | 7);
    NPDPT.write::<u64>(3 * 8, NPD_MMIO.addr() | 7);
    for i in 0..(RAM_SIZE >> 21) as usize {
        NPD_LOW.write::<u64>(i * 8, (RAM_HPA + ((i as u64) << 21)) | 0x87);
    }
    for i in 0..512usize {
        NPD_MMIO.write::<u64>(i * 8, (0xC000_0000 + ((i as u64) << 21)) | 0x87);
    }
}

/// The guest-physical address behind guest-virtual `gva` in the guest's 4-level page tables
/// at `cr3` (4 KiB, 2 MiB and 1 GiB pages), if it is mapped.
pub fn translate(cr3: u64, gva: u64) -> Option<u64> {
    const ADDR: u64 = 0x000F_FFFF_FFFF_F000;
    let mut table = cr3 & ADDR;
    for level in (0..4u32).rev() {
        let index = (gva >> (12 + 9 * level)) & 511;
        let at = table + index * 8;
        if at + 8 > RAM_SIZE {
            return None;
        }
        let entry: u64 = rd(host(at));
        if entry & 1 == 0 {
            return None;
        }
        let large = level > 0 && level < 3 && entry & (1 << 7) != 0;
        if level == 0 || large {
            let span = 1u64 << (12 + 9 * level);
            return Some((entry & ADDR & !(span - 1)) | (gva & (span - 1)));
        }
        table = entry & ADDR;
    }
    None
}

/// Removes guest-physical frame `gpa` from the nested page tables (its 2 MiB page is split
/// into 4 KiB pages first): the next access is a nested page fault. The caller flushes the
/// vCPUs' TLBs.
pub fn unmap_frame(gpa: u64) {
    let region = gpa >> 21;
    if gpa >= FIRMWARE {
        hvprintln!("FATAL: {gpa:#x} is not guest RAM the guest may use");
        crate::hw::qemu_exit(0x18);
    }
    let mut regions = NPT_SPLIT_REGION.lock();
    let slot = match regions.iter().position(|&r| r == region + 1) {
        Some(slot) => slot,
        None => {
            let Some(slot) = regions.iter().position(|&r| r == 0) else {
                hvprintln!("FATAL: no nested page table left to split {gpa:#x}");
                crate::hw::qemu_exit(0x18);
            };
            let table = &NPT_SPLIT[slot];
            for i in 0..512u64 {
                table.write::<u64>(i as usize * 8, (RAM_HPA + (region << 21) + (i << 12)) | 7);
            }
            regions[slot] = region + 1;
            NPD_LOW.write::<u64>(region as usize * 8, table.addr() | 7);
            slot
        }
    };
    NPT_SPLIT[slot].write::<u64>(((gpa >> 12) & 511) as usize * 8, 0);
}

/// Loads vmlinux and the initramfs, writes the start info (and the ACPI tables for SMP),
/// builds the nested page tables. Returns the boot vCPU's entry.
pub fn load(scenario: Scenario, vcpus: u32, initrd_size: u64) -> Entry {
    build_nested_tables();
    let elf = VMLINUX_HPA;
    if rd::<u32>(elf) != 0x464c_457f {
        hvprintln!("FATAL: no ELF at {elf:#x} (vmlinux missing from -device loader)");
        crate::hw::qemu_exit(0x14);
    }
    let phoff: u64 = rd(elf + 32);
    let phnum: u16 = rd(elf + 56);
    let mut entry = 0u64;
    for i in 0..u64::from(phnum) {
        let ph = elf + phoff + i * 56;
        let kind: u32 = rd(ph);
        let offset: u64 = rd(ph + 8);
        let paddr: u64 = rd(ph + 24);
        let filesz: u64 = rd(ph + 32);
        let memsz: u64 = rd(ph + 40);
        if kind == 1 {
            assert!(
                paddr + memsz <= FIRMWARE,
                "vmlinux segment beyond guest RAM"
            );
            // SAFETY: the segment lies inside guest RAM (checked) and the ELF image.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    (elf + offset) as *const u8,
                    host(paddr) as *mut u8,
                    filesz as usize,
                );
                core::ptr::write_bytes(
                    host(paddr + filesz) as *mut u8,
                    0,
                    (memsz - filesz) as usize,
                );
            }
        } else if kind == 4 {
            // PT_NOTE: the Xen PVH entry note (type 18, name "Xen").
            let mut note = elf + offset;
            while note < elf + offset + filesz {
                let namesz: u32 = rd(note);
                let descsz: u32 = rd(note + 4);
                let ty: u32 = rd(note + 8);
                let desc = note + 12 + ((u64::from(namesz) + 3) & !3);
                if ty == 18 && namesz == 4 && rd::<u32>(note + 12) == 0x006e_6558 {
                    entry = u64::from(rd::<u32>(desc));
                }
                note = desc + ((u64::from(descsz) + 3) & !3);
            }
        }
    }
    if entry == 0 {
        hvprintln!("FATAL: vmlinux has no PVH entry note");
        crate::hw::qemu_exit(0x15);
    }
    assert!(
        initrd_size > 0 && INITRD + initrd_size <= FIRMWARE,
        "initramfs missing or too large"
    );
    // SAFETY: both ranges are inside their regions (checked above).
    unsafe {
        core::ptr::copy_nonoverlapping(
            INITRD_HPA as *const u8,
            host(INITRD) as *mut u8,
            initrd_size as usize,
        )
    };

    let mut cmdline = CmdLine {
        bytes: [0; 256],
        len: 0,
    };
    cmdline.push("console=ttyS0 loglevel=7 panic=-1 rdinit=/init noapic");
    if vcpus == 1 {
        cmdline.push(" nosmp acpi=off");
    }
    cmdline.push(" scenario=");
    cmdline.push(scenario.name());
    if scenario == Scenario::MceOff {
        cmdline.push(" mce=off");
    }
    wr_bytes(CMDLINE, &cmdline.bytes[..cmdline.len + 1]);
    hvprintln!(
        "guest command line: {}",
        core::str::from_utf8(&cmdline.bytes[..cmdline.len]).unwrap_or("?")
    );

    // hvm_start_info (version 1).
    let si = host(START_INFO);
    wr::<u32>(si, 0x336e_c578);
    wr::<u32>(si + 4, 1);
    wr::<u32>(si + 8, 0);
    wr::<u32>(si + 12, 1);
    wr::<u64>(si + 16, MODLIST);
    wr::<u64>(si + 24, CMDLINE);
    wr::<u64>(si + 32, if vcpus > 1 { RSDP } else { 0 });
    wr::<u64>(si + 40, MEMMAP);
    wr::<u32>(si + 48, 3);
    wr::<u64>(host(MODLIST), INITRD);
    wr::<u64>(host(MODLIST) + 8, initrd_size);
    let e820 = [
        (0u64, 0x9_f000u64, 1u32),
        (0x10_0000, FIRMWARE - 0x10_0000, 1),
        (FIRMWARE, RAM_SIZE - FIRMWARE, 2),
    ];
    for (i, (base, size, kind)) in e820.into_iter().enumerate() {
        let at = host(MEMMAP) + 24 * i as u64;
        wr::<u64>(at, base);
        wr::<u64>(at + 8, size);
        wr::<u32>(at + 16, kind);
        wr::<u32>(at + 20, 0);
    }
    if vcpus > 1 {
        write_acpi_tables(vcpus);
        write_ap_page_tables();
    }
    Entry::Pvh(entry)
}

struct CmdLine {
    bytes: [u8; 256],
    len: usize,
}

impl CmdLine {
    fn push(&mut self, s: &str) {
        for &b in s.as_bytes() {
            if self.len + 1 < self.bytes.len() {
                self.bytes[self.len] = b;
                self.len += 1;
            }
        }
    }
}

fn checksum(gpa: u64, len: u64) -> u8 {
    let mut sum = 0u8;
    for i in 0..len {
        sum = sum.wrapping_add(rd::<u8>(host(gpa + i)));
    }
    0u8.wrapping_sub(sum)
}

fn table_header(gpa: u64, signature: &[u8; 4], len: u32, revision: u8) {
    wr_bytes(gpa, signature);
    wr::<u32>(host(gpa + 4), len);
    wr::<u8>(host(gpa + 8), revision);
    wr_bytes(gpa + 10, b"VMCE  ");
    wr_bytes(gpa + 16, b"VMCESVM ");
    wr::<u32>(host(gpa + 24), 1);
    wr::<u32>(host(gpa + 28), 0x4543_4d56);
    wr::<u32>(host(gpa + 32), 1);
}

/// RSDP → XSDT → MADT: one local APIC per vCPU (APIC ID = vCPU index = physical CPU) and the
/// multiprocessor wakeup structure pointing at [`MAILBOX`]. No FADT/DSDT: Linux then runs
/// without the ACPI interpreter, which this guest does not need.
fn write_acpi_tables(vcpus: u32) {
    wr_bytes(RSDP, b"RSD PTR ");
    wr_bytes(RSDP + 9, b"VMCE  ");
    wr::<u8>(host(RSDP + 15), 2);
    wr::<u32>(host(RSDP + 16), 0);
    wr::<u32>(host(RSDP + 20), 36);
    wr::<u64>(host(RSDP + 24), XSDT);
    wr::<u8>(host(RSDP + 8), checksum(RSDP, 20));
    wr::<u8>(host(RSDP + 32), checksum(RSDP, 36));

    table_header(XSDT, b"XSDT", 36 + 8, 1);
    wr::<u64>(host(XSDT + 36), MADT);
    wr::<u8>(host(XSDT + 9), checksum(XSDT, 44));

    let len = 44 + 8 * vcpus + 16;
    table_header(MADT, b"APIC", len, 5);
    wr::<u32>(host(MADT + 36), 0xFEE0_0000);
    wr::<u32>(host(MADT + 40), 1); // PCAT_COMPAT: the 8259s are there
    let mut at = MADT + 44;
    for id in 0..vcpus {
        wr::<u8>(host(at), 0); // processor local APIC
        wr::<u8>(host(at + 1), 8);
        wr::<u8>(host(at + 2), id as u8);
        wr::<u8>(host(at + 3), id as u8);
        wr::<u32>(host(at + 4), 1); // enabled
        at += 8;
    }
    wr::<u8>(host(at), 0x10); // multiprocessor wakeup
    wr::<u8>(host(at + 1), 16);
    wr::<u16>(host(at + 2), 0);
    wr::<u32>(host(at + 4), 0);
    wr::<u64>(host(at + 8), MAILBOX);
    wr::<u8>(host(MADT + 9), checksum(MADT, u64::from(len)));
}

fn write_ap_page_tables() {
    let pdpt = AP_PML4 + 0x1000;
    let pd = AP_PML4 + 0x2000;
    wr::<u64>(host(AP_PML4), pdpt | 3);
    wr::<u64>(host(pdpt), pd | 3);
    for i in 0..512u64 {
        wr::<u64>(host(pd + 8 * i), (i << 21) | 0x83);
    }
}

/// Host side of the AP start: copy the trampoline, INIT-SIPI-SIPI the other CPUs.
pub fn start_application_processors() {
    let (start, end) = (
        &raw const boot::ap_trampoline_start,
        &raw const boot::ap_trampoline_end,
    );
    let len = end as usize - start as usize;
    // SAFETY: host page 8 is free conventional memory, identity-mapped.
    unsafe { core::ptr::copy_nonoverlapping(start, boot::TRAMPOLINE as *mut u8, len) };
    crate::hw::start_other_cpus((boot::TRAMPOLINE >> 12) as u8);
}

/// An AP's wait (in host mode) at the guest's wakeup mailbox: returns once the guest asks
/// for this APIC ID, after acknowledging (command back to 0) as the ACPI spec says.
pub fn wait_for_wakeup(apic_id: u32) -> Entry {
    let mailbox = host(MAILBOX);
    loop {
        // SAFETY: the mailbox is guest RAM the guest writes; volatile reads of its fields.
        let command = unsafe { core::ptr::read_volatile(mailbox as *const u16) };
        let target = unsafe { core::ptr::read_volatile((mailbox + 4) as *const u32) };
        if command == 1 && target == apic_id {
            let vector = unsafe { core::ptr::read_volatile((mailbox + 8) as *const u64) };
            core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
            // SAFETY: as above; the acknowledgement the guest waits for.
            unsafe { core::ptr::write_volatile(mailbox as *mut u16, 0) };
            return Entry::Wakeup(vector);
        }
        crate::hw::delay_cycles(20_000);
    }
}

/// The boot vCPU gets the start info in RBX (PVH); the APs nothing.
pub fn boot_rbx(id: u32) -> u64 {
    if id == 0 { START_INFO } else { 0 }
}

/// A fresh VMCB for `entry`.
pub fn init_vmcb(vmcb: &Pages<4096>, entry: Entry) {
    vmcb.write::<u32>(
        svm::INTERCEPT_MISC1,
        svm::MISC1_NMI | svm::MISC1_CPUID | svm::MISC1_IOIO | svm::MISC1_MSR | svm::MISC1_SHUTDOWN,
    );
    vmcb.write::<u32>(svm::INTERCEPT_MISC2, svm::MISC2_VMRUN);
    vmcb.write::<u64>(svm::IOPM_BASE, svm::IOPM.addr());
    vmcb.write::<u64>(svm::MSRPM_BASE, svm::MSRPM.addr());
    vmcb.write::<u32>(svm::GUEST_ASID, 1);
    vmcb.write::<u64>(svm::NP_ENABLE, 1);
    vmcb.write::<u64>(svm::N_CR3, nested_cr3());
    svm::set_segment(vmcb, svm::LDTR, 0, 0x82, 0xFFFF, 0);
    svm::set_segment(vmcb, svm::TR, 0, 0x8B, 0xFFFF, 0);
    svm::set_segment(vmcb, svm::GDTR, 0, 0, 0xFFFF, 0);
    svm::set_segment(vmcb, svm::IDTR, 0, 0, 0xFFFF, 0);
    vmcb.write::<u64>(svm::DR6, 0xFFFF_0FF0);
    vmcb.write::<u64>(svm::DR7, 0x400);
    vmcb.write::<u64>(svm::RFLAGS, 2);
    vmcb.write::<u64>(svm::G_PAT, 0x0007_0406_0007_0406);
    match entry {
        Entry::Pvh(rip) => {
            svm::set_segment(vmcb, svm::CS, 0x10, 0xC9B, 0xFFFF_FFFF, 0);
            for seg in [svm::ES, svm::SS, svm::DS, svm::FS, svm::GS] {
                svm::set_segment(vmcb, seg, 0x18, 0xC93, 0xFFFF_FFFF, 0);
            }
            vmcb.write::<u64>(svm::EFER, 1 << 12);
            vmcb.write::<u64>(svm::CR0, 0x11);
            vmcb.write::<u64>(svm::CR3, 0);
            vmcb.write::<u64>(svm::CR4, 0);
            vmcb.write::<u64>(svm::RIP, rip);
        }
        Entry::Wakeup(rip) => {
            svm::set_segment(vmcb, svm::CS, 0x08, 0xA9B, 0xFFFF_FFFF, 0);
            for seg in [svm::ES, svm::SS, svm::DS, svm::FS, svm::GS] {
                svm::set_segment(vmcb, seg, 0x10, 0xC93, 0xFFFF_FFFF, 0);
            }
            vmcb.write::<u64>(svm::EFER, (1 << 12) | (1 << 10) | (1 << 8));
            vmcb.write::<u64>(svm::CR0, 0x8000_0031);
            vmcb.write::<u64>(svm::CR3, AP_PML4);
            vmcb.write::<u64>(svm::CR4, 0x20);
            vmcb.write::<u64>(svm::RIP, rip);
        }
    }
}

/// CPUID as the guest sees it: the host's (QEMU `-cpu max`) answers, with the profile's
/// vendor and family, the MCE/MCA bits set, AMD's RAS bits as the profile needs them, and
/// the virtualization extensions hidden.
pub fn cpuid(profile: Profile, leaf: u32, subleaf: u32) -> [u32; 4] {
    let mut r = crate::hw::cpuid(leaf, subleaf);
    let intel = profile.vendor() == vmce::Vendor::Intel;
    match leaf {
        0 => {
            if intel {
                // "GenuineIntel"
                r[1] = 0x756E_6547;
                r[3] = 0x4965_6E69;
                r[2] = 0x6C65_746E;
            } else {
                // "AuthenticAMD"
                r[1] = 0x6874_7541;
                r[3] = 0x6974_6E65;
                r[2] = 0x444D_4163;
            }
        }
        1 => {
            // Intel: family 6 model 0x55 (Skylake-SP) stepping 4; AMD: family 0x17 model 1.
            r[0] = if intel { 0x0005_0654 } else { 0x0080_0F12 };
            r[2] &= !(1 << 5); // VMX
            r[3] |= (1 << 7) | (1 << 14); // MCE, MCA
        }
        0x8000_0001 => {
            r[2] &= !(1 << 2); // SVM
        }
        0x8000_0007 => {
            // EBX: McaOverflowRecov (0), SUCCOR (1), ScalableMca (3). AMD profile: the first
            // two, so Linux treats a recoverable error as recoverable; never SMCA (vmce has
            // the legacy bank layout). Intel: none.
            r[1] = if intel { 0 } else { 0b011 };
        }
        0x8000_000A => r = [0; 4],
        _ => {}
    }
    r
}
