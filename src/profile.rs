//! Guest capability profiles: the guest's `IA32_MCG_CAP` is a function of the profile alone.
//!
//! # Background
//! When a guest's machine-check capabilities are derived from the host, the same VM sees
//! different capabilities on different hosts and after a migration (QEMU's `MCG_SER_P` was
//! silently cleared on some host kernels). vmce therefore fixes the guest's capabilities per
//! profile, exactly as Xen does, and checks separately that the host can *back* them. A host
//! that cannot is an error at domain creation, never a silent downgrade.
//!
//! | profile | `MCG_CAP` | meaning |
//! |---|---|---|
//! | [`Profile::Intel`] | `0x0100_0C02` | `SER_P`, `TES_P`, `CMCI_P`, 2 banks, `CTL_P` clear |
//! | [`Profile::IntelLmce`] | `0x0900_0C02` | adds `LMCE_P`; the host must have `LMCE_P` |
//! | [`Profile::Amd`] | `0x0000_0002` | 2 banks, nothing else |
//!
//! LMCE is an opt-in the toolstack makes once, when it creates the domain: a domain's profile
//! never changes afterwards (there is no setter), which is Xen's write-once rule by
//! construction.

use crate::host::HostCapabilities;
use crate::registers::{McgCap, Vendor};
use core::fmt;

/// A guest machine-check capability set, chosen by the toolstack per domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Intel: `SER_P | TES_P | CMCI_P`, 2 banks.
    Intel,
    /// Intel with local machine checks: adds `LMCE_P`.
    IntelLmce,
    /// AMD: 2 banks, no capability bits.
    Amd,
}

/// The number of banks every profile gives a guest: bank 0 stays empty, errors go to bank 1.
pub const GUEST_BANKS: u8 = 2;

/// The bank guest errors are reported in.
pub const ERROR_BANK: u8 = 1;

impl Profile {
    /// Every profile, for tables and tests.
    pub const ALL: [Profile; 3] = [Profile::Intel, Profile::IntelLmce, Profile::Amd];

    /// The vendor dialect of the profile.
    pub const fn vendor(self) -> Vendor {
        match self {
            Profile::Intel | Profile::IntelLmce => Vendor::Intel,
            Profile::Amd => Vendor::Amd,
        }
    }

    /// The guest's `IA32_MCG_CAP`. Depends on nothing but the profile.
    pub const fn mcg_cap(self) -> McgCap {
        let intel = McgCap::SER_P
            .union(McgCap::TES_P)
            .union(McgCap::CMCI_P)
            .union(McgCap::with_count(GUEST_BANKS));
        match self {
            Profile::Intel => intel,
            Profile::IntelLmce => intel.union(McgCap::LMCE_P),
            Profile::Amd => McgCap::with_count(GUEST_BANKS),
        }
    }

    /// Whether the profile includes local machine checks.
    pub const fn has_lmce(self) -> bool {
        matches!(self, Profile::IntelLmce)
    }

    /// The profile with LMCE opted in.
    ///
    /// # Errors
    /// [`ProfileError::LmceOnAmd`] for the AMD profile, which has no LMCE.
    pub const fn with_lmce(self) -> Result<Profile, ProfileError> {
        match self {
            Profile::Intel | Profile::IntelLmce => Ok(Profile::IntelLmce),
            Profile::Amd => Err(ProfileError::LmceOnAmd),
        }
    }

    /// What the host must have to back the profile: capability bits, beyond a matching vendor
    /// and at least one bank.
    ///
    /// `SER_P` because without it the host cannot tell a recoverable error (SRAO/SRAR) from a
    /// fatal one, so nothing could be reflected; `LMCE_P` for the LMCE profile because a local
    /// machine check can only be reflected if the host receives them.
    pub const fn host_requirements(self) -> McgCap {
        match self {
            Profile::Intel => McgCap::SER_P,
            Profile::IntelLmce => McgCap::SER_P.union(McgCap::LMCE_P),
            Profile::Amd => McgCap::empty(),
        }
    }

    /// Checks that `host` can back the profile.
    ///
    /// # Errors
    /// A [`ProfileError`] naming the first thing that is missing (all missing capability bits
    /// at once).
    pub fn check_host(self, host: &HostCapabilities) -> Result<(), ProfileError> {
        if host.vendor() != self.vendor() {
            return Err(ProfileError::VendorMismatch {
                profile: self,
                host: host.vendor(),
            });
        }
        if host.mcg_cap().count() == 0 {
            return Err(ProfileError::HostWithoutBanks);
        }
        let missing = self
            .host_requirements()
            .difference(host.mcg_cap().without_count());
        if !missing.is_empty() {
            return Err(ProfileError::HostLacks {
                profile: self,
                missing,
            });
        }
        Ok(())
    }

    /// The capability bits a guest of this profile may carry in from an older host (Xen's
    /// restore rule): the profile's own bits plus `CTL_P`, which guests created before Xen 4.2
    /// inherited from their host. The bank count (bits 7:0) is never checked.
    pub const fn restorable_caps(self) -> McgCap {
        self.mcg_cap().without_count().union(McgCap::CTL_P)
    }

    /// Checks an `IA32_MCG_CAP` that a guest brings from a saved state against this profile.
    ///
    /// This is Xen's restore rule (`vmce_restore_vcpu` in `xen/arch/x86/cpu/mcheck/vmce.c`):
    /// refused are the bits outside the profile's own capabilities, `CTL_P` and the bank-count
    /// field; tolerated is every bank count from 0 to 255 and `CTL_P`, because guests created
    /// before Xen 4.2 (and the SLES 11 SP2 backport) carried their host's values. Every record
    /// format and [`crate::Domain::new`]'s vCPU check use this one rule.
    ///
    /// What a vCPU restored with a count other than 2 then sees (`crate::emulate`):
    /// - `MCG_CAP` exactly as saved;
    /// - `MCi_CTL` all-ones below the count and 0 from the count up to bank 31, the end of
    ///   the architectural range 0x400–0x47F;
    /// - no bank at or above 32: the indices from 0x480 on belong to other MSRs (the VMX
    ///   capability MSRs start there), so vmce answers "not ours" for them. Xen emulates them
    ///   as banks of such a guest; vmce deliberately does not;
    /// - banks 0 and 1 answer as always, whatever the count, and errors are still logged in
    ///   bank 1 ([`ERROR_BANK`]), which a guest whose count is 0 or 1 does not scan: it sees
    ///   the #MC and `MCG_STATUS`, but finds no bank that holds the error.
    ///
    /// # Errors
    /// [`CapsError::UnsupportedBits`] naming the refused bits.
    pub const fn check_restored_caps(self, caps: McgCap) -> Result<(), CapsError> {
        let unsupported = caps.without_count().difference(self.restorable_caps());
        if !unsupported.is_empty() {
            return Err(CapsError::UnsupportedBits {
                profile: self,
                bits: unsupported.bits(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Intel => "Intel",
            Profile::IntelLmce => "Intel+LMCE",
            Profile::Amd => "AMD",
        })
    }
}

/// Why a profile cannot be used on a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProfileError {
    /// The profile speaks another vendor's dialect than the host.
    VendorMismatch {
        /// The profile asked for.
        profile: Profile,
        /// The host's vendor.
        host: Vendor,
    },
    /// The host reports no machine-check banks at all.
    HostWithoutBanks,
    /// The host lacks capabilities the profile needs (every missing bit is listed).
    HostLacks {
        /// The profile asked for.
        profile: Profile,
        /// The missing `MCG_CAP` bits.
        missing: McgCap,
    },
    /// LMCE was asked for on the AMD profile.
    LmceOnAmd,
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProfileError::VendorMismatch { profile, host } => {
                write!(
                    f,
                    "profile {profile} needs an {} host, but the host is {host}",
                    profile.vendor()
                )
            }
            ProfileError::HostWithoutBanks => f.write_str("host reports no machine-check banks"),
            ProfileError::HostLacks { profile, missing } => {
                write!(f, "profile {profile} cannot be backed:")?;
                if missing.contains(McgCap::SER_P) {
                    f.write_str(" host lacks SER_P, so SRAO/SRAR errors cannot be reflected;")?;
                }
                if missing.contains(McgCap::LMCE_P) {
                    f.write_str(" LMCE asked for but host lacks LMCE_P;")?;
                }
                write!(f, " missing MCG_CAP bits {:#x}", missing.bits())
            }
            ProfileError::LmceOnAmd => {
                f.write_str("LMCE asked for on the AMD profile, which has none")
            }
        }
    }
}

impl core::error::Error for ProfileError {}

/// Why a saved guest `IA32_MCG_CAP` cannot be restored under a profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CapsError {
    /// Capability bits the destination profile does not allow.
    UnsupportedBits {
        /// The destination profile.
        profile: Profile,
        /// The refused bits.
        bits: u64,
    },
}

impl fmt::Display for CapsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapsError::UnsupportedBits { profile, bits } => {
                write!(
                    f,
                    "saved MCG_CAP bits {bits:#x} are not allowed by profile {profile}"
                )
            }
        }
    }
}

impl core::error::Error for CapsError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xen_fixed_values() {
        assert_eq!(Profile::Intel.mcg_cap().bits(), 0x0100_0C02);
        assert_eq!(Profile::IntelLmce.mcg_cap().bits(), 0x0900_0C02);
        assert_eq!(Profile::Amd.mcg_cap().bits(), 0x0000_0002);
        for profile in Profile::ALL {
            assert!(!profile.mcg_cap().contains(McgCap::CTL_P));
            assert_eq!(profile.mcg_cap().count(), 2);
        }
    }
}
