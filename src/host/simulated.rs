//! A software host CPU's machine-check registers, for tests and demos.
//!
//! It stands exactly at the [`MsrAccess`] boundary: everything above it is the real code path.
//! Errors are raised the way QEMU's monitor `mce` command raises them on an emulated CPU.

use super::caps::{HostCapabilities, MsrAccess};
use crate::registers::msr::{ARCH_BANKS, BankRegister, McaMsr};
use crate::registers::{McgCap, McgStatus, MciStatus};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct SimulatedBank {
    ctl: u64,
    status: u64,
    addr: u64,
    misc: u64,
}

/// What raising an error on a [`SimulatedHost`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RaiseOutcome {
    /// The error was logged; for an uncorrected error a #MC is now due.
    Logged,
    /// A corrected error was not logged because the bank holds an uncorrected one.
    Ignored,
    /// An uncorrected error arrived while `MCIP` was set: the CPU shuts down.
    Shutdown,
    /// The bank does not exist on this host.
    NoSuchBank,
}

/// A host CPU's MCA registers in memory, implementing [`MsrAccess`].
///
/// Accesses to MSRs the host's `IA32_MCG_CAP` does not have are counted in
/// [`SimulatedHost::invalid_accesses`] (on hardware they would fault), so tests can prove
/// that vmce never makes one.
#[derive(Clone, Debug)]
pub struct SimulatedHost {
    caps: HostCapabilities,
    mcg_status: u64,
    mcg_ctl: u64,
    banks: [SimulatedBank; ARCH_BANKS as usize],
    invalid_accesses: u32,
    writes: u32,
}

impl SimulatedHost {
    /// A host with the given capabilities and empty banks.
    pub fn new(caps: HostCapabilities) -> Self {
        Self {
            caps,
            mcg_status: 0,
            mcg_ctl: 0,
            banks: [SimulatedBank::default(); ARCH_BANKS as usize],
            invalid_accesses: 0,
            writes: 0,
        }
    }

    /// The capabilities the host was made with.
    pub fn capabilities(&self) -> HostCapabilities {
        self.caps
    }

    /// Raises an error as QEMU's `mce cpu bank status mcg_status addr misc` does: an
    /// uncorrected error while `MCIP` is set shuts the CPU down; otherwise the bank is written,
    /// with `OVER` set when it already held a valid error, and `mcg_status` is loaded. A
    /// corrected error does not replace an uncorrected one.
    pub fn raise(
        &mut self,
        bank: u8,
        status: u64,
        mcg_status: u64,
        addr: u64,
        misc: u64,
    ) -> RaiseOutcome {
        let Some(old) = self
            .bank_of(bank)
            .map(|slot| MciStatus::from_bits_retain(slot.status))
        else {
            return RaiseOutcome::NoSuchBank;
        };
        if MciStatus::from_bits_retain(status).contains(MciStatus::UC) {
            if McgStatus::from_bits_retain(self.mcg_status).contains(McgStatus::MCIP) {
                return RaiseOutcome::Shutdown;
            }
            self.mcg_status = mcg_status;
        } else if old.contains(MciStatus::VAL | MciStatus::UC) {
            return RaiseOutcome::Ignored;
        }
        self.log(bank, status, addr, misc)
    }

    /// Logs an error in one more bank of the event being raised, as hardware does when one
    /// machine check involves several banks: no `MCIP` check, `MCG_STATUS` untouched, `OVER`
    /// when the bank already held a valid error.
    pub fn log(&mut self, bank: u8, status: u64, addr: u64, misc: u64) -> RaiseOutcome {
        if bank >= self.caps.readable_banks() {
            return RaiseOutcome::NoSuchBank;
        }
        let Some(slot) = self.banks.get_mut(usize::from(bank)) else {
            return RaiseOutcome::NoSuchBank;
        };
        let mut logged = MciStatus::from_bits_retain(status);
        if MciStatus::from_bits_retain(slot.status).contains(MciStatus::VAL) {
            logged |= MciStatus::OVER;
        }
        slot.status = logged.bits();
        slot.addr = addr;
        slot.misc = misc;
        RaiseOutcome::Logged
    }

    /// Reads a register directly, bypassing the access counters (for assertions).
    pub fn peek(&self, index: u32) -> Option<u64> {
        self.lookup(index)
    }

    /// Accesses to MSRs this host does not have.
    pub fn invalid_accesses(&self) -> u32 {
        self.invalid_accesses
    }

    /// Writes made through [`MsrAccess::write`].
    pub fn writes(&self) -> u32 {
        self.writes
    }

    fn bank_of(&self, bank: u8) -> Option<&SimulatedBank> {
        if bank < self.caps.readable_banks() {
            self.banks.get(usize::from(bank))
        } else {
            None
        }
    }

    fn lookup(&self, index: u32) -> Option<u64> {
        match McaMsr::decode(index)? {
            McaMsr::McgCap => Some(self.caps.mcg_cap().bits()),
            McaMsr::McgStatus => Some(self.mcg_status),
            McaMsr::McgCtl if self.caps.mcg_cap().contains(McgCap::CTL_P) => Some(self.mcg_ctl),
            McaMsr::Bank { bank, register } => {
                let slot = self.bank_of(bank)?;
                Some(match register {
                    BankRegister::Ctl => slot.ctl,
                    BankRegister::Status => slot.status,
                    BankRegister::Addr => slot.addr,
                    BankRegister::Misc => slot.misc,
                })
            }
            _ => None,
        }
    }
}

impl MsrAccess for SimulatedHost {
    fn read(&mut self, index: u32) -> u64 {
        match self.lookup(index) {
            Some(value) => value,
            None => {
                self.invalid_accesses = self.invalid_accesses.saturating_add(1);
                0
            }
        }
    }

    fn write(&mut self, index: u32, value: u64) {
        self.writes = self.writes.saturating_add(1);
        let caps = self.caps;
        let target = match McaMsr::decode(index) {
            Some(McaMsr::McgStatus) => Some(&mut self.mcg_status),
            Some(McaMsr::McgCtl) if caps.mcg_cap().contains(McgCap::CTL_P) => {
                Some(&mut self.mcg_ctl)
            }
            Some(McaMsr::Bank { bank, register }) if bank < caps.readable_banks() => self
                .banks
                .get_mut(usize::from(bank))
                .map(|slot| match register {
                    BankRegister::Ctl => &mut slot.ctl,
                    BankRegister::Status => &mut slot.status,
                    BankRegister::Addr => &mut slot.addr,
                    BankRegister::Misc => &mut slot.misc,
                }),
            _ => None,
        };
        match target {
            Some(register) => *register = value,
            None => self.invalid_accesses = self.invalid_accesses.saturating_add(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registers::Vendor;
    use crate::registers::msr;

    fn qemu_host() -> SimulatedHost {
        SimulatedHost::new(HostCapabilities::new(
            Vendor::Intel,
            McgCap::from_bits_retain(0x100_010A),
        ))
    }

    #[test]
    fn second_uncorrected_error_under_mcip_shuts_down() {
        let mut host = qemu_host();
        assert_eq!(
            host.raise(1, 0xBD00_0000_0000_00C0, 0x5, 0x1000, 0x86),
            RaiseOutcome::Logged
        );
        assert_eq!(
            host.raise(2, 0xBD00_0000_0000_00C0, 0x5, 0x2000, 0x86),
            RaiseOutcome::Shutdown
        );
    }

    #[test]
    fn overwritten_bank_gets_over() {
        let mut host = qemu_host();
        host.raise(3, 0x9000_0000_0000_0017, 0, 0, 0);
        host.raise(3, 0x9000_0000_0000_0017, 0, 0, 0);
        assert_eq!(
            host.peek(msr::ia32_mci_status(3)),
            Some(0xD000_0000_0000_0017)
        );
        host.raise(3, 0xBD00_0000_0000_00C0, 0x5, 0x1000, 0x86);
        assert_eq!(
            host.peek(msr::ia32_mci_status(3)),
            Some(0xFD00_0000_0000_00C0)
        );
        assert_eq!(
            host.raise(3, 0x9000_0000_0000_0017, 0, 0, 0),
            RaiseOutcome::Ignored
        );
    }

    #[test]
    fn absent_registers_are_counted_not_served() {
        let mut host = qemu_host();
        assert_eq!(host.read(msr::ia32_mci_status(10)), 0);
        host.write(msr::IA32_MCG_EXT_CTL, 1);
        assert_eq!(host.invalid_accesses(), 2);
        assert_eq!(host.raise(10, 0, 0, 0, 0), RaiseOutcome::NoSuchBank);
    }
}
