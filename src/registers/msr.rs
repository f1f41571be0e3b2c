//! MSR indices of the Machine Check Architecture (SDM vol. 4, table 2-2).
//!
//! Indices are `u32` because that is what a `rdmsr`/`wrmsr` exit hands the hypervisor in ECX.

/// `P5_MC_ADDR`: the Pentium machine-check address register. Xen ≥ 4.17 serves it to Intel
/// guests as bank 1's `MCi_ADDR` (Windows Server 2019 reads it).
pub const P5_MC_ADDR: u32 = 0x0;
/// `P5_MC_TYPE`: the Pentium machine-check type register, served as bank 1's `MCi_STATUS`.
pub const P5_MC_TYPE: u32 = 0x1;
/// `IA32_FEATURE_CONTROL`: bit 0 lock, bit 20 `LMCE_ON` (not emulated by vmce).
pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
/// `IA32_MCG_CAP`: global machine-check capabilities (read-only).
pub const IA32_MCG_CAP: u32 = 0x179;
/// `IA32_MCG_STATUS`: global machine-check status.
pub const IA32_MCG_STATUS: u32 = 0x17A;
/// `IA32_MCG_CTL`: global machine-check control, present only with `MCG_CAP.CTL_P`.
pub const IA32_MCG_CTL: u32 = 0x17B;
/// `IA32_MC0_CTL2`: first of the 32 per-bank CMCI control registers.
pub const IA32_MC0_CTL2: u32 = 0x280;
/// `IA32_MC0_CTL`: first of the per-bank registers (4 per bank: CTL, STATUS, ADDR, MISC).
pub const IA32_MC0_CTL: u32 = 0x400;
/// `IA32_MCG_EXT_CTL`: local machine-check enable, present only with `MCG_CAP.LMCE_P`.
pub const IA32_MCG_EXT_CTL: u32 = 0x4D0;

/// Banks the architectural MSR ranges (0x280–0x29F, 0x400–0x47F) hold.
pub const ARCH_BANKS: u8 = 32;

/// `IA32_MCi_CTL` of `bank`.
pub const fn ia32_mci_ctl(bank: u8) -> u32 {
    IA32_MC0_CTL + 4 * bank as u32
}

/// `IA32_MCi_STATUS` of `bank`.
pub const fn ia32_mci_status(bank: u8) -> u32 {
    IA32_MC0_CTL + 4 * bank as u32 + 1
}

/// `IA32_MCi_ADDR` of `bank`.
pub const fn ia32_mci_addr(bank: u8) -> u32 {
    IA32_MC0_CTL + 4 * bank as u32 + 2
}

/// `IA32_MCi_MISC` of `bank`.
pub const fn ia32_mci_misc(bank: u8) -> u32 {
    IA32_MC0_CTL + 4 * bank as u32 + 3
}

/// `IA32_MCi_CTL2` of `bank`.
pub const fn ia32_mci_ctl2(bank: u8) -> u32 {
    IA32_MC0_CTL2 + bank as u32
}

/// One of the four registers of a bank in the 0x400–0x47F range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BankRegister {
    /// `IA32_MCi_CTL`.
    Ctl,
    /// `IA32_MCi_STATUS`.
    Status,
    /// `IA32_MCi_ADDR`.
    Addr,
    /// `IA32_MCi_MISC`.
    Misc,
}

/// What an MSR index names, as far as the MCA is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum McaMsr {
    /// `P5_MC_ADDR`.
    P5McAddr,
    /// `P5_MC_TYPE`.
    P5McType,
    /// `IA32_MCG_CAP`.
    McgCap,
    /// `IA32_MCG_STATUS`.
    McgStatus,
    /// `IA32_MCG_CTL`.
    McgCtl,
    /// `IA32_MCG_EXT_CTL`.
    McgExtCtl,
    /// `IA32_MCi_CTL2` of a bank below 32.
    Ctl2 {
        /// The bank, always below [`ARCH_BANKS`].
        bank: u8,
    },
    /// A register of a bank below 32 in the 0x400–0x47F range.
    Bank {
        /// The bank, always below [`ARCH_BANKS`].
        bank: u8,
        /// Which of its four registers.
        register: BankRegister,
    },
}

impl McaMsr {
    /// Decodes an MSR index; `None` for an MSR outside the MCA.
    #[inline]
    pub const fn decode(index: u32) -> Option<McaMsr> {
        // The two ranges first, banks before CTL2: a guest's poll and #MC handler read bank
        // registers most.
        let offset = index.wrapping_sub(IA32_MC0_CTL);
        if offset < 4 * ARCH_BANKS as u32 {
            let register = match offset & 3 {
                0 => BankRegister::Ctl,
                1 => BankRegister::Status,
                2 => BankRegister::Addr,
                _ => BankRegister::Misc,
            };
            return Some(McaMsr::Bank {
                bank: (offset >> 2) as u8,
                register,
            });
        }
        let bank = index.wrapping_sub(IA32_MC0_CTL2);
        if bank < ARCH_BANKS as u32 {
            return Some(McaMsr::Ctl2 { bank: bank as u8 });
        }
        match index {
            P5_MC_ADDR => Some(McaMsr::P5McAddr),
            P5_MC_TYPE => Some(McaMsr::P5McType),
            IA32_MCG_CAP => Some(McaMsr::McgCap),
            IA32_MCG_STATUS => Some(McaMsr::McgStatus),
            IA32_MCG_CTL => Some(McaMsr::McgCtl),
            IA32_MCG_EXT_CTL => Some(McaMsr::McgExtCtl),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bank_register_indices_follow_the_sdm() {
        assert_eq!(ia32_mci_ctl(0), 0x400);
        assert_eq!(ia32_mci_status(1), 0x405);
        assert_eq!(ia32_mci_addr(1), 0x406);
        assert_eq!(ia32_mci_misc(31), 0x47F);
        assert_eq!(ia32_mci_ctl2(31), 0x29F);
    }

    #[test]
    fn decode_round_trips_every_bank_register() {
        for bank in 0..ARCH_BANKS {
            for (index, register) in [
                (ia32_mci_ctl(bank), BankRegister::Ctl),
                (ia32_mci_status(bank), BankRegister::Status),
                (ia32_mci_addr(bank), BankRegister::Addr),
                (ia32_mci_misc(bank), BankRegister::Misc),
            ] {
                assert_eq!(McaMsr::decode(index), Some(McaMsr::Bank { bank, register }));
            }
            assert_eq!(
                McaMsr::decode(ia32_mci_ctl2(bank)),
                Some(McaMsr::Ctl2 { bank })
            );
        }
        assert_eq!(McaMsr::decode(0x480), None);
        assert_eq!(McaMsr::decode(0x2A0), None);
        assert_eq!(McaMsr::decode(IA32_FEATURE_CONTROL), None);
    }
}
