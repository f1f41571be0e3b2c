//! The host's machine-check capabilities and the hardware MSR boundary.
//!
//! # Background
//! Floor: host, on registers only. What vmce knows of the host CPU: its vendor and
//! `IA32_MCG_CAP` ([`HostCapabilities`]), and the one trait through which it reads and
//! releases the host's banks ([`MsrAccess`]).

use crate::registers::msr::ARCH_BANKS;
use crate::registers::{McgCap, Vendor};

/// Access to the host CPU's model-specific registers: the hardware boundary of vmce.
///
/// # Invariants
/// - vmce only names MSRs that the host's own `IA32_MCG_CAP` says exist: `IA32_MCG_STATUS`,
///   `IA32_MCG_CAP`, and the four bank registers of banks below the host's count (and
///   below 32). An implementation may therefore assume an access never faults.
/// - Reads have no side effects vmce relies on; writes happen only in [`super::release`].
/// - Called on the CPU whose banks are meant (a #MC handler runs on the CPU that took it).
pub trait MsrAccess {
    /// Reads MSR `index`.
    fn read(&mut self, index: u32) -> u64;
    /// Writes `value` to MSR `index`.
    fn write(&mut self, index: u32, value: u64);
}

/// What vmce needs to know about the host: its vendor and its `IA32_MCG_CAP`.
///
/// Read once at boot (`crate::arch::host_capabilities` on hardware) and passed around; the
/// guest never sees any of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HostCapabilities {
    vendor: Vendor,
    mcg_cap: McgCap,
}

impl HostCapabilities {
    /// Host capabilities from a vendor and a raw `IA32_MCG_CAP`.
    pub const fn new(vendor: Vendor, mcg_cap: McgCap) -> Self {
        Self { vendor, mcg_cap }
    }

    /// The host CPU vendor.
    pub const fn vendor(&self) -> Vendor {
        self.vendor
    }

    /// The host's `IA32_MCG_CAP`.
    pub const fn mcg_cap(&self) -> McgCap {
        self.mcg_cap
    }

    /// The banks vmce reads: the host's count, capped at the 32 of the architectural range.
    pub const fn readable_banks(&self) -> u8 {
        let count = self.mcg_cap.count();
        if count > ARCH_BANKS {
            ARCH_BANKS
        } else {
            count
        }
    }
}
