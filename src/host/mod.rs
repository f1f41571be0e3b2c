//! The host side: the hardware MSR boundary, the host's capabilities, and the collector a
//! hypervisor's #MC handler runs.
//!
//! # Background
//! The hypervisor's own #MC handler runs first: it must read the host's banks before anything
//! else overwrites them, decide whether the error is fatal, and release the banks. vmce's
//! [`collect`] does the reading through [`MsrAccess`], the one trait that stands for the
//! hardware. `crate::arch::HardwareMsrs` implements it with `rdmsr`/`wrmsr`;
//! [`SimulatedHost`] implements it in software for tests and demos.
//!
//! Floor: host, on registers. Profiles check themselves against [`HostCapabilities`], never
//! the other way round; this `mod.rs` only declares and re-exports.

mod caps;
mod collect;
mod simulated;

pub use caps::{HostCapabilities, MsrAccess};
pub use collect::{HostBank, HostMce, collect, release};
pub use simulated::{RaiseOutcome, SimulatedHost};
