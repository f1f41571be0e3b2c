//! A domain (1–4 vCPUs, the host capabilities, restored old-host caps and memory map the
//! input chooses) driven by an arbitrary sequence of ops — guest `rdmsr`/`wrmsr`, vCPUs
//! going up and down and `CR4.MCE`, multi-bank host errors through collect → most_severe →
//! from_host → inject, hand-made errors up to the 52-bit edge, broken-frame accesses, pending
//! takes, resets, saves in all five formats, restores of them, and hostile restores into the
//! live domain — each compared with the reference model of `tests/model` (see its module
//! docs for everything that is compared after every op).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/model/mod.rs"]
mod model;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = model::Harness::run(data, false) {
        panic!("vmce and the reference model disagree\n{violation}");
    }
});
