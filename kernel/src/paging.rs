//! The kernel's memory map, and the guests' view of it.
//!
//! The boot code identity-maps the low 4 GiB with 2 MiB pages, supervisor-only. This module
//! opens two ranges to ring 3 and makes the local APIC uncached:
//!
//! | host physical          | what                                                         |
//! |------------------------|--------------------------------------------------------------|
//! | 0x0000_8000            | AP real-mode trampoline (copied there at SMP start)          |
//! | 0x0010_0000 ..         | kernel image (text, data, bss: per-CPU stacks, page tables)  |
//! | guest image (2 MiB)    | `.guest` sections: guest code, rodata, shared data; user     |
//! | 0x0400_0000..0x07F0_0000 | "guest RAM", user: guest-physical 0.. (the guest stacks)  |
//! | 0xFEE0_0000            | local APIC, uncached                                         |
//!
//! A guest frame that holds an uncorrectable error can be unmapped ([`unmap_guest_frame`]):
//! its 2 MiB page is split into 4 KiB pages and the frame's entry made not-present, so a guest
//! access faults (#PF) and the hypervisor can raise a machine check instead.
//!
//! Guest-physical addresses: guest frame `g` is host frame `g + GUEST_RAM_HOST_FRAME` for
//! `g < GUEST_RAM_FRAMES`. Guests execute on the hypervisor's identity map (their "virtual"
//! addresses are host addresses); the guest-physical view exists so that a host machine-check
//! address can be translated into the address the guest would see.

#![cfg(target_os = "none")]

use crate::cpu;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

unsafe extern "C" {
    /// The four boot page directories (2048 entries, 2 MiB each), built by `boot`.
    static mut boot_page_directories: [u64; crate::boot::BOOT_LARGE_PAGES];
    static __guest_image_start: u8;
    static __guest_image_end: u8;
}

const LARGE_PAGE: u64 = 2 * 1024 * 1024;
const PAGE_SHIFT: u32 = 12;
const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
const ENTRY_PRESENT: u64 = 1 << 0;
const ENTRY_USER: u64 = 1 << 2;
const ENTRY_LARGE: u64 = 1 << 7;
/// Present, writable, user, write-through, cache-disable: the bits a large page and the
/// 4 KiB pages it is split into share.
const ENTRY_COMMON_FLAGS: u64 = 0x1F;
const LARGE_PAGE_ADDRESS_MASK: u64 = 0x000F_FFFF_FFE0_0000;
const TABLE_ADDRESS_MASK: u64 = 0x000F_FFFF_FFFF_F000;
/// 2 MiB pages that can be split into 4 KiB pages.
const SPLIT_TABLES: usize = 4;
const ENTRY_WRITE_THROUGH: u64 = 1 << 3;
const ENTRY_CACHE_DISABLE: u64 = 1 << 4;

/// First host frame of the guests' RAM (host physical 64 MiB).
pub const GUEST_RAM_HOST_FRAME: u64 = 0x4000;
/// Number of 4 KiB frames of guest RAM (63 MiB: the last MiB of the 128 MiB machine holds
/// the firmware's ACPI tables).
pub const GUEST_RAM_FRAMES: u64 = 0x3F00;
/// Guest-physical base of the per-vCPU guest stacks.
const GUEST_STACKS_GUEST_PHYSICAL: u64 = 0x0020_0000;
/// Size of each guest stack.
const GUEST_STACK_SIZE: u64 = 64 * 1024;

fn guest_image() -> (u64, u64) {
    // Only the addresses of the linker-script symbols are taken (no read: safe).
    (
        &raw const __guest_image_start as u64,
        &raw const __guest_image_end as u64,
    )
}

fn guest_ram() -> (u64, u64) {
    let start = GUEST_RAM_HOST_FRAME << PAGE_SHIFT;
    (start, start + (GUEST_RAM_FRAMES << PAGE_SHIFT))
}

fn set_large_page_flags(start: u64, end: u64, flags: u64) {
    let mut address = start & !(LARGE_PAGE - 1);
    while address < end {
        let index = (address / LARGE_PAGE) as usize;
        // SAFETY: `index` < 2048 for every address below 4 GiB (all ranges here are), and
        // only the BSP edits the tables, before any other CPU or guest runs.
        unsafe { boot_page_directories[index] |= flags };
        address += LARGE_PAGE;
    }
}

/// Opens the guest image and guest RAM to ring 3 and maps the local APIC uncached.
///
/// Called once by the bootstrap processor before the APs start.
pub fn init() {
    let (image_start, image_end) = guest_image();
    set_large_page_flags(image_start, image_end, ENTRY_USER);
    let (ram_start, ram_end) = guest_ram();
    set_large_page_flags(ram_start, ram_end, ENTRY_USER);
    set_large_page_flags(
        0xFEC0_0000,
        0x1_0000_0000,
        ENTRY_CACHE_DISABLE | ENTRY_WRITE_THROUGH,
    );
    cpu::flush_tlb();
}

/// Whether `[address, address + len)` lies entirely in guest-accessible memory.
pub fn is_guest_range(address: u64, len: u64) -> bool {
    let Some(end) = address.checked_add(len) else {
        return false;
    };
    [guest_image(), guest_ram()]
        .iter()
        .any(|&(start, stop)| address >= start && end <= stop)
}

/// The guest frame backed by host frame `host_frame`, if it is guest RAM.
pub fn host_to_guest_frame(host_frame: u64) -> Option<u64> {
    let guest_frame = host_frame.checked_sub(GUEST_RAM_HOST_FRAME)?;
    (guest_frame < GUEST_RAM_FRAMES).then_some(guest_frame)
}

/// The host address backing guest-physical address `guest_physical`, if it is guest RAM.
pub fn guest_to_host_address(guest_physical: u64) -> Option<u64> {
    let guest_frame = guest_physical >> PAGE_SHIFT;
    (guest_frame < GUEST_RAM_FRAMES).then(|| guest_physical + (GUEST_RAM_HOST_FRAME << PAGE_SHIFT))
}

/// Initial stack pointer (a host address) of vCPU `vcpu`'s guest.
pub fn guest_stack_top(vcpu: u32) -> u64 {
    let top = GUEST_STACKS_GUEST_PHYSICAL + (u64::from(vcpu) + 1) * GUEST_STACK_SIZE;
    guest_to_host_address(top - 16).map_or(0, |address| address + 16)
}

/// One 4 KiB page table (512 entries of 4 KiB pages).
#[repr(C, align(4096))]
struct PageTable([u64; 512]);

struct SplitTablePool(UnsafeCell<[PageTable; SPLIT_TABLES]>);

// SAFETY: the pool is only touched by `unmap_guest_frame`, whose contract (the bootstrap
// processor, before any other CPU runs) rules out concurrent access.
unsafe impl Sync for SplitTablePool {}

static SPLIT_TABLE_POOL: SplitTablePool = SplitTablePool(UnsafeCell::new(
    [const { PageTable([0; 512]) }; SPLIT_TABLES],
));
static SPLIT_TABLES_USED: AtomicUsize = AtomicUsize::new(0);

/// Why a guest frame could not be unmapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnmapError {
    /// The frame is not guest RAM.
    NotGuestRam,
    /// Every split page table is in use.
    NoPageTableLeft,
}

/// Makes guest frame `guest_frame` not-present, so that any access to it faults; returns
/// the host address of its first byte.
///
/// # Safety
/// Called by the bootstrap processor before the application processors start (only this
/// CPU's TLB is flushed, and nothing else may walk or edit the tables meanwhile), and with no
/// reference into the frame alive.
pub unsafe fn unmap_guest_frame(guest_frame: u64) -> Result<u64, UnmapError> {
    if guest_frame >= GUEST_RAM_FRAMES {
        return Err(UnmapError::NotGuestRam);
    }
    let host = guest_to_host_address(guest_frame << PAGE_SHIFT).ok_or(UnmapError::NotGuestRam)?;
    let index = (host / LARGE_PAGE) as usize;
    // SAFETY: guest RAM is below 4 GiB, so `index` < 2048; per the contract no other CPU
    // uses the tables.
    let directory_entry = unsafe { boot_page_directories[index] };
    let table = if directory_entry & ENTRY_LARGE != 0 {
        let used = SPLIT_TABLES_USED.fetch_add(1, Ordering::AcqRel);
        if used >= SPLIT_TABLES {
            return Err(UnmapError::NoPageTableLeft);
        }
        // SAFETY: slot `used` was just claimed, so nothing else refers to it.
        let table = unsafe { &mut (*SPLIT_TABLE_POOL.0.get())[used].0 };
        let base = directory_entry & LARGE_PAGE_ADDRESS_MASK;
        let flags = directory_entry & ENTRY_COMMON_FLAGS;
        for (entry, page) in table.iter_mut().zip(0u64..) {
            *entry = (base + page * PAGE_SIZE) | flags;
        }
        // The kernel is identity-mapped: the table's address is its physical address.
        let table_address = table.as_ptr() as u64;
        // SAFETY: as above; the new entry maps the same memory with the same rights, now
        // through `table`.
        unsafe { boot_page_directories[index] = table_address | flags };
        table
    } else {
        // SAFETY: a directory entry without the large bit was written above and points at a
        // table of the pool, which only this function touches.
        unsafe { &mut *((directory_entry & TABLE_ADDRESS_MASK) as *mut [u64; 512]) }
    };
    let slot = ((host % LARGE_PAGE) / PAGE_SIZE) as usize;
    table[slot] &= !ENTRY_PRESENT;
    cpu::flush_tlb();
    Ok(host)
}
