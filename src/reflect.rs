//! Turning one host error into the error a guest will see.
//!
//! # Background
//! The hypervisor's #MC handler collects the host banks ([`crate::host::collect`]), picks the
//! bank that matters ([`HostMce::most_severe`]), finds the domain that owns the address (its
//! own page-ownership data), and asks vmce for a [`GuestMce`]: classified per
//! [`crate::classify`], with the address translated into the owner's guest-physical space.
//! The `MSCOD` is removed when the guest's bank is written ([`GuestMce::guest_status`]).
//!
//! Whether the address is fine enough to translate (an Intel `MCi_MISC` address LSB of at
//! most 12) is part of the classification, not of the translation, so a bank is classified
//! once: [`HostMce::most_severe`] returns each verdict, and [`GuestMce::from_classified`]
//! translates a bank it found reflectable without classifying it again
//! ([`GuestMce::from_host`] does both, for a single bank; see [`crate::classify`], "Address
//! granularity").
//!
//! Floor: reflection, on classification, host, address and registers.

use crate::address::{GuestMemory, GuestPhysAddr, HostPhysAddr, TranslateError, translate};
use crate::classify::{Disposition, FatalReason, HostOnlyReason, ReflectClass, classify};
use crate::host::{HostBank, HostCapabilities, HostMce};
use crate::registers::Vendor;
use crate::registers::{McgStatus, MciMisc, MciStatus};
use core::fmt;

/// A host error, classified as reflectable and translated for one domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GuestMce {
    /// What kind of error it is.
    pub class: ReflectClass,
    /// The host's `MCG_STATUS` for the event.
    pub host_mcg_status: McgStatus,
    /// The host's `MCi_STATUS`, with its `MSCOD` (see [`GuestMce::guest_status`]).
    pub host_status: MciStatus,
    /// The host-physical address of the error; 0 for an error vmce synthesizes for an access
    /// to a frame that broke before a migration ([`GuestMce::broken_frame_access`]).
    pub host_addr: HostPhysAddr,
    /// The same byte in the owning guest's physical address space.
    pub guest_addr: GuestPhysAddr,
    /// The host's `MCi_MISC`, passed through. On Intel its address LSB is at most 12
    /// (finer than or equal to a page): a coarser error is never reflected.
    pub misc: MciMisc,
}

impl GuestMce {
    /// Classifies `bank` of a host event and translates its address for the domain whose
    /// memory `memory` describes: the page frame is rewritten, the page offset and `MCi_MISC`
    /// are kept.
    ///
    /// # Errors
    /// [`NotReflected`] saying why the guest must not see it: the class per [`classify`]
    /// (which also refuses an Intel address coarser than a 4 KiB page:
    /// [`HostOnlyReason::AddressCoarserThanPage`] for an action-optional error,
    /// [`FatalReason::ActionRequiredAddressCoarserThanPage`] for an action-required one), or
    /// the translation.
    pub fn from_host(
        host: &HostCapabilities,
        mcg_status: McgStatus,
        bank: &HostBank,
        memory: &(impl GuestMemory + ?Sized),
    ) -> Result<GuestMce, NotReflected> {
        match classify(host, mcg_status, bank.status, bank.misc) {
            Disposition::Reflect(class) => Self::from_classified(class, mcg_status, bank, memory)
                .map_err(NotReflected::Translate),
            Disposition::HostOnly(reason) => Err(NotReflected::HostOnly(reason)),
            Disposition::Fatal(reason) => Err(NotReflected::Fatal(reason)),
        }
    }

    /// [`GuestMce::from_host`] for a bank already classified as `class`, the verdict
    /// [`HostMce::most_severe`] returned with it: translates `bank`'s address for the domain
    /// whose memory `memory` describes, without classifying the bank again.
    ///
    /// # Errors
    /// [`TranslateError`] when the domain does not own the address.
    pub fn from_classified(
        class: ReflectClass,
        mcg_status: McgStatus,
        bank: &HostBank,
        memory: &(impl GuestMemory + ?Sized),
    ) -> Result<GuestMce, TranslateError> {
        let host_addr = HostPhysAddr(bank.addr);
        let guest_addr = translate(host_addr, memory)?;
        Ok(GuestMce {
            class,
            host_mcg_status: mcg_status,
            host_status: bank.status,
            host_addr,
            guest_addr,
            misc: bank.misc,
        })
    }

    /// The error to raise when a vCPU accesses `guest_addr` in a frame that broke on another
    /// host (see [`crate::broken`]): action-required, at that address, as the vendor reports
    /// a consumed poisoned load or fetch. There is no host bank behind it: `host_addr` is 0
    /// and the status carries no `MSCOD`.
    ///
    /// | vendor | `MCi_STATUS` | `MCG_STATUS` |
    /// |---|---|---|
    /// | Intel, load | `0xBD80_0000_0000_0134`: VAL UC EN MISCV ADDRV S AR, MCACOD data read | MCIP RIPV EIPV |
    /// | Intel, fetch | `0xBD80_0000_0000_0150`: the same, MCACOD instruction fetch | MCIP RIPV EIPV |
    /// | AMD | `0xBC00_0800_0000_0134` / `_0150`: VAL UC EN MISCV ADDRV POISON | MCIP RIPV EIPV |
    ///
    /// `MCi_MISC` says "physical address, 4 KiB granule" (`0x8C`): the whole frame is gone.
    pub const fn broken_frame_access(
        vendor: Vendor,
        access: Access,
        guest_addr: GuestPhysAddr,
    ) -> GuestMce {
        let mcacod = match access {
            Access::DataLoad => 0x0134,
            Access::InstructionFetch => 0x0150,
        };
        let (class, flags) = match (vendor, access) {
            (Vendor::Intel, Access::DataLoad) => (ReflectClass::SrarDataLoad, INTEL_AR),
            (Vendor::Intel, Access::InstructionFetch) => {
                (ReflectClass::SrarInstructionFetch, INTEL_AR)
            }
            (Vendor::Amd, _) => (ReflectClass::AmdUncorrected, AMD_POISON),
        };
        GuestMce {
            class,
            host_mcg_status: McgStatus::MCIP
                .union(McgStatus::RIPV)
                .union(McgStatus::EIPV),
            host_status: MciStatus::from_bits_retain(flags | mcacod),
            host_addr: HostPhysAddr(0),
            guest_addr,
            misc: MciMisc(PHYSICAL_4K_MISC),
        }
    }

    /// The `MCi_STATUS` the guest sees: the host's with `MSCOD` cleared; every other bit
    /// passes through.
    pub const fn guest_status(&self) -> MciStatus {
        self.host_status.without_mscod()
    }
}

/// VAL UC EN MISCV ADDRV S AR.
const INTEL_AR: u64 = 0xBD80_0000_0000_0000;
/// VAL UC EN MISCV ADDRV POISON.
const AMD_POISON: u64 = 0xBC00_0800_0000_0000;
/// `MCi_MISC`: address mode physical (bits 8:6 = 2), least significant valid bit 12.
const PHYSICAL_4K_MISC: u64 = (2 << 6) | 12;

/// How a vCPU touched a broken frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// A data load (or any data access).
    DataLoad,
    /// An instruction fetch.
    InstructionFetch,
}

/// Why a host error is not given to a guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NotReflected {
    /// The host logs it and carries on.
    HostOnly(HostOnlyReason),
    /// The host must treat it as fatal for the affected context.
    Fatal(FatalReason),
    /// The domain does not own the address (or the translation was impossible).
    Translate(TranslateError),
}

impl fmt::Display for NotReflected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotReflected::HostOnly(reason) => write!(f, "not reflected, host only: {reason}"),
            NotReflected::Fatal(reason) => write!(f, "not reflected, fatal: {reason}"),
            NotReflected::Translate(error) => write!(f, "not reflected: {error}"),
        }
    }
}

impl core::error::Error for NotReflected {}

impl HostMce {
    /// The most severe valid bank of the event and its verdict (fatal before action
    /// required before action optional before host-only; the lowest bank wins a tie), or
    /// `None` when no bank is valid. A [`Disposition::Reflect`] verdict goes on to
    /// [`GuestMce::from_classified`].
    pub fn most_severe(&self, host: &HostCapabilities) -> Option<(HostBank, Disposition)> {
        let mut worst: Option<(HostBank, Disposition)> = None;
        for bank in self.banks() {
            let disposition = classify(host, self.mcg_status, bank.status, bank.misc);
            let worse = match worst {
                Some((_, current)) => disposition.severity() > current.severity(),
                None => true,
            };
            if worse {
                worst = Some((*bank, disposition));
            }
        }
        worst
    }
}
