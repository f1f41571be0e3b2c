//! Turning one host error into the error a guest will see.
//!
//! # Background
//! The hypervisor's #MC handler collects the host banks ([`crate::host::collect`]), picks the
//! bank that matters ([`HostMce::most_severe`]), finds the domain that owns the address (its
//! own page-ownership data), and asks vmce for a [`GuestMce`]: classified per
//! [`crate::classify`], with the address translated into the owner's guest-physical space.
//! The `MSCOD` is removed when the guest's bank is written ([`GuestMce::guest_status`]).

use crate::address::{GuestMemory, GuestPhysAddr, HostPhysAddr, TranslateError, translate};
use crate::classify::{Disposition, FatalReason, HostOnlyReason, ReflectClass, classify};
use crate::host::{HostBank, HostCapabilities, HostMce};
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
    /// The host-physical address of the error.
    pub host_addr: HostPhysAddr,
    /// The same byte in the owning guest's physical address space.
    pub guest_addr: GuestPhysAddr,
    /// The host's `MCi_MISC`, passed through.
    pub misc: MciMisc,
}

impl GuestMce {
    /// Classifies `bank` of a host event and translates its address for the domain whose
    /// memory `memory` describes.
    ///
    /// # Errors
    /// [`NotReflected`] saying why the guest must not see it.
    pub fn from_host(
        host: &HostCapabilities,
        mcg_status: McgStatus,
        bank: &HostBank,
        memory: &(impl GuestMemory + ?Sized),
    ) -> Result<GuestMce, NotReflected> {
        let class = match classify(host, mcg_status, bank.status, bank.misc) {
            Disposition::Reflect(class) => class,
            Disposition::HostOnly(reason) => return Err(NotReflected::HostOnly(reason)),
            Disposition::Fatal(reason) => return Err(NotReflected::Fatal(reason)),
        };
        let host_addr = HostPhysAddr(bank.addr);
        let guest_addr = translate(host_addr, memory).map_err(NotReflected::Translate)?;
        Ok(GuestMce {
            class,
            host_mcg_status: mcg_status,
            host_status: bank.status,
            host_addr,
            guest_addr,
            misc: bank.misc,
        })
    }

    /// The `MCi_STATUS` the guest sees: the host's with `MSCOD` cleared; every other bit
    /// passes through.
    pub const fn guest_status(&self) -> MciStatus {
        self.host_status.without_mscod()
    }
}

/// Why a host error is not given to a guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// `None` when no bank is valid.
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
