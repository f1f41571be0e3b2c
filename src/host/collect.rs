//! Reading and releasing the host's machine-check banks.

use super::caps::{HostCapabilities, MsrAccess};
use crate::registers::msr::{self, ARCH_BANKS};
use crate::registers::{McgStatus, MciMisc, MciStatus};

/// One valid host bank as read by [`collect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HostBank {
    /// The host bank number.
    pub bank: u8,
    /// `IA32_MCi_STATUS`.
    pub status: MciStatus,
    /// `IA32_MCi_ADDR`, or 0 when `ADDRV` is clear (it is not read then).
    pub addr: u64,
    /// `IA32_MCi_MISC`, or 0 when `MISCV` is clear (it is not read then).
    pub misc: MciMisc,
}

/// One host machine-check event: `IA32_MCG_STATUS` and every valid bank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostMce {
    /// The host's `IA32_MCG_STATUS`, all bits as read.
    pub mcg_status: McgStatus,
    /// The banks whose `STATUS.VAL` was set, in bank order.
    pub banks: heapless::Vec<HostBank, { ARCH_BANKS as usize }>,
}

/// Reads the host's `IA32_MCG_STATUS` and every bank below the host's count (at most 32),
/// keeping the valid ones. Reads `MCi_ADDR` only with `ADDRV` and `MCi_MISC` only with
/// `MISCV`, as the SDM allows.
///
/// Call it from the #MC handler on the CPU that took the machine check, then [`release`].
pub fn collect(msrs: &mut impl MsrAccess, host: &HostCapabilities) -> HostMce {
    let mcg_status = McgStatus::from_bits_retain(msrs.read(msr::IA32_MCG_STATUS));
    let mut banks = heapless::Vec::new();
    for bank in 0..host.readable_banks() {
        let status = MciStatus::from_bits_retain(msrs.read(msr::ia32_mci_status(bank)));
        if !status.contains(MciStatus::VAL) {
            continue;
        }
        let addr = if status.contains(MciStatus::ADDRV) {
            msrs.read(msr::ia32_mci_addr(bank))
        } else {
            0
        };
        let misc = if status.contains(MciStatus::MISCV) {
            msrs.read(msr::ia32_mci_misc(bank))
        } else {
            0
        };
        // Capacity is the architectural maximum and `readable_banks` never exceeds it, so
        // the push cannot fail; a failure would only drop a bank beyond bank 31.
        let _ = banks.push(HostBank {
            bank,
            status,
            addr,
            misc: MciMisc(misc),
        });
    }
    HostMce { mcg_status, banks }
}

/// Releases the banks [`collect`] read: writes 0 to each collected `MCi_STATUS`, then 0 to
/// `IA32_MCG_STATUS`, clearing `MCIP` so that the next machine check is not a shutdown.
pub fn release(msrs: &mut impl MsrAccess, event: &HostMce) {
    for bank in &event.banks {
        msrs.write(msr::ia32_mci_status(bank.bank), 0);
    }
    msrs.write(msr::IA32_MCG_STATUS, 0);
}

impl HostMce {
    /// The valid banks.
    pub fn banks(&self) -> &[HostBank] {
        &self.banks
    }
}
