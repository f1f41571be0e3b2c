//! The lower floors: registers, profiles, the plain vCPU state, guest MSR emulation and the
//! vCPU storage. One test binary (`cargo test --test emulation`).
//!
//! - [`profiles`]: the guest's capabilities come from the profile, never the host
//!   (docs/behaviour.md §2).
//! - [`msr_emulation`]: every guest `rdmsr`/`wrmsr`, row by row (docs/behaviour.md §3).
//! - [`memory`]: the size budget of a vCPU and of a domain's own state.
//! - [`nospec_codegen`]: the guest-chosen bank index is masked in the release machine code.

#[path = "../common/mod.rs"]
mod common;

mod memory;
mod msr_emulation;
mod nospec_codegen;
mod profiles;
