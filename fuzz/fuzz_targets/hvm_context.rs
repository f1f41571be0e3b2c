//! A whole Xen HVM context stream from arbitrary bytes, behind two selector bytes (profile,
//! vCPU count; the populated domain): the framing checked against a plain walk and re-written
//! through `HvmWriter`; every `VMCE_VCPU` record loaded by every loader release (4.2, 4.3,
//! 4.10) and compared with the checker's own decode of the payload under Xen's rules; every
//! stream that loads restored into a fresh and a populated domain, all or nothing, with its
//! `LoadNotes` compared with what the live vCPUs hold. The checks live in
//! `tests/record_checks`, which `tests/records/properties.rs` also runs on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/record_checks/mod.rs"]
mod record_checks;

fuzz_target!(|data: &[u8]| {
    if let Err(failure) = record_checks::check_hvm_context(data) {
        panic!("{failure}");
    }
});
