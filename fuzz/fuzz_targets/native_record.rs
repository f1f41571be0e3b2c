//! A stream of native records from arbitrary bytes, behind two selector bytes (profile,
//! loader version, vCPU count; the populated domain): every record decoded by the library
//! and, independently, by the checker (plain LEB128 under the documented rules), which must
//! agree, and re-encoded byte for byte; the stream walked as a toolstack walks it (a second
//! domain record is refused) and restored, as decoded and as the raw fields said, into a
//! fresh and a populated domain through every restore entry point, all or nothing. The
//! checks live in `tests/record_checks`, which `tests/records/properties.rs` also runs on
//! stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/record_checks/mod.rs"]
mod record_checks;

fuzz_target!(|data: &[u8]| {
    if let Err(failure) = record_checks::check_native_record(data) {
        panic!("{failure}");
    }
});
