//! Which groups of state a record format carries.
//!
//! # Background
//! Floor: records (a leaf of it), on state. What a vCPU's snapshot holds beyond its defaults,
//! and what each format carries, as one set of flags ([`StateFields`]).

use crate::registers::write_joined;
use crate::state::{GuestBank, VcpuSnapshot};
use core::fmt;

bitflags::bitflags! {
    /// Groups of per-vCPU and per-domain state a record format may or may not carry.
    ///
    /// | flag | state |
    /// |---|---|
    /// | `MCI_CTL2` | `MCi_CTL2` of bank 0 or 1 (Intel `CMCI_EN` and threshold) |
    /// | `MCG_EXT_CTL` | `MCG_EXT_CTL.LMCE_EN` |
    /// | `MCG_STATUS` | `MCG_STATUS` (`MCIP` of a machine check in progress) |
    /// | `BANK1` | bank 1's `STATUS`, `ADDR`, `MISC` |
    /// | `PENDING` | a virtual #MC injected and not yet taken |
    /// | `BANK0` | bank 0, which vmce never fills and no format carries |
    /// | `BROKEN_FRAMES` | the domain's broken guest frames |
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct StateFields: u16 {
        /// `MCi_CTL2` of bank 0 or 1.
        const MCI_CTL2 = 1 << 0;
        /// `MCG_EXT_CTL`.
        const MCG_EXT_CTL = 1 << 1;
        /// `MCG_STATUS`.
        const MCG_STATUS = 1 << 2;
        /// Bank 1's registers.
        const BANK1 = 1 << 3;
        /// The pending #MC.
        const PENDING = 1 << 4;
        /// Bank 0's registers.
        const BANK0 = 1 << 5;
        /// The broken-frame list.
        const BROKEN_FRAMES = 1 << 6;
    }
}

impl StateFields {
    /// The groups of `snapshot` that hold something other than their default.
    #[inline]
    pub fn present_in(snapshot: &VcpuSnapshot) -> StateFields {
        let state = &snapshot.state;
        let [bank0, bank1] = state.banks;
        let mut present = StateFields::empty();
        present.set(
            StateFields::MCI_CTL2,
            state.mci_ctl2.iter().any(|ctl2| !ctl2.is_empty()),
        );
        present.set(StateFields::MCG_EXT_CTL, !state.mcg_ext_ctl.is_empty());
        present.set(StateFields::MCG_STATUS, !state.mcg_status.is_empty());
        present.set(StateFields::BANK1, bank1 != GuestBank::EMPTY);
        present.set(StateFields::PENDING, snapshot.pending);
        present.set(StateFields::BANK0, bank0 != GuestBank::EMPTY);
        present
    }
}

impl fmt::Display for StateFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (StateFields::MCI_CTL2, "MCi_CTL2"),
            (StateFields::MCG_EXT_CTL, "MCG_EXT_CTL"),
            (StateFields::MCG_STATUS, "MCG_STATUS"),
            (StateFields::BANK1, "bank 1"),
            (StateFields::PENDING, "the pending #MC"),
            (StateFields::BANK0, "bank 0"),
            (StateFields::BROKEN_FRAMES, "the broken frames"),
        ];
        let held = names
            .into_iter()
            .filter(|(flag, _)| self.contains(*flag))
            .map(|(_, name)| name);
        if !write_joined(f, held, ", ")? {
            f.write_str("nothing")?;
        }
        Ok(())
    }
}
