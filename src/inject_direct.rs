//! Building a guest machine check directly, for test tooling and replay.
//!
//! # Background
//! Xen's `xen-mceinj` and KVM's `KVM_X86_SET_MCE` let a tool write a machine check straight
//! into a guest: a bank, its `MCi_STATUS`, `MCi_ADDR` and `MCi_MISC`, and `MCG_STATUS`. They
//! check little, so a tool can hand a guest an error no real reflection would ever produce,
//! and a test built on it proves nothing about the guest's handling of real ones.
//!
//! [`GuestMce::direct`] takes the same five values ([`DirectMce`]) and returns the
//! [`GuestMce`] that [`crate::Domain::inject`] delivers, only when vmce itself could have
//! delivered that error to a guest of the profile. Everything else is a [`DirectError`] and
//! nothing is built:
//!
//! | refused | why vmce never delivers it |
//! |---|---|
//! | a bank other than 1 | errors are logged in bank 1 ([`crate::profile::ERROR_BANK`]); bank 0 is reserved |
//! | an `MSCOD` (`MCi_STATUS` bits 31:16) | vmce clears it on every delivery |
//! | a guest address beyond 52 bits | no guest can hold it ([`crate::InjectError::AddressOutOfRange`]) |
//! | `MCG_STATUS` bits other than `RIPV`, `EIPV`, `MCIP`; `LMCE_S` without the LMCE profile | not the profile's |
//! | `MCi_STATUS` bits the profile's banks do not have | Intel: the corrected-error count and threshold status (bits 54:38, corrected errors are never reflected); AMD: `S`, `AR`, `DEFERRED` and bits 56:32 other than `POISON` |
//! | a status the profile's own classification ([`crate::classify`], with the guest's `MCG_CAP`) does not reflect | not valid, corrected, UCNA, `PCC`, overflow of an action-required error, no restart IP, an unknown or non-memory `MCACOD`, no usable address |
//! | on AMD, an `MCACOD` outside the memory hierarchy | AMD's classification does not read the `MCACOD`; vmce reflects memory errors only |
//!
//! The error built has no host behind it: `host_addr` is 0, as for
//! [`GuestMce::broken_frame_access`] (whose errors this accepts).
//!
//! Floor: direct injection, on reflection, classification, host, address, profile and
//! registers; nothing in the crate imports it.

use crate::address::{GuestPhysAddr, HostPhysAddr, MAX_PHYS_ADDR_BITS};
use crate::classify::{Disposition, FatalReason, HostOnlyReason, classify};
use crate::host::HostCapabilities;
use crate::profile::{ERROR_BANK, Profile};
use crate::reflect::GuestMce;
use crate::registers::{McacodClass, McgStatus, MciMisc, MciStatus, Vendor};
use core::fmt;

/// A guest machine check as a test tool states it: the values `xen-mceinj` or
/// `KVM_X86_SET_MCE` take. Built by the caller; [`GuestMce::direct`] checks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DirectMce {
    /// The guest bank the error is logged in; vmce logs errors in bank 1 only.
    pub bank: u8,
    /// `MCG_STATUS` for the vCPU that gets the data (`RIPV`, `EIPV`, `MCIP`, and `LMCE_S`
    /// under the LMCE profile). Delivery sets `MCIP` itself.
    pub mcg_status: McgStatus,
    /// `MCi_STATUS`, with no `MSCOD`.
    pub status: MciStatus,
    /// `MCi_ADDR`: the guest-physical address of the error.
    pub addr: GuestPhysAddr,
    /// `MCi_MISC`.
    pub misc: MciMisc,
}

/// Why [`GuestMce::direct`] refused a [`DirectMce`]: vmce would never deliver it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DirectError {
    /// Not bank 1: bank 0 is reserved and the profile has no other bank that logs errors.
    Bank(u8),
    /// `MCi_STATUS` carries an `MSCOD` (the value); vmce clears it on every delivery.
    MscodSet(u16),
    /// `MCG_STATUS` bits (the value) the profile's guests never see.
    McgStatusBits(u64),
    /// `MCi_STATUS` bits (the value) the profile's banks do not have.
    StatusBits(u64),
    /// The guest address is beyond the 52-bit physical address space.
    AddressOutOfRange(GuestPhysAddr),
    /// The profile's classification keeps this status with the host.
    HostOnly(HostOnlyReason),
    /// The profile's classification finds this status fatal.
    Fatal(FatalReason),
    /// An AMD `MCACOD` (the value) outside the memory hierarchy.
    NotMemoryMcacod(u16),
}

impl fmt::Display for DirectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirectError::Bank(bank) => write!(
                f,
                "bank {bank}: vmce logs errors in bank {ERROR_BANK} only (bank 0 is reserved)"
            ),
            DirectError::MscodSet(mscod) => write!(
                f,
                "MSCOD {mscod:#06x} set: vmce clears the model-specific code on every delivery"
            ),
            DirectError::McgStatusBits(bits) => {
                write!(f, "MCG_STATUS bits {bits:#x} are not the profile's")
            }
            DirectError::StatusBits(bits) => {
                write!(f, "MCi_STATUS bits {bits:#x} are not the profile's")
            }
            DirectError::AddressOutOfRange(addr) => write!(
                f,
                "{addr} is beyond the {MAX_PHYS_ADDR_BITS}-bit physical address space"
            ),
            DirectError::HostOnly(reason) => write!(f, "never reflected, host only: {reason}"),
            DirectError::Fatal(reason) => write!(f, "never reflected, fatal: {reason}"),
            DirectError::NotMemoryMcacod(mcacod) => write!(
                f,
                "MCACOD {mcacod:#06x} is not a memory-hierarchy error: vmce reflects memory errors only"
            ),
        }
    }
}

impl core::error::Error for DirectError {}

/// Intel: the corrected-error count (bits 52:38) and threshold status (bits 54:53).
const INTEL_CORRECTED_ONLY: u64 = 0x007F_FFC0_0000_0000;
/// AMD: bits 56:32, of which only `POISON` is one vmce delivers (`S` and `AR` are Intel's).
const AMD_UNDELIVERED: u64 = 0x01FF_FFFF_0000_0000 & !MciStatus::POISON.bits();

impl GuestMce {
    /// The error `request` describes, checked against what vmce delivers to a guest of
    /// `profile` (see [`crate::inject_direct`]); inject it with [`crate::Domain::inject`].
    /// The class is the one the profile's classification gives the status.
    ///
    /// # Errors
    /// [`DirectError`] naming the first thing vmce would never deliver, in the order of the
    /// module's table.
    pub fn direct(profile: Profile, request: &DirectMce) -> Result<GuestMce, DirectError> {
        if request.bank != ERROR_BANK {
            return Err(DirectError::Bank(request.bank));
        }
        let mscod = request.status.mscod().0;
        if mscod != 0 {
            return Err(DirectError::MscodSet(mscod));
        }
        if request.addr.0 >> MAX_PHYS_ADDR_BITS != 0 {
            return Err(DirectError::AddressOutOfRange(request.addr));
        }
        let mut mcg_allowed = McgStatus::RIPV | McgStatus::EIPV | McgStatus::MCIP;
        if profile.has_lmce() {
            mcg_allowed |= McgStatus::LMCE_S;
        }
        let mcg_extra = request.mcg_status.bits() & !mcg_allowed.bits();
        if mcg_extra != 0 {
            return Err(DirectError::McgStatusBits(mcg_extra));
        }
        let status_extra = request.status.bits()
            & match profile.vendor() {
                Vendor::Intel => INTEL_CORRECTED_ONLY,
                Vendor::Amd => AMD_UNDELIVERED,
            };
        if status_extra != 0 {
            return Err(DirectError::StatusBits(status_extra));
        }
        let guest_cpu = HostCapabilities::new(profile.vendor(), profile.mcg_cap());
        let class = match classify(&guest_cpu, request.mcg_status, request.status, request.misc) {
            Disposition::Reflect(class) => class,
            Disposition::HostOnly(reason) => return Err(DirectError::HostOnly(reason)),
            Disposition::Fatal(reason) => return Err(DirectError::Fatal(reason)),
        };
        let mcacod = request.status.mcacod();
        if profile.vendor() == Vendor::Amd && !is_memory_hierarchy(mcacod.class()) {
            return Err(DirectError::NotMemoryMcacod(mcacod.0));
        }
        Ok(GuestMce {
            class,
            host_mcg_status: request.mcg_status,
            host_status: request.status,
            host_addr: HostPhysAddr(0),
            guest_addr: request.addr,
            misc: request.misc,
        })
    }
}

/// The `MCACOD` categories of a memory error: the cache hierarchy and the memory
/// controller.
const fn is_memory_hierarchy(class: McacodClass) -> bool {
    matches!(
        class,
        McacodClass::CacheHierarchy { .. }
            | McacodClass::GenericCacheHierarchy { .. }
            | McacodClass::MemoryController { .. }
    )
}
