//! # vmce: a virtual Machine Check Architecture for x86 hypervisors, the Xen way
//!
//! vmce gives each vCPU of a guest a well-defined machine-check architecture that never
//! depends on the host, and reflects host memory errors into the guest that owns the memory.
//!
//! - **Guest capabilities are a profile** ([`Profile`]): `MCG_CTL` absent, `MCi_CTL` all ones,
//!   two banks with bank 0 reserved and errors in bank 1, `MSCOD` masked, `CMCI_P` advertised
//!   but never injected. Checking the profile against the host ([`Profile::check_host`]) is
//!   separate and fails loudly.
//! - **MSR emulation** ([`Vcpu::rdmsr`], [`Vcpu::wrmsr`]): a three-way outcome, handled / not
//!   ours / #GP, for every MCA register ([`emulate`] has the table).
//! - **Reflection** of host machine checks: [`host::collect`] reads the host banks through
//!   the [`host::MsrAccess`] boundary, [`classify`] decides, [`GuestMce::from_classified`]
//!   translates the address through the hypervisor's [`GuestMemory`], and
//!   [`Domain::inject`] ([`delivery`]) delivers to all vCPUs that are up (Intel), to one (LMCE, AMD),
//!   skipping vCPUs the guest has not brought up and reporting every vCPU that cannot take
//!   it instead of dropping it.
//! - **Migration records** ([`record`]): Xen's `VMCE_VCPU` layouts byte for byte
//!   ([`record::xen`], [`record::hvm`]) and versioned native records ([`record::native`])
//!   whose V2 carries a machine check in flight and the domain's [`broken`] frames. Saving to
//!   a format that would lose state is refused; a save is one consistent cut of the domain
//!   ([`Domain::save`]); restoring checks everything and is all or nothing
//!   ([`Domain::restore`]).
//! - **Events** ([`events`]): each of those decisions as one [`Event`] (QMP `MEMORY_FAILURE`
//!   vocabulary, one mcelog-style line, serde), queued without blocking in an [`EventRing`] (one per injecting CPU) or a shared
//!   [`EventQueue`], which the hypervisor drains when it likes.
//!
//! The portable core (everything outside [`arch`]) has no `unsafe`, allocates nothing and
//! never panics on input; [`arch`] holds the real `rdmsr`/`wrmsr`/`cpuid`.
//!
//! ## Integration, in three places
//! ```
//! use vmce::{Domain, GuestCpus, GuestMce, GuestMemory, GuestFrame, HostFrame, Profile,
//!            RdmsrOutcome, Vcpu, VcpuId};
//! use vmce::host::{HostCapabilities, SimulatedHost, collect, release};
//! use vmce::registers::McgCap;
//! use vmce::classify::Disposition;
//!
//! // Boot: the host's capabilities (vmce::arch::host_capabilities() on hardware).
//! let host = HostCapabilities::new(vmce::Vendor::Intel, McgCap::from_bits_retain(0x0100_0C0A));
//! // Domain creation: one Vcpu per vCPU, under a profile the host can back.
//! let domain = Domain::new(Profile::Intel, &host, [Vcpu::new(Profile::Intel), Vcpu::new(Profile::Intel)])?;
//!
//! // 1. MSR exit path.
//! match domain.vcpus()[1].rdmsr(0x179) {
//!     RdmsrOutcome::Handled(value) => assert_eq!(value, 0x0100_0C02),
//!     RdmsrOutcome::NotOurs => { /* the hypervisor's own MSRs */ }
//!     RdmsrOutcome::RaiseGp(_) => { /* inject #GP(0) */ }
//! }
//!
//! // 2. Host #MC handler: collect, classify, translate, inject.
//! # let mut msrs = SimulatedHost::new(host);
//! # msrs.raise(1, 0xBD00_0000_0000_00C0, 0x5, 0x0412_3040, 0x86);
//! struct P2m;
//! impl GuestMemory for P2m {
//!     fn guest_frame(&self, host: HostFrame) -> Option<GuestFrame> { host.0.checked_sub(0x4000).map(GuestFrame) }
//! }
//! struct Cpus;
//! impl GuestCpus for Cpus {
//!     fn is_up(&self, _: VcpuId) -> bool { true }                 // started, not offline
//!     fn machine_check_enabled(&self, _: VcpuId) -> bool { true } // the guest's CR4.MCE
//! }
//! let event = collect(&mut msrs, &host);
//! release(&mut msrs, &event);
//! if let Some((bank, Disposition::Reflect(class))) = event.most_severe(&host) {
//!     let error = GuestMce::from_classified(class, event.mcg_status, &bank, &P2m)?;
//!     let report = domain.inject(&error, None, &mut Cpus)?;
//!     assert_eq!(report.delivered, 2);
//! }
//!
//! // 3. VM entry: deliver vector 18 when one is pending.
//! assert!(domain.vcpus()[0].take_pending());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// `std` only for unit tests and the loom model-checking build (src/sync.rs).
#![cfg_attr(not(any(test, loom)), no_std)]
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[path = "../arch/mod.rs"]
pub mod arch;

pub mod address;
pub mod broken;
pub mod classify;
pub mod delivery;
pub mod domain;
pub mod emulate;
pub mod events;
pub mod host;
pub mod inject_direct;
pub mod nospec;
pub mod profile;
pub mod record;
pub mod reflect;
pub mod registers;
pub mod state;
mod sync;
pub mod vcpu;

pub use address::{GuestFrame, GuestMemory, GuestPhysAddr, HostFrame, HostPhysAddr};
pub use broken::BrokenFrames;
pub use delivery::{
    DeliveryMode, DowngradeReason, GuestCpus, InjectError, InjectionReport, ShutdownReason,
    VcpuOutcome,
};
pub use domain::{Domain, DomainSave};
pub use emulate::{GpCause, RdmsrOutcome, WrmsrOutcome};
pub use events::{Event, EventConsumer, EventProducer, EventQueue, EventRing, MemoryFailure};
pub use inject_direct::{DirectError, DirectMce};
pub use profile::{Profile, ProfileError};
pub use reflect::{Access, GuestMce, NotReflected};
pub use registers::Vendor;
pub use state::{CheckedSnapshot, VcpuId, VcpuMceState, VcpuSnapshot};
pub use vcpu::Vcpu;
