//! Plain per-vCPU machine-check state, and the one check a saved state passes before any
//! vCPU holds it.
//!
//! # Background
//! Floor: state, on registers and profile (nothing above: no emulation, no atomics, no
//! records). Everything a migration carries for one vCPU is plain `Copy` data here:
//! [`VcpuMceState`] (the registers), [`VcpuSnapshot`] (the registers and the pending #MC) and
//! the vCPU's [`VcpuId`].
//!
//! A state that comes from outside (a record, a caller) is checked once, against the
//! destination's profile, by [`VcpuSnapshot::check`]; what passes is a [`CheckedSnapshot`],
//! which nothing else can build and which carries the profile it was checked for. A vCPU
//! restores a [`CheckedSnapshot`] without failing ([`crate::Vcpu::restore`]), and a domain only
//! checks that it was checked for the domain's own profile ([`crate::Domain::restore`]).
//!
//! What the check refuses ([`StateError`]):
//!
//! | field | refused |
//! |---|---|
//! | vendor | another than the profile's |
//! | `MCG_CAP` | bits outside [`Profile::restorable_caps`] (any bank count is taken: Xen's rule) |
//! | `MCi_CTL2` | Intel: bits other than `CMCI_EN` and the threshold; AMD: any bit |
//! | `MCG_EXT_CTL` | bits other than `LMCE_EN`; `LMCE_EN` without `LMCE_P` |
//! | `MCG_STATUS` | bits a guest cannot write ([`writable_mcg_status`]) |
//! | bank 0 | anything (vmce never fills it) |
//! | bank 1 `STATUS` | an `MSCOD` (guests never see one) |

use crate::profile::{CapsError, GUEST_BANKS, Profile};
use crate::registers::{McgCap, McgExtCtl, McgStatus, MciCtl2, MciStatus, Vendor};
use core::fmt;
use core::ops::Deref;

/// A vCPU's index in its domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VcpuId(pub u32);

impl fmt::Display for VcpuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vCPU {}", self.0)
    }
}

/// One guest bank's error registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GuestBank {
    /// `MCi_STATUS` as the guest sees it (`MSCOD` already cleared).
    pub status: MciStatus,
    /// `MCi_ADDR`, a guest-physical address.
    pub addr: u64,
    /// `MCi_MISC`.
    pub misc: u64,
}

impl GuestBank {
    /// An empty bank.
    pub const EMPTY: GuestBank = GuestBank {
        status: MciStatus::empty(),
        addr: 0,
        misc: 0,
    };
}

/// The guest-visible machine-check registers of one vCPU: plain data, the unit of save and
/// restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VcpuMceState {
    /// The vendor dialect (from the domain's profile).
    pub vendor: Vendor,
    /// `IA32_MCG_CAP`: the profile's, or one restored from an older host.
    pub mcg_cap: McgCap,
    /// `IA32_MCG_STATUS`.
    pub mcg_status: McgStatus,
    /// `IA32_MCG_EXT_CTL`.
    pub mcg_ext_ctl: McgExtCtl,
    /// `IA32_MCi_CTL2` of banks 0 and 1 (Intel).
    pub mci_ctl2: [MciCtl2; GUEST_BANKS as usize],
    /// Banks 0 and 1. Bank 0 is never written by vmce.
    pub banks: [GuestBank; GUEST_BANKS as usize],
}

impl VcpuMceState {
    /// Power-on state for `profile`.
    pub const fn new(profile: Profile) -> Self {
        Self::with_caps(profile.vendor(), profile.mcg_cap())
    }

    /// Power-on state with `mcg_cap` (checked by the caller).
    pub(crate) const fn with_caps(vendor: Vendor, mcg_cap: McgCap) -> Self {
        Self {
            vendor,
            mcg_cap,
            mcg_status: McgStatus::empty(),
            mcg_ext_ctl: McgExtCtl::empty(),
            mci_ctl2: [MciCtl2::empty(); GUEST_BANKS as usize],
            banks: [GuestBank::EMPTY; GUEST_BANKS as usize],
        }
    }

    /// The state after a vCPU reset (INIT): capabilities kept, everything else cleared.
    pub const fn reset(self) -> Self {
        Self::with_caps(self.vendor, self.mcg_cap)
    }

    /// Whether the state speaks `profile`'s dialect with capabilities it can restore (Xen's
    /// rule, [`Profile::check_restored_caps`]): the part of [`VcpuSnapshot::check`] that a
    /// vCPU's whole life depends on, which [`crate::Domain::new`] asks of every vCPU.
    ///
    /// # Errors
    /// [`StateError::VendorMismatch`] or [`StateError::Caps`].
    #[inline]
    pub const fn check_caps(&self, profile: Profile) -> Result<(), StateError> {
        if !matches!(
            (self.vendor, profile.vendor()),
            (Vendor::Intel, Vendor::Intel) | (Vendor::Amd, Vendor::Amd)
        ) {
            return Err(StateError::VendorMismatch {
                destination: profile,
            });
        }
        match profile.check_restored_caps(self.mcg_cap) {
            Ok(()) => Ok(()),
            Err(error) => Err(StateError::Caps(error)),
        }
    }
}

/// The `MCG_STATUS` bits a guest with `mcg_cap` may write (and a saved state may hold).
#[inline]
pub const fn writable_mcg_status(mcg_cap: McgCap) -> McgStatus {
    let base = McgStatus::RIPV
        .union(McgStatus::EIPV)
        .union(McgStatus::MCIP);
    if mcg_cap.contains(McgCap::LMCE_P) {
        base.union(McgStatus::LMCE_S)
    } else {
        base
    }
}

/// Everything a save must carry for one vCPU: the registers and the pending-#MC flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VcpuSnapshot {
    /// The registers.
    pub state: VcpuMceState,
    /// A virtual #MC was injected and not yet taken by the vCPU on VM entry.
    pub pending: bool,
}

impl VcpuSnapshot {
    /// Checks the snapshot against the destination `profile`: everything a restore would load
    /// must be state a vCPU of that profile can hold (see the module docs).
    ///
    /// # Errors
    /// The [`StateError`] of the first field that is out of range.
    #[inline]
    pub fn check(self, profile: Profile) -> Result<CheckedSnapshot, StateError> {
        let state = &self.state;
        state.check_caps(profile)?;
        for (bank, ctl2) in (0u8..).zip(state.mci_ctl2) {
            let reserved = match state.vendor {
                Vendor::Intel => ctl2.bits() & !MciCtl2::WRITABLE,
                Vendor::Amd => ctl2.bits(),
            };
            if reserved != 0 {
                return Err(StateError::Ctl2Reserved {
                    bank,
                    bits: reserved,
                });
            }
        }
        let ext_reserved = state.mcg_ext_ctl.bits() & !McgExtCtl::LMCE_EN.bits();
        if ext_reserved != 0 {
            return Err(StateError::ExtCtlReserved { bits: ext_reserved });
        }
        if !state.mcg_ext_ctl.is_empty() && !state.mcg_cap.contains(McgCap::LMCE_P) {
            return Err(StateError::ExtCtlWithoutLmce);
        }
        let status_reserved = state.mcg_status.bits() & !writable_mcg_status(state.mcg_cap).bits();
        if status_reserved != 0 {
            return Err(StateError::McgStatusReserved {
                bits: status_reserved,
            });
        }
        let [bank0, bank1] = state.banks;
        if bank0 != GuestBank::EMPTY {
            return Err(StateError::Bank0NotEmpty);
        }
        let mscod = bank1.status.mscod().0;
        if mscod != 0 {
            return Err(StateError::MscodInRecord {
                bits: u64::from(mscod) << 16,
            });
        }
        Ok(CheckedSnapshot {
            profile,
            snapshot: self,
        })
    }
}

/// A [`VcpuSnapshot`] that passed [`VcpuSnapshot::check`] for [`CheckedSnapshot::profile`]:
/// built only by the check (or, inside the crate, read from a vCPU of a domain of that
/// profile, whose state always passes it). Reads as the snapshot it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CheckedSnapshot {
    profile: Profile,
    snapshot: VcpuSnapshot,
}

impl CheckedSnapshot {
    /// [`VcpuSnapshot::check`].
    ///
    /// # Errors
    /// As [`VcpuSnapshot::check`].
    pub fn new(profile: Profile, snapshot: VcpuSnapshot) -> Result<Self, StateError> {
        snapshot.check(profile)
    }

    /// A snapshot read from a vCPU of a domain under `profile`: every writer of a vCPU keeps
    /// its state within what the check allows (guest writes refuse reserved bits, an
    /// injection clears `MSCOD` and never writes bank 0, and [`crate::Domain::new`] checks the
    /// vendor and capabilities each vCPU starts with).
    pub(crate) const fn read_from_domain(profile: Profile, snapshot: VcpuSnapshot) -> Self {
        Self { profile, snapshot }
    }

    /// The profile the snapshot was checked for.
    pub const fn profile(&self) -> Profile {
        self.profile
    }

    /// The snapshot.
    pub const fn snapshot(&self) -> &VcpuSnapshot {
        &self.snapshot
    }
}

impl Deref for CheckedSnapshot {
    type Target = VcpuSnapshot;

    fn deref(&self) -> &VcpuSnapshot {
        &self.snapshot
    }
}

impl PartialEq<VcpuSnapshot> for CheckedSnapshot {
    fn eq(&self, other: &VcpuSnapshot) -> bool {
        self.snapshot == *other
    }
}

/// Why a saved vCPU state cannot be held by a vCPU of the destination profile. Nothing was
/// restored when one is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StateError {
    /// A saved state made for the other vendor's dialect.
    VendorMismatch {
        /// The destination's profile.
        destination: Profile,
    },
    /// The saved `MCG_CAP` cannot be restored under the destination profile.
    Caps(CapsError),
    /// Reserved bits set in a saved `MCi_CTL2` (on AMD every bit is reserved). Native records
    /// and [`VcpuSnapshot::check`] refuse them; Xen records have them dropped instead
    /// (`record::LoadNotes`).
    Ctl2Reserved {
        /// Bank 0 or 1.
        bank: u8,
        /// The reserved bits.
        bits: u64,
    },
    /// Bits other than `LMCE_EN` in a saved `MCG_EXT_CTL` (native records; Xen records have
    /// them dropped instead).
    ExtCtlReserved {
        /// The reserved bits.
        bits: u64,
    },
    /// `MCG_EXT_CTL.LMCE_EN` saved for a vCPU whose `MCG_CAP` has no `LMCE_P` (native
    /// records; Xen records have it dropped instead).
    ExtCtlWithoutLmce,
    /// `MCG_STATUS` bits a guest of these capabilities can never hold.
    McgStatusReserved {
        /// The reserved bits.
        bits: u64,
    },
    /// A saved bank 1 `STATUS` with a model-specific error code, which guests never see.
    MscodInRecord {
        /// The `MSCOD` bits.
        bits: u64,
    },
    /// A saved bank 0 that is not empty (vmce never fills bank 0).
    Bank0NotEmpty,
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::VendorMismatch { destination } => {
                write!(f, "saved state is not for profile {destination}'s vendor")
            }
            StateError::Caps(error) => error.fmt(f),
            StateError::Ctl2Reserved { bank, bits } => {
                write!(f, "saved MC{bank}_CTL2 has reserved bits {bits:#x}")
            }
            StateError::ExtCtlReserved { bits } => {
                write!(f, "saved MCG_EXT_CTL has reserved bits {bits:#x}")
            }
            StateError::ExtCtlWithoutLmce => {
                f.write_str("saved MCG_EXT_CTL.LMCE_EN, but the saved MCG_CAP has no LMCE_P")
            }
            StateError::McgStatusReserved { bits } => {
                write!(f, "saved MCG_STATUS has reserved bits {bits:#x}")
            }
            StateError::MscodInRecord { bits } => {
                write!(f, "saved bank 1 STATUS carries a host MSCOD ({bits:#x})")
            }
            StateError::Bank0NotEmpty => f.write_str("saved bank 0 is not empty"),
        }
    }
}

impl core::error::Error for StateError {}
