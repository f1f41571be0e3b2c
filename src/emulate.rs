//! Guest `rdmsr`/`wrmsr` emulation of the MCA registers: pure functions over a register file
//! (the plain [`VcpuMceState`], or the atomics a [`crate::Vcpu`] keeps so that reads need no
//! lock).
//!
//! # Background
//! Floor: emulation, on state and registers (never on the vCPU storage that calls it). A read
//! is one function of the register file; a write is planned from the register, the value and
//! the vendor alone (`plan_write`), and only `MCG_STATUS` and `MCG_EXT_CTL`, whose writable
//! bits depend on `MCG_CAP`, are then decided against the stored registers
//! (`SerializedWrite::apply`, with writers serialized by the caller).
//!
//! Every access ends in one of three outcomes: handled (with a value for reads), not ours
//! (the hypervisor goes on with its own MSRs), or a #GP to raise in the guest. "count" below
//! is the vCPU's own `MCG_CAP` bank count, which is 2 unless the guest migrated in from an
//! older host: Xen's restore rule lets any count from 0 to 255 through
//! ([`crate::Profile::check_restored_caps`]).
//!
//! | access | behaviour |
//! |---|---|
//! | read `MCG_CAP` | the vCPU's value |
//! | write `MCG_CAP` | #GP (read-only) |
//! | read `MCG_STATUS` | stored value |
//! | write `MCG_STATUS` | stored; a reserved bit → #GP (`LMCE_S` is reserved without `LMCE_P`) |
//! | `MCG_CTL` | read all-ones with `CTL_P` (restored old guests), 0 without; write ignored |
//! | `MCi_CTL`, i < count, i < 32 | read all-ones; write ignored |
//! | `MCi_CTL`, count ≤ i < 32 | read 0; write ignored (a register a guest could once touch never faults) |
//! | `MCi_STATUS/ADDR/MISC`, i < 2, any count | read stored; write 0 clears; non-zero → #GP |
//! | `MCi_STATUS/ADDR/MISC`, 2 ≤ i < 32 | read 0; write 0 accepted; non-zero → #GP |
//! | any bank register, i ≥ 32 (index 0x480 on) | not ours, whatever the count (see below) |
//! | `MCi_CTL2`, Intel, i < 2, any count | `CMCI_EN` and threshold stored; a reserved bit → #GP |
//! | `MCi_CTL2`, Intel, 2 ≤ i < 32 | read 0; write ignored |
//! | `MCi_CTL2`, AMD | read 0; write ignored |
//! | `MCG_EXT_CTL` without `LMCE_P` | #GP |
//! | `MCG_EXT_CTL` with `LMCE_P` | only `LMCE_EN` writable; other bits → #GP |
//! | `P5_MC_ADDR` / `P5_MC_TYPE`, Intel | read bank 1 `ADDR` / `STATUS`; write #GP (read-only) |
//! | `P5_MC_ADDR` / `P5_MC_TYPE`, AMD | not ours |
//! | any other MSR | not ours |
//!
//! Writing `MCG_STATUS` with `MCIP` clear re-arms the vCPU: the next injection is delivered
//! instead of being reported as a shutdown.
//!
//! A count other than 2 changes only `MCG_CAP` and the `MCi_CTL` reads. With a count above
//! 32 the guest is told of banks whose registers would sit at 0x480 and beyond, where other
//! MSRs live (the VMX capability MSRs start at 0x480): vmce leaves those indices to the
//! hypervisor. Xen would emulate them as banks of such a guest; vmce deliberately does not.
//! With a count of 0 or 1 banks 0 and 1 still answer, and errors are still logged in bank 1,
//! which such a guest does not scan: it takes the #MC and reads `MCG_STATUS`, but finds no
//! bank holding the error.

use crate::nospec::{clamp_index, index_mask};
use crate::profile::{ERROR_BANK, GUEST_BANKS};
use crate::registers::msr::{BankRegister, McaMsr};
use crate::registers::{McgCap, McgExtCtl, McgStatus, MciCtl2, MciStatus, Vendor};
use crate::state::{VcpuMceState, writable_mcg_status};
use core::fmt;

/// Why a guest access raises #GP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GpCause {
    /// A write to a read-only register (`MCG_CAP`, `P5_MC_*`).
    ReadOnly,
    /// A write setting reserved bits.
    ReservedBits {
        /// The reserved bits that were set.
        bits: u64,
    },
    /// A non-zero write to `MCi_STATUS`, `MCi_ADDR` or `MCi_MISC` (only 0 may be written).
    NonZeroBankWrite,
    /// An access to a register the vCPU's `MCG_CAP` does not advertise (`MCG_EXT_CTL`
    /// without `LMCE_P`).
    NotAdvertised,
}

impl fmt::Display for GpCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpCause::ReadOnly => f.write_str("write to a read-only register"),
            GpCause::ReservedBits { bits } => write!(f, "reserved bits {bits:#x} set"),
            GpCause::NonZeroBankWrite => f.write_str("non-zero write to a bank error register"),
            GpCause::NotAdvertised => f.write_str("register not advertised in MCG_CAP"),
        }
    }
}

/// The result of an emulated `rdmsr`: the architectural three-way outcome every MSR exit
/// handler acts on (deliberately exhaustive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RdmsrOutcome {
    /// Emulated: return this value in EDX:EAX.
    Handled(u64),
    /// Not an MCA register of this vCPU's dialect: the hypervisor handles it.
    NotOurs,
    /// Raise #GP(0) in the guest.
    RaiseGp(GpCause),
}

/// The result of an emulated `wrmsr`: the architectural three-way outcome every MSR exit
/// handler acts on (deliberately exhaustive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WrmsrOutcome {
    /// Emulated (stored or ignored, as the register defines).
    Handled,
    /// Not an MCA register of this vCPU's dialect: the hypervisor handles it.
    NotOurs,
    /// Raise #GP(0) in the guest; nothing was changed.
    RaiseGp(GpCause),
}

/// The storage slot of a guest-chosen bank, or `None` for a bank without storage.
///
/// The decision is an ordinary comparison; the index used is clamped without a branch so
/// that a mispredicted comparison cannot read past the array (see [`crate::nospec`]).
#[inline]
fn stored_slot(bank: u8) -> Option<usize> {
    // The slot is computed without looking at the comparison's outcome: whichever way the
    // comparison is predicted, the index that reaches the array is in bounds.
    let slot = clamp_index(usize::from(bank), usize::from(GUEST_BANKS));
    (bank < GUEST_BANKS).then_some(slot)
}

/// One-register-at-a-time read access to a vCPU's machine-check registers: the plain
/// [`VcpuMceState`], or the lock-free copy a [`crate::Vcpu`] keeps for its `rdmsr` path.
///
/// # Invariants
/// `slot` arguments are below [`GUEST_BANKS`] (callers clamp them first); each method reads
/// one register, so a reader racing a writer sees every register either before or after
/// the write, never torn.
pub(crate) trait RegisterFile {
    /// The vendor dialect.
    fn vendor(&self) -> Vendor;
    /// `MCG_CAP`.
    fn mcg_cap(&self) -> McgCap;
    /// `MCG_STATUS`.
    fn mcg_status(&self) -> McgStatus;
    /// `MCG_EXT_CTL`.
    fn mcg_ext_ctl(&self) -> McgExtCtl;
    /// `MCi_CTL2` of stored bank `slot`.
    fn mci_ctl2(&self, slot: usize) -> MciCtl2;
    /// `STATUS`, `ADDR` or `MISC` of stored bank `slot`.
    fn bank(&self, slot: usize, register: BankRegister) -> u64;
}

/// A shared reference reads what it refers to (a [`crate::Vcpu`] hands its writers a
/// `&mut &` of its atomics).
impl<T: RegisterFile + ?Sized> RegisterFile for &T {
    #[inline]
    fn vendor(&self) -> Vendor {
        (**self).vendor()
    }
    #[inline]
    fn mcg_cap(&self) -> McgCap {
        (**self).mcg_cap()
    }
    #[inline]
    fn mcg_status(&self) -> McgStatus {
        (**self).mcg_status()
    }
    #[inline]
    fn mcg_ext_ctl(&self) -> McgExtCtl {
        (**self).mcg_ext_ctl()
    }
    #[inline]
    fn mci_ctl2(&self, slot: usize) -> MciCtl2 {
        (**self).mci_ctl2(slot)
    }
    #[inline]
    fn bank(&self, slot: usize, register: BankRegister) -> u64 {
        (**self).bank(slot, register)
    }
}

/// Register-at-a-time write access, for [`SerializedWrite::apply`] and a delivery: each
/// setter stores one register.
///
/// # Invariants
/// As [`RegisterFile`]; callers serialize writers (a [`crate::Vcpu`] holds its writer lock).
pub(crate) trait RegisterFileMut: RegisterFile {
    /// Stores `MCG_STATUS`.
    fn set_mcg_status(&mut self, value: McgStatus);
    /// Stores `MCG_EXT_CTL`.
    fn set_mcg_ext_ctl(&mut self, value: McgExtCtl);
    /// Stores `STATUS`, `ADDR` or `MISC` of stored bank `slot` (`CTL` is not stored).
    fn set_bank(&mut self, slot: usize, register: BankRegister, value: u64);
    /// Logs a new error's `status` into stored bank `slot` as the hardware does: with `OVER`
    /// added when the bank still holds a valid error. Returns whether it did.
    ///
    /// One read-modify-write of `STATUS`: a [`WritePlan::ClearBank`] store that another CPU
    /// makes without the writer lock lands either before it (no overflow) or after it.
    fn log_status(&mut self, slot: usize, status: MciStatus) -> bool;
}

/// `status`, with `OVER` when `previous` is a valid error.
#[inline]
pub(crate) fn logged_status(previous: MciStatus, status: MciStatus) -> MciStatus {
    if previous.contains(MciStatus::VAL) {
        status | MciStatus::OVER
    } else {
        status
    }
}

impl RegisterFile for VcpuMceState {
    #[inline]
    fn vendor(&self) -> Vendor {
        self.vendor
    }
    #[inline]
    fn mcg_cap(&self) -> McgCap {
        self.mcg_cap
    }
    #[inline]
    fn mcg_status(&self) -> McgStatus {
        self.mcg_status
    }
    #[inline]
    fn mcg_ext_ctl(&self) -> McgExtCtl {
        self.mcg_ext_ctl
    }
    #[inline]
    fn mci_ctl2(&self, slot: usize) -> MciCtl2 {
        self.mci_ctl2.get(slot).copied().unwrap_or(MciCtl2::empty())
    }
    #[inline]
    fn bank(&self, slot: usize, register: BankRegister) -> u64 {
        let Some(stored) = self.banks.get(slot) else {
            return 0;
        };
        match register {
            BankRegister::Status => stored.status.bits(),
            BankRegister::Addr => stored.addr,
            BankRegister::Misc => stored.misc,
            BankRegister::Ctl => 0,
        }
    }
}

/// The plain state as a writable register file: for the unit tests of the write paths.
#[cfg(test)]
impl RegisterFileMut for VcpuMceState {
    fn set_mcg_status(&mut self, value: McgStatus) {
        self.mcg_status = value;
    }
    fn set_mcg_ext_ctl(&mut self, value: McgExtCtl) {
        self.mcg_ext_ctl = value;
    }
    fn set_bank(&mut self, slot: usize, register: BankRegister, value: u64) {
        if let Some(bank) = self.banks.get_mut(slot) {
            match register {
                BankRegister::Status => bank.status = MciStatus::from_bits_retain(value),
                BankRegister::Addr => bank.addr = value,
                BankRegister::Misc => bank.misc = value,
                BankRegister::Ctl => {}
            }
        }
    }
    fn log_status(&mut self, slot: usize, status: MciStatus) -> bool {
        let Some(bank) = self.banks.get_mut(slot) else {
            return false;
        };
        let overflow = bank.status.contains(MciStatus::VAL);
        bank.status = logged_status(bank.status, status);
        overflow
    }
}

/// `read(slot)` for a stored bank, 0 beyond. No branch on the bank: the slot handed to
/// `read` and the value it returns are both masked, so the guest's bank number reaches an
/// array only clamped.
#[inline]
fn read_stored(bank: u8, read: impl FnOnce(usize) -> u64) -> u64 {
    let bank = usize::from(bank);
    let stored = index_mask(bank, usize::from(GUEST_BANKS));
    read(bank & stored) & stored as u64
}

/// `STATUS`, `ADDR` or `MISC` of any bank: the stored value for a stored bank, 0 beyond.
#[inline]
fn bank_register(state: &(impl RegisterFile + ?Sized), bank: u8, register: BankRegister) -> u64 {
    read_stored(bank, |slot| state.bank(slot, register))
}

/// Emulates a guest read of MSR `index`.
#[inline]
pub(crate) fn read(state: &(impl RegisterFile + ?Sized), index: u32) -> RdmsrOutcome {
    let Some(register) = McaMsr::decode(index) else {
        return RdmsrOutcome::NotOurs;
    };
    let intel = state.vendor() == Vendor::Intel;
    let value = match register {
        McaMsr::P5McAddr if intel => bank_register(state, ERROR_BANK, BankRegister::Addr),
        McaMsr::P5McType if intel => bank_register(state, ERROR_BANK, BankRegister::Status),
        McaMsr::P5McAddr | McaMsr::P5McType => return RdmsrOutcome::NotOurs,
        McaMsr::McgCap => state.mcg_cap().bits(),
        McaMsr::McgStatus => state.mcg_status().bits(),
        McaMsr::McgCtl if state.mcg_cap().contains(McgCap::CTL_P) => u64::MAX,
        McaMsr::McgCtl => 0,
        McaMsr::McgExtCtl if state.mcg_cap().contains(McgCap::LMCE_P) => state.mcg_ext_ctl().bits(),
        McaMsr::McgExtCtl => return RdmsrOutcome::RaiseGp(GpCause::NotAdvertised),
        McaMsr::Ctl2 { bank } if intel => read_stored(bank, |slot| state.mci_ctl2(slot).bits()),
        McaMsr::Ctl2 { .. } => 0,
        McaMsr::Bank {
            bank,
            register: BankRegister::Ctl,
        } => {
            if bank < state.mcg_cap().count() {
                u64::MAX
            } else {
                0
            }
        }
        McaMsr::Bank { bank, register } => bank_register(state, bank, register),
    };
    RdmsrOutcome::Handled(value)
}

impl VcpuMceState {
    /// What a guest `rdmsr` of MSR `index` reads from this state: the emulation a
    /// [`crate::Vcpu::rdmsr`] runs on its registers, on a plain copy (for inspection, models
    /// and measurements; a hypervisor's exit path uses the `Vcpu`).
    pub fn rdmsr(&self, index: u32) -> RdmsrOutcome {
        read(self, index)
    }
}

/// How a write to an MCA register is carried out, decided from the register, the value and
/// the vendor alone, before any stored register is looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum WritePlan {
    /// Nothing stored is read or changed: a read-only register, an ignored write, a
    /// non-zero bank write, a bank without storage.
    Done(WrmsrOutcome),
    /// Store 0 into one register of stored bank `slot`, and the write is handled: a single
    /// store whose outcome does not depend on the registers. [`crate::Vcpu::wrmsr`] does it
    /// without taking its lock.
    ClearBank {
        /// The stored bank, below [`GUEST_BANKS`].
        slot: usize,
        /// `STATUS`, `ADDR` or `MISC`.
        register: BankRegister,
    },
    /// Store `value` (no reserved bit set) into `MCi_CTL2` of stored bank `slot`: a single
    /// store whose outcome depends on the value alone, done without the lock like
    /// [`WritePlan::ClearBank`]. No other register depends on `MCi_CTL2`.
    StoreCtl2 {
        /// The stored bank, below [`GUEST_BANKS`].
        slot: usize,
        /// `CMCI_EN` and the threshold.
        value: MciCtl2,
    },
    /// The outcome depends on the stored `MCG_CAP`: run [`SerializedWrite::apply`] with
    /// writers serialized.
    Serialized(SerializedWrite),
}

/// A write whose writable bits depend on the stored `MCG_CAP`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum SerializedWrite {
    /// `MCG_STATUS` ← the value.
    McgStatus(u64),
    /// `MCG_EXT_CTL` ← the value.
    McgExtCtl(u64),
}

/// The [`WritePlan`] of a guest write of `value` to `register`.
#[inline]
pub(crate) fn plan_write(vendor: Vendor, register: McaMsr, value: u64) -> WritePlan {
    let intel = vendor == Vendor::Intel;
    let done = WritePlan::Done;
    match register {
        McaMsr::P5McAddr | McaMsr::P5McType if intel => {
            done(WrmsrOutcome::RaiseGp(GpCause::ReadOnly))
        }
        McaMsr::P5McAddr | McaMsr::P5McType => done(WrmsrOutcome::NotOurs),
        McaMsr::McgCap => done(WrmsrOutcome::RaiseGp(GpCause::ReadOnly)),
        McaMsr::McgCtl => done(WrmsrOutcome::Handled),
        McaMsr::Ctl2 { .. } if !intel => done(WrmsrOutcome::Handled),
        McaMsr::Ctl2 { bank } => {
            let requested = MciCtl2::from_bits_retain(value);
            let reserved = requested.reserved_bits();
            match stored_slot(bank) {
                // Banks without storage ignore every write, reserved bits included.
                None => done(WrmsrOutcome::Handled),
                Some(_) if reserved != 0 => done(WrmsrOutcome::RaiseGp(GpCause::ReservedBits {
                    bits: reserved,
                })),
                Some(slot) => WritePlan::StoreCtl2 {
                    slot,
                    value: requested,
                },
            }
        }
        McaMsr::Bank {
            register: BankRegister::Ctl,
            ..
        } => done(WrmsrOutcome::Handled),
        McaMsr::Bank { .. } if value != 0 => done(WrmsrOutcome::RaiseGp(GpCause::NonZeroBankWrite)),
        McaMsr::Bank { bank, register } => match stored_slot(bank) {
            Some(slot) => WritePlan::ClearBank { slot, register },
            None => done(WrmsrOutcome::Handled),
        },
        McaMsr::McgStatus => WritePlan::Serialized(SerializedWrite::McgStatus(value)),
        McaMsr::McgExtCtl => WritePlan::Serialized(SerializedWrite::McgExtCtl(value)),
    }
}

impl SerializedWrite {
    /// Checks the value against the stored `MCG_CAP` and stores it; on
    /// [`WrmsrOutcome::RaiseGp`] nothing is stored.
    #[inline]
    pub(crate) fn apply(self, state: &mut impl RegisterFileMut) -> WrmsrOutcome {
        let mcg_cap = state.mcg_cap();
        let (writable, value) = match self {
            SerializedWrite::McgStatus(value) => (writable_mcg_status(mcg_cap).bits(), value),
            SerializedWrite::McgExtCtl(_) if !mcg_cap.contains(McgCap::LMCE_P) => {
                return WrmsrOutcome::RaiseGp(GpCause::NotAdvertised);
            }
            SerializedWrite::McgExtCtl(value) => (McgExtCtl::LMCE_EN.bits(), value),
        };
        let reserved = value & !writable;
        if reserved != 0 {
            return WrmsrOutcome::RaiseGp(GpCause::ReservedBits { bits: reserved });
        }
        match self {
            SerializedWrite::McgStatus(_) => {
                state.set_mcg_status(McgStatus::from_bits_retain(value));
            }
            SerializedWrite::McgExtCtl(_) => {
                state.set_mcg_ext_ctl(McgExtCtl::from_bits_retain(value));
            }
        }
        WrmsrOutcome::Handled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profile;

    #[test]
    fn stored_slot_never_exceeds_storage() {
        for bank in 0..=u8::MAX {
            match stored_slot(bank) {
                Some(slot) => {
                    assert!(bank < GUEST_BANKS);
                    assert_eq!(slot, usize::from(bank));
                }
                None => assert!(bank >= GUEST_BANKS),
            }
        }
    }

    /// Spectre v1: every bank number a guest can name, through every MSR index of the MCA
    /// ranges, yields a slot inside the storage even on the path where the bounds check is
    /// (mis)predicted as passed: the slot is computed without the comparison.
    #[test]
    fn out_of_range_banks_never_reach_an_array() {
        for index in (0x280u32..0x2A0).chain(0x400..0x480).chain(0x0..0x10) {
            let bank = match McaMsr::decode(index) {
                Some(McaMsr::Ctl2 { bank } | McaMsr::Bank { bank, .. }) => bank,
                _ => continue,
            };
            let speculative = clamp_index(usize::from(bank), usize::from(GUEST_BANKS));
            assert!(speculative < usize::from(GUEST_BANKS), "{index:#x}");
            assert!(speculative < VcpuMceState::new(Profile::Intel).banks.len());
        }
        for bank in 0..=u8::MAX {
            assert!(clamp_index(usize::from(bank), usize::from(GUEST_BANKS)) < 2);
        }
    }

    #[test]
    fn rejected_write_changes_nothing() {
        let mut state = VcpuMceState::new(Profile::Intel);
        let before = state;
        assert_eq!(
            SerializedWrite::McgStatus(1 << 3).apply(&mut state),
            WrmsrOutcome::RaiseGp(GpCause::ReservedBits { bits: 1 << 3 })
        );
        assert_eq!(
            SerializedWrite::McgExtCtl(1).apply(&mut state),
            WrmsrOutcome::RaiseGp(GpCause::NotAdvertised)
        );
        assert_eq!(
            plan_write(Vendor::Intel, McaMsr::Ctl2 { bank: 1 }, 1 << 31),
            WritePlan::Done(WrmsrOutcome::RaiseGp(GpCause::ReservedBits {
                bits: 1 << 31
            }))
        );
        assert_eq!(state, before);
    }
}
