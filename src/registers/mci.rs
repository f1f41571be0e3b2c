//! The per-bank registers: `IA32_MCi_STATUS`, `IA32_MCi_MISC`, `IA32_MCi_CTL2`.

use super::mcacod::Mcacod;
use super::names::write_joined;
use super::vendor::Vendor;
use core::fmt;

bitflags::bitflags! {
    /// `IA32_MCi_STATUS` (SDM vol. 3B §15.3.2.2; AMD APM vol. 2 §9.3).
    ///
    /// | bits  | field    | meaning                                                   |
    /// |-------|----------|-----------------------------------------------------------|
    /// | 63    | VAL      | the register holds a valid error                          |
    /// | 62    | OVER     | an error was lost while this one was held                 |
    /// | 61    | UC       | uncorrected error                                         |
    /// | 60    | EN       | reporting of this error was enabled in `MCi_CTL`          |
    /// | 59    | MISCV    | `MCi_MISC` holds information                              |
    /// | 58    | ADDRV    | `MCi_ADDR` holds the address                              |
    /// | 57    | PCC      | processor context corrupt: not recoverable                |
    /// | 56    | S        | signalled as #MC (Intel, with `SER_P`)                    |
    /// | 55    | AR       | software must act before resuming (Intel, with `SER_P`)   |
    /// | 44    | DEFERRED | deferred error, not yet consumed (AMD)                    |
    /// | 43    | POISON   | the error was caused by consuming poisoned data (AMD)     |
    /// | 31:16 | MSCOD    | model-specific error code ([`MciStatus::mscod`])          |
    /// | 15:0  | MCACOD   | architectural error code ([`MciStatus::mcacod`])          |
    ///
    /// On Intel, bits 52:38 hold the corrected-error count, so [`Self::DEFERRED`] and
    /// [`Self::POISON`] only mean something on AMD.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct MciStatus: u64 {
        /// Valid.
        const VAL = 1 << 63;
        /// Error overflow.
        const OVER = 1 << 62;
        /// Uncorrected error.
        const UC = 1 << 61;
        /// Error reporting enabled.
        const EN = 1 << 60;
        /// `MCi_MISC` valid.
        const MISCV = 1 << 59;
        /// `MCi_ADDR` valid.
        const ADDRV = 1 << 58;
        /// Processor context corrupt.
        const PCC = 1 << 57;
        /// Signalling: reported through #MC (Intel `SER_P`).
        const S = 1 << 56;
        /// Action required (Intel `SER_P`).
        const AR = 1 << 55;
        /// Deferred error (AMD).
        const DEFERRED = 1 << 44;
        /// Poisoned data consumed (AMD).
        const POISON = 1 << 43;
    }
}

impl MciStatus {
    /// Bits 31:16.
    pub const MSCOD_MASK: u64 = 0xFFFF << 16;
    /// Bits 15:0.
    pub const MCACOD_MASK: u64 = 0xFFFF;

    /// The architectural error code (bits 15:0).
    pub const fn mcacod(self) -> Mcacod {
        Mcacod((self.bits() & Self::MCACOD_MASK) as u16)
    }

    /// The model-specific error code (bits 31:16).
    pub const fn mscod(self) -> Mscod {
        Mscod(((self.bits() & Self::MSCOD_MASK) >> 16) as u16)
    }

    /// The same status with `MSCOD` cleared: what a guest may see.
    pub const fn without_mscod(self) -> MciStatus {
        MciStatus::from_bits_retain(self.bits() & !Self::MSCOD_MASK)
    }

    /// A decoder that names the bits as `vendor` defines them.
    pub const fn describe(self, vendor: Vendor) -> DescribeStatus {
        DescribeStatus {
            status: self,
            vendor,
        }
    }
}

/// Formats an `MCi_STATUS` for a log line: raw value, set flags, MCACOD class, MSCOD.
///
/// Made by [`MciStatus::describe`]; `MciStatus`'s own `Display` is the Intel view.
#[derive(Clone, Copy, Debug)]
pub struct DescribeStatus {
    status: MciStatus,
    vendor: Vendor,
}

impl fmt::Display for DescribeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const COMMON: [(MciStatus, &str); 7] = [
            (MciStatus::VAL, "VAL"),
            (MciStatus::OVER, "OVER"),
            (MciStatus::UC, "UC"),
            (MciStatus::EN, "EN"),
            (MciStatus::MISCV, "MISCV"),
            (MciStatus::ADDRV, "ADDRV"),
            (MciStatus::PCC, "PCC"),
        ];
        const INTEL: [(MciStatus, &str); 2] = [(MciStatus::S, "S"), (MciStatus::AR, "AR")];
        const AMD: [(MciStatus, &str); 2] = [
            (MciStatus::DEFERRED, "DEFERRED"),
            (MciStatus::POISON, "POISON"),
        ];
        let status = self.status;
        write!(f, "{:#018x} [", status.bits())?;
        let vendor_bits: &[(MciStatus, &str)] = match self.vendor {
            Vendor::Intel => &INTEL,
            Vendor::Amd => &AMD,
        };
        let names = COMMON
            .iter()
            .chain(vendor_bits)
            .filter(|(flag, _)| status.contains(*flag))
            .map(|(_, name)| *name);
        write_joined(f, names, "|")?;
        write!(f, "] MCACOD={} MSCOD={}", status.mcacod(), status.mscod())
    }
}

impl fmt::Display for MciStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.describe(Vendor::Intel).fmt(f)
    }
}

/// The model-specific error code, `MCi_STATUS` bits 31:16.
///
/// Its meaning depends on the CPU model, so vmce never shows it to a guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mscod(pub u16);

impl fmt::Display for Mscod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#06x}", self.0)
    }
}

/// The address mode of `MCi_MISC` bits 8:6 (SDM vol. 3B table 15-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressMode {
    /// 000: segment offset.
    SegmentOffset,
    /// 001: linear address.
    Linear,
    /// 010: physical address.
    Physical,
    /// 011: memory address.
    Memory,
    /// 111: generic.
    Generic,
    /// 100–110: reserved encodings, kept as found.
    Reserved(u8),
}

/// `IA32_MCi_MISC` (SDM vol. 3B §15.3.2.4) as far as the address is concerned.
///
/// | bits | field        | meaning                                          |
/// |------|--------------|--------------------------------------------------|
/// | 5:0  | Address LSB  | lowest valid bit of `MCi_ADDR` ([`MciMisc::address_lsb`]) |
/// | 8:6  | Address mode | what `MCi_ADDR` holds ([`MciMisc::address_mode`]) |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MciMisc(pub u64);

impl MciMisc {
    /// The recoverable-address LSB: bits below it in `MCi_ADDR` are not valid (Intel). AMD's
    /// `MCi_MISC` has no such field, so vmce never calls this for an AMD bank.
    pub const fn address_lsb(self) -> u8 {
        (self.0 & 0x3F) as u8
    }

    /// The address mode.
    pub const fn address_mode(self) -> AddressMode {
        match (self.0 >> 6) & 0x7 {
            0 => AddressMode::SegmentOffset,
            1 => AddressMode::Linear,
            2 => AddressMode::Physical,
            3 => AddressMode::Memory,
            7 => AddressMode::Generic,
            other => AddressMode::Reserved(other as u8),
        }
    }
}

bitflags::bitflags! {
    /// `IA32_MCi_CTL2` (SDM vol. 3B §15.5.1), present with `MCG_CAP.CMCI_P` (Intel).
    ///
    /// | bits  | field     | meaning                                          |
    /// |-------|-----------|--------------------------------------------------|
    /// | 14:0  | threshold | corrected errors before a CMCI ([`MciCtl2::threshold`]) |
    /// | 30    | CMCI_EN   | signal CMCI for this bank                        |
    ///
    /// All other bits are reserved.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct MciCtl2: u64 {
        /// CMCI enable.
        const CMCI_EN = 1 << 30;
    }
}

impl MciCtl2 {
    /// Bits 14:0.
    pub const THRESHOLD_MASK: u64 = 0x7FFF;
    /// Every bit a guest may set: `CMCI_EN` and the threshold.
    pub const WRITABLE: u64 = Self::CMCI_EN.bits() | Self::THRESHOLD_MASK;

    /// The corrected-error threshold (bits 14:0).
    pub const fn threshold(self) -> u16 {
        (self.bits() & Self::THRESHOLD_MASK) as u16
    }

    /// The reserved bits that are set, if any.
    pub const fn reserved_bits(self) -> u64 {
        self.bits() & !Self::WRITABLE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;

    #[test]
    fn qemu_srar_status_decodes() {
        let status = MciStatus::from_bits_retain(0xBD80_0000_0000_0134);
        assert_eq!(
            status.to_string(),
            "0xbd80000000000134 [VAL|UC|EN|MISCV|ADDRV|S|AR] MCACOD=0x0134 (data load: \
             cache hierarchy, data read, data, L0) MSCOD=0x0000"
        );
    }

    #[test]
    fn mscod_is_extracted_and_cleared() {
        let status = MciStatus::from_bits_retain(0xBD00_0000_0040_00CF);
        assert_eq!(status.mscod(), Mscod(0x0040));
        assert_eq!(status.mcacod().0, 0x00CF);
        assert_eq!(status.without_mscod().bits(), 0xBD00_0000_0000_00CF);
    }

    #[test]
    fn amd_view_names_deferred_and_poison() {
        let status = MciStatus::from_bits_retain((1 << 63) | (1 << 61) | (1 << 43) | 0x0136);
        let text = status.describe(Vendor::Amd).to_string();
        assert!(text.contains("[VAL|UC|POISON]"), "{text}");
        let intel = status.to_string();
        assert!(intel.contains("[VAL|UC]"), "{intel}");
    }

    #[test]
    fn misc_address_mode_and_lsb() {
        let misc = MciMisc(0x86);
        assert_eq!(misc.address_lsb(), 6);
        assert_eq!(misc.address_mode(), AddressMode::Physical);
        assert_eq!(MciMisc(0x8C).address_mode(), AddressMode::Physical);
        assert_eq!(MciMisc(0x1C0).address_mode(), AddressMode::Generic);
        assert_eq!(MciMisc(0x100).address_mode(), AddressMode::Reserved(4));
    }

    #[test]
    fn ctl2_fields() {
        let ctl2 = MciCtl2::from_bits_retain((1 << 30) | 0x7FFF | (1 << 31));
        assert_eq!(ctl2.threshold(), 0x7FFF);
        assert_eq!(ctl2.reserved_bits(), 1 << 31);
    }
}
