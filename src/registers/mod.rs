//! The Machine Check Architecture registers, named as the Intel SDM names them.
//!
//! # Background
//! SDM vol. 3B ch. 15 defines the global registers (`IA32_MCG_*`) and, per error-reporting
//! bank *i*, `IA32_MCi_CTL`, `IA32_MCi_STATUS`, `IA32_MCi_ADDR`, `IA32_MCi_MISC` (four
//! consecutive MSRs from 0x400) and, with CMCI, `IA32_MCi_CTL2` (from 0x280). Single-bit
//! flags are `bitflags` types; multi-bit fields (bank count, `EXT_CNT`, `MCACOD`, `MSCOD`,
//! the `MISC` address mode and LSB, the `CTL2` threshold) are typed accessors.
//!
//! Floor: the lowest. Nothing here imports another module of the crate ([`Vendor`], the
//! dialect a register is read in, lives here for that reason); this `mod.rs` only declares
//! and re-exports.

pub mod msr;

mod mcacod;
mod mcg;
mod mci;
mod names;
mod vendor;

pub use mcacod::{
    CacheLevel, CacheRequest, Mcacod, McacodClass, MemoryTransaction, TransactionType,
};
pub use mcg::{McgCap, McgExtCtl, McgStatus};
pub use mci::{AddressMode, MciCtl2, MciMisc, MciStatus, Mscod};
pub(crate) use names::write_joined;
pub use vendor::Vendor;
