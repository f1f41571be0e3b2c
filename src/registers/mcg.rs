//! The global registers: `IA32_MCG_CAP`, `IA32_MCG_STATUS`, `IA32_MCG_EXT_CTL`.

use super::names::write_joined;
use core::fmt;

bitflags::bitflags! {
    /// `IA32_MCG_CAP` (SDM vol. 3B §15.3.1.1).
    ///
    /// | bits  | field    | meaning                                        |
    /// |-------|----------|------------------------------------------------|
    /// | 7:0   | Count    | number of error-reporting banks ([`McgCap::count`]) |
    /// | 8     | CTL_P    | `IA32_MCG_CTL` present                         |
    /// | 9     | EXT_P    | extended state registers present               |
    /// | 10    | CMCI_P   | corrected machine-check interrupt (`MCi_CTL2`) |
    /// | 11    | TES_P    | threshold-based error status                   |
    /// | 23:16 | EXT_CNT  | extended registers ([`McgCap::ext_cnt`])       |
    /// | 24    | SER_P    | software error recovery (S/AR, UCNA, SRAO, SRAR) |
    /// | 25    | EMC_P    | enhanced machine-check capability              |
    /// | 26    | ELOG_P   | extended error logging                         |
    /// | 27    | LMCE_P   | local machine check (`IA32_MCG_EXT_CTL`)       |
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct McgCap: u64 {
        /// `IA32_MCG_CTL` is present.
        const CTL_P = 1 << 8;
        /// Extended machine-check state registers are present.
        const EXT_P = 1 << 9;
        /// Corrected machine-check error interrupts (CMCI) and `MCi_CTL2`.
        const CMCI_P = 1 << 10;
        /// Threshold-based error status in `MCi_STATUS`.
        const TES_P = 1 << 11;
        /// Software error recovery: `MCi_STATUS.S`/`AR`, UCNA, SRAO and SRAR errors.
        const SER_P = 1 << 24;
        /// Enhanced machine-check capability (firmware first).
        const EMC_P = 1 << 25;
        /// Extended error logging.
        const ELOG_P = 1 << 26;
        /// Local machine check exception and `IA32_MCG_EXT_CTL`.
        const LMCE_P = 1 << 27;
    }
}

impl McgCap {
    /// Bits 7:0.
    pub const COUNT_MASK: u64 = 0xFF;
    /// Bits 23:16.
    pub const EXT_CNT_MASK: u64 = 0xFF << 16;

    /// `IA32_MCG_CAP` with only the bank count set.
    pub const fn with_count(count: u8) -> McgCap {
        McgCap::from_bits_retain(count as u64)
    }

    /// The number of error-reporting banks (bits 7:0).
    pub const fn count(self) -> u8 {
        (self.bits() & Self::COUNT_MASK) as u8
    }

    /// The number of extended machine-check state registers (bits 23:16).
    pub const fn ext_cnt(self) -> u8 {
        ((self.bits() & Self::EXT_CNT_MASK) >> 16) as u8
    }

    /// The capability bits alone, without the bank count.
    pub const fn without_count(self) -> McgCap {
        McgCap::from_bits_retain(self.bits() & !Self::COUNT_MASK)
    }
}

impl fmt::Display for McgCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x} (banks={}", self.bits(), self.count())?;
        if self.ext_cnt() != 0 {
            write!(f, " ext_cnt={}", self.ext_cnt())?;
        }
        for (name, _) in self.iter_names() {
            write!(f, " {name}")?;
        }
        let unknown = self.bits() & !(Self::all().bits() | Self::COUNT_MASK | Self::EXT_CNT_MASK);
        if unknown != 0 {
            write!(f, " reserved={unknown:#x}")?;
        }
        f.write_str(")")
    }
}

bitflags::bitflags! {
    /// `IA32_MCG_STATUS` (SDM vol. 3B §15.3.1.2).
    ///
    /// | bit | field  | meaning                                                  |
    /// |-----|--------|----------------------------------------------------------|
    /// | 0   | RIPV   | the interrupted instruction can be restarted             |
    /// | 1   | EIPV   | the saved instruction pointer points at the erring code  |
    /// | 2   | MCIP   | a machine check is in progress; a second #MC shuts down  |
    /// | 3   | LMCE_S | the machine check was delivered to this CPU only (needs `LMCE_P`) |
    ///
    /// Bits 63:4 are reserved.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct McgStatus: u64 {
        /// Restart IP valid.
        const RIPV = 1 << 0;
        /// Error IP valid.
        const EIPV = 1 << 1;
        /// Machine check in progress.
        const MCIP = 1 << 2;
        /// Local machine check signalled.
        const LMCE_S = 1 << 3;
    }
}

impl fmt::Display for McgStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.bits())?;
        if self.intersects(Self::all()) {
            f.write_str(" (")?;
            write_joined(f, self.iter_names().map(|(name, _)| name), "|")?;
            f.write_str(")")?;
        }
        let reserved = self.bits() & !Self::all().bits();
        if reserved != 0 {
            write!(f, " reserved={reserved:#x}")?;
        }
        Ok(())
    }
}

bitflags::bitflags! {
    /// `IA32_MCG_EXT_CTL` (SDM vol. 3B §15.3.1.5), present with `MCG_CAP.LMCE_P`.
    ///
    /// | bit | field   | meaning                                   |
    /// |-----|---------|-------------------------------------------|
    /// | 0   | LMCE_EN | the OS accepts local machine checks       |
    ///
    /// Bits 63:1 are reserved.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct McgExtCtl: u64 {
        /// Local machine check enable.
        const LMCE_EN = 1 << 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;

    #[test]
    fn qemu_tcg_max_cpu_caps_decode() {
        let cap = McgCap::from_bits_retain(0x100_010A);
        assert_eq!(cap.count(), 10);
        assert!(cap.contains(McgCap::CTL_P | McgCap::SER_P));
        assert!(!cap.contains(McgCap::CMCI_P));
        assert_eq!(cap.to_string(), "0x100010a (banks=10 CTL_P SER_P)");
    }

    #[test]
    fn ext_cnt_and_reserved_bits_are_shown() {
        let cap = McgCap::from_bits_retain(0x0003_0200 | 0x2 | (1 << 40));
        assert_eq!(cap.ext_cnt(), 3);
        assert_eq!(
            cap.to_string(),
            "0x10000030202 (banks=2 ext_cnt=3 EXT_P reserved=0x10000000000)"
        );
    }

    #[test]
    fn mcg_status_names_its_flags() {
        assert_eq!(
            McgStatus::from_bits_retain(0x7).to_string(),
            "0x7 (RIPV|EIPV|MCIP)"
        );
        assert_eq!(McgStatus::from_bits_retain(0).to_string(), "0x0");
        assert_eq!(
            McgStatus::from_bits_retain(0x15).to_string(),
            "0x15 (RIPV|MCIP) reserved=0x10"
        );
    }
}
