//! Save and restore records for live migration: Xen's exact HVM layout and vmce's own
//! versioned records.
//!
//! # Background
//! A guest that migrates must keep seeing the same machine-check architecture. Xen saves
//! one `VMCE_VCPU` record per vCPU (typecode 18) that grew over three releases (caps; then
//! the two `MCi_CTL2`; then `MCG_EXT_CTL`), and it saves neither `MCG_STATUS`, nor the bank
//! contents, nor a pending #MC: an error reflected while the guest migrates is lost. vmce
//! reads and writes Xen's layout exactly ([`xen`], [`hvm`]) and adds native records
//! ([`native`]) whose version 2 carries what Xen drops.
//!
//! Two rules govern every format (seeds 001 and 003 of the project's history):
//! - **Source conservative, destination permissive.** Going back, write the oldest form the
//!   destination understands, and refuse ([`RecordError::WouldLose`]) when that form cannot
//!   carry the state, unless the caller asks for a lossy save ([`LossPolicy::Allow`]), which
//!   then reports exactly what it dropped ([`Encoding::dropped`]). Coming forward, read every
//!   older form and fill what it lacks with the documented defaults: `MCG_STATUS` 0, bank 1
//!   empty, no pending #MC, no broken frames, `MCi_CTL2` and `MCG_EXT_CTL` 0.
//! - **Records are untrusted input.** Every decoder checks every field against the
//!   destination's profile and vCPU count and returns a typed [`RecordError`] or an
//!   already-checked vCPU state ([`crate::state::CheckedSnapshot`]), which restores without
//!   failing ([`crate::Vcpu::restore`]); a domain restore is all or nothing
//!   ([`crate::Domain::restore`]).
//!
//! Within that, Xen's formats load as Xen loads them, no stricter and no looser:
//! - what a Xen loader of the same release takes, vmce takes: any `VMCE_VCPU` payload
//!   length up to the loader's own, zero-extended ([`xen`]); header, records and END of a
//!   context stream framed as Xen frames them, bytes after END ignored ([`hvm`]);
//! - bits Xen stores without checking (`MCi_CTL2` reserved bits, `MCG_EXT_CTL` beyond
//!   `LMCE_EN`) are dropped, not refused, and the decoder reports them in a [`LoadNotes`];
//! - what Xen refuses, vmce refuses: a longer payload, a header of another length, magic or
//!   version, capability bits outside the profile, `LMCE_P` for a loader before 4.10.
//!
//! vmce's own records stay strict: its writer never produces such bits, so a native record
//! that carries them is refused. The capability rule is shared by every format
//! ([`crate::Profile::check_restored_caps`]): any bank count from 0 to 255 and `CTL_P` are
//! tolerated, every other bit outside the profile is refused.
//!
//! | what | Xen 4.2 | Xen 4.3 | Xen 4.10 | native V1 | native V2 |
//! |---|---|---|---|---|---|
//! | `MCG_CAP` | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | `MCi_CTL2`, banks 0 and 1 | | ✓ | ✓ | ✓ | ✓ |
//! | `MCG_EXT_CTL` | | | ✓ | ✓ | ✓ |
//! | `MCG_STATUS`, bank 1, pending #MC | | | | | ✓ |
//! | profile, LMCE opt-in, broken frames (domain record) | | | | | ✓ |
//!
//! Floor: records, the top. The formats ([`xen`], [`hvm`], [`native`]) stand on the shared
//! leaves `fields` ([`StateFields`]), `wire` (constants of the layouts), `error` (the errors
//! of each layer: [`HvmError`], [`NativeError`], under the one [`RecordError`]) and `encode`
//! ([`LossPolicy`], [`Encoding`]), and below them on the domain, the state and the
//! broken-frame list; this `mod.rs` only declares and re-exports.

mod encode;
mod error;
mod fields;
pub mod hvm;
pub mod native;
mod wire;
pub mod xen;

pub use crate::domain::{RestoreError, SavedDomain, SavedVcpu};
pub use crate::state::StateError;
pub use encode::{Encoding, LossPolicy};
pub use error::{HvmError, NativeError, RecordError};
pub use fields::StateFields;
pub use xen::LoadNotes;
