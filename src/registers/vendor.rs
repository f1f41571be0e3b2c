//! The CPU vendor, whose machine-check dialect a register is read in.
//!
//! # Background
//! Floor: registers (the lowest). Imports nothing of the crate. Intel and AMD give some
//! `MCi_STATUS` bits different meanings, and only Intel has `MCi_CTL2` and LMCE, so every
//! layer above (host capabilities, profiles, guest state) names a vendor.

use core::fmt;

/// The CPU vendor whose machine-check dialect a guest speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Vendor {
    /// Intel (and CPUs that follow Intel's MCA: `S`/`AR` bits, `MCi_CTL2`, LMCE).
    Intel,
    /// AMD and Hygon (`DEFERRED`/`POISON` bits, no `S`/`AR`, no `MCi_CTL2`).
    Amd,
}

impl Vendor {
    /// The vendor from CPUID leaf 0's EBX, EDX, ECX (the 12-byte vendor string), or `None`
    /// for a vendor vmce does not model.
    pub const fn from_cpuid_vendor(ebx: u32, edx: u32, ecx: u32) -> Option<Vendor> {
        // "GenuineIntel", "AuthenticAMD", "HygonGenuine" as little-endian register words.
        match (ebx, edx, ecx) {
            (0x756E_6547, 0x4965_6E69, 0x6C65_746E) => Some(Vendor::Intel),
            (0x6874_7541, 0x6974_6E65, 0x444D_4163) => Some(Vendor::Amd),
            (0x6F67_7948, 0x6E65_476E, 0x656E_6975) => Some(Vendor::Amd),
            _ => None,
        }
    }
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Vendor::Intel => "Intel",
            Vendor::Amd => "AMD",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_vendor_strings() {
        let words = |s: &[u8; 12]| {
            let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
            (w(0), w(4), w(8))
        };
        let (b, d, c) = words(b"GenuineIntel");
        assert_eq!(Vendor::from_cpuid_vendor(b, d, c), Some(Vendor::Intel));
        let (b, d, c) = words(b"AuthenticAMD");
        assert_eq!(Vendor::from_cpuid_vendor(b, d, c), Some(Vendor::Amd));
        let (b, d, c) = words(b"HygonGenuine");
        assert_eq!(Vendor::from_cpuid_vendor(b, d, c), Some(Vendor::Amd));
        let (b, d, c) = words(b"CyrixInstead");
        assert_eq!(Vendor::from_cpuid_vendor(b, d, c), None);
    }
}
