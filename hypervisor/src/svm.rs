//! The VMCB (AMD APM vol. 2, appendix B), the MSR and I/O permission maps, and nested paging.

#![cfg(target_os = "none")]

use core::cell::UnsafeCell;

/// A page-aligned, zero-initialised block of host memory shared between CPUs.
#[repr(C, align(4096))]
pub struct Pages<const N: usize>(UnsafeCell<[u8; N]>);

// SAFETY: every access goes through volatile reads/writes of plain integers; who writes
// what is the hypervisor's protocol (one writer per VMCB: its own CPU).
unsafe impl<const N: usize> Sync for Pages<N> {}

impl<const N: usize> Pages<N> {
    pub const fn new() -> Self {
        Self(UnsafeCell::new([0; N]))
    }
    pub fn addr(&self) -> u64 {
        self.0.get() as u64
    }
    pub fn read<T: Copy>(&self, offset: usize) -> T {
        assert!(offset + size_of::<T>() <= N);
        // SAFETY: in bounds (checked above); any bit pattern is a valid integer.
        unsafe { core::ptr::read_volatile(self.0.get().cast::<u8>().add(offset).cast::<T>()) }
    }
    pub fn write<T: Copy>(&self, offset: usize, value: T) {
        assert!(offset + size_of::<T>() <= N);
        // SAFETY: in bounds (checked above).
        unsafe {
            core::ptr::write_volatile(self.0.get().cast::<u8>().add(offset).cast::<T>(), value)
        }
    }
}

// VMCB control area.
pub const INTERCEPT_MISC1: usize = 0x0C;
pub const INTERCEPT_MISC2: usize = 0x10;
pub const IOPM_BASE: usize = 0x40;
pub const MSRPM_BASE: usize = 0x48;
pub const GUEST_ASID: usize = 0x58;
pub const TLB_CONTROL: usize = 0x5C;
pub const EXIT_CODE: usize = 0x70;
pub const EXIT_INFO1: usize = 0x78;
pub const EXIT_INFO2: usize = 0x80;
pub const EXIT_INT_INFO: usize = 0x88;
pub const NP_ENABLE: usize = 0x90;
pub const EVENT_INJ: usize = 0xA8;
pub const N_CR3: usize = 0xB0;
// State save area.
pub const ES: usize = 0x400;
pub const CS: usize = 0x410;
pub const SS: usize = 0x420;
pub const DS: usize = 0x430;
pub const FS: usize = 0x440;
pub const GS: usize = 0x450;
pub const GDTR: usize = 0x460;
pub const LDTR: usize = 0x470;
pub const IDTR: usize = 0x480;
pub const TR: usize = 0x490;
pub const CPL: usize = 0x4CB;
pub const EFER: usize = 0x4D0;
pub const CR4: usize = 0x548;
pub const CR3: usize = 0x550;
pub const CR0: usize = 0x558;
pub const DR7: usize = 0x560;
pub const DR6: usize = 0x568;
pub const RFLAGS: usize = 0x570;
pub const RIP: usize = 0x578;
pub const RSP: usize = 0x5D8;
pub const RAX: usize = 0x5F8;
pub const G_PAT: usize = 0x668;

// Intercept bits.
pub const MISC1_NMI: u32 = 1 << 1;
pub const MISC1_CPUID: u32 = 1 << 18;
pub const MISC1_IOIO: u32 = 1 << 27;
pub const MISC1_MSR: u32 = 1 << 28;
pub const MISC1_SHUTDOWN: u32 = 1 << 31;
pub const MISC2_VMRUN: u32 = 1 << 0;

// Exit codes.
pub const EXIT_NMI: u64 = 0x61;
pub const EXIT_CPUID: u64 = 0x72;
pub const EXIT_IOIO: u64 = 0x7B;
pub const EXIT_MSR: u64 = 0x7C;
pub const EXIT_SHUTDOWN: u64 = 0x7F;
pub const EXIT_VMRUN: u64 = 0x80;
pub const EXIT_NPF: u64 = 0x400;

/// EVENTINJ / EXITINTINFO: valid bit, and the "exception" type.
pub const EVENT_VALID: u64 = 1 << 31;
pub const EVENT_EXCEPTION: u64 = 3 << 8;
pub const EVENT_NMI: u64 = 2 << 8;
pub const EVENT_ERROR_CODE: u64 = 1 << 11;

/// Writes a segment register (selector, attributes, limit, base) of the state save area.
pub fn set_segment(
    vmcb: &Pages<4096>,
    offset: usize,
    selector: u16,
    attrib: u16,
    limit: u32,
    base: u64,
) {
    vmcb.write(offset, selector);
    vmcb.write(offset + 2, attrib);
    vmcb.write(offset + 4, limit);
    vmcb.write(offset + 8, base);
}

/// The MSR permission map (8 KiB): two bits (read, write) per MSR of three ranges.
pub static MSRPM: Pages<8192> = Pages::new();
/// The I/O permission map (12 KiB): one bit per port.
pub static IOPM: Pages<12288> = Pages::new();

/// Intercepts reads and writes of `msr` (only the first range, 0..0x2000, is needed here).
pub fn intercept_msr(msr: u32) {
    let (base, index) = match msr {
        0..0x2000 => (0usize, msr as usize),
        0xC000_0000..0xC000_2000 => (0x800, (msr - 0xC000_0000) as usize),
        0xC001_0000..0xC001_2000 => (0x1000, (msr - 0xC001_0000) as usize),
        _ => return,
    };
    let bit = index * 2;
    let byte = base + bit / 8;
    let old: u8 = MSRPM.read(byte);
    MSRPM.write(byte, old | (3 << (bit % 8)));
}

pub fn intercept_port(port: u16) {
    let byte = usize::from(port / 8);
    let old: u8 = IOPM.read(byte);
    IOPM.write(byte, old | (1 << (port % 8)));
}
