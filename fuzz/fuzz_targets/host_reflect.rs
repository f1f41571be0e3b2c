//! Host machine checks with arbitrary host capabilities and sets of banks, raised on a
//! simulated host and taken through collect, release, classify, most_severe and from_host
//! with an arbitrary guest-memory map, then injected into a small domain; every step is
//! judged by the plain tables of `tests/host_checks` (see its module docs for the list).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/host_checks/mod.rs"]
mod host_checks;

use host_checks::{Scenario, check};

fuzz_target!(|data: &[u8]| {
    let scenario = Scenario::decode(data);
    if let Err(violation) = check(&scenario) {
        panic!("{scenario:x?}: {violation}");
    }
});
