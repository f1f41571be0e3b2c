//! One Xen `VMCE_VCPU` record (descriptor and payload) from arbitrary bytes, behind two
//! selector bytes (profile, loader release, vCPU count; the populated domain): decoded by the
//! library and, independently, by the checker under Xen's documented rules, which must agree
//! (state, `LoadNotes`, refusals); re-encoded; then restored, as loaded and as the raw
//! payload said, into a fresh and a populated domain through every restore entry point, all
//! or nothing. The checks live in `tests/record_checks`, which `tests/records/properties.rs`
//! also runs on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/record_checks/mod.rs"]
mod record_checks;

fuzz_target!(|data: &[u8]| {
    if let Err(failure) = record_checks::check_xen_record(data) {
        panic!("{failure}");
    }
});
