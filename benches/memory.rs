//! Memory: bytes of per-vCPU and per-domain state, printed and recorded for the summary
//! (no timing). `tests/emulation/memory.rs` asserts the budgets on every test run.

mod common;

use std::mem::size_of;
use vmce::{BrokenFrames, Domain, Vcpu, VcpuMceState, VcpuSnapshot};

fn main() {
    // `cargo bench -- <filter>` and `cargo test --benches` pass arguments; this bench has
    // nothing to filter and runs in microseconds.
    let vcpu = size_of::<Vcpu>();
    let domain = size_of::<Domain<&[Vcpu]>>();
    common::fact("size_vcpu", vcpu);
    common::fact("size_vcpu_state", size_of::<VcpuMceState>());
    common::fact("size_vcpu_snapshot", size_of::<VcpuSnapshot>());
    common::fact("size_domain", domain);
    common::fact("size_domain_vec", size_of::<Domain<Vec<Vcpu>>>());
    common::fact("size_broken_frames", size_of::<BrokenFrames>());
    // The integrator's broken-frame capacity (`Domain<S, N>`): 8 bytes a frame.
    common::fact("size_domain_frames_0", size_of::<Domain<&[Vcpu], 0>>());
    common::fact("size_domain_frames_512", size_of::<Domain<&[Vcpu], 512>>());
    for vcpus in [1usize, 8, 64, 512, 4096] {
        common::fact(&format!("size_domain_total_{vcpus}"), domain + vcpus * vcpu);
    }
    common::load_average("loadavg_memory");
}
