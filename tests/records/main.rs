//! Save records (docs/behaviour.md §5). One test binary (`cargo test --test records`).
//!
//! - [`xen`]: Xen's `VMCE_VCPU` layouts byte for byte, and what Xen's loader accepts.
//! - [`hvm_context`]: Xen's HVM context streams.
//! - [`native`]: vmce's native V1/V2 vCPU and domain records.
//! - [`restore`]: a refused record changes nothing.
//! - [`live_migration`]: a machine check between pre-copy and stop-and-copy.
//! - [`properties`]: round trips through every format, and the stable mirror of the record
//!   fuzz targets (the checks of `tests/record_checks`).
//! - [`fixtures`]: the golden fixtures under `tests/fixtures/records/`.
//! - [`compatibility`]: the migration matrix, which the README's table is rendered from.

#[path = "../common/mod.rs"]
mod common;
#[path = "../record_checks/mod.rs"]
mod record_checks;

mod compatibility;
mod fixtures;
mod hvm_context;
mod live_migration;
mod native;
mod properties;
mod restore;
mod shared;
mod xen;
