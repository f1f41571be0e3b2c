//! The host side: collecting the host's banks, classifying them, and the whole path from a
//! host error to what the guest reads. One test binary (`cargo test --test host`).
//!
//! - [`classify`]: the classes of docs/behaviour.md §4, on real vectors from QEMU, KVM and
//!   Xen's injector.
//! - [`pipeline`]: simulated host → collect → classify → translate → inject → guest reads,
//!   with only the MSR boundary mocked.
//! - [`properties`]: the same path against the plain tables of `tests/host_checks`, the
//!   stable mirror of the `host_reflect` fuzz target.

#[path = "../common/mod.rs"]
mod common;
#[path = "../host_checks/mod.rs"]
mod host_checks;

mod classify;
mod pipeline;
mod properties;
