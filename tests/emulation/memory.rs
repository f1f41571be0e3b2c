//! Memory budget of vmce's state, checked on every test run (`benches/memory.rs` prints the
//! same figures next to the timings; BENCHMARKS.md explains them).
//!
//! - Per vCPU: a [`Vcpu`] is at most 128 bytes, its lock and pending flag included (two cache
//!   lines at most; [`vmce::vcpu::VCPU_SIZE_LIMIT`]).
//! - Per domain: the domain's own state, outside its vCPU storage, is at most
//!   [`DOMAIN_SIZE_LIMIT`] bytes (16 cache lines) at the default broken-frame capacity and
//!   does not depend on the vCPU count. Most of it is the fixed-capacity broken-frame list
//!   ([`vmce::broken::BROKEN_FRAMES_DEFAULT`] frames), which costs 8 bytes per frame of the
//!   capacity the integrator picks (`Domain<S, N>`) over a fixed [`DOMAIN_FIXED_BYTES`]. A
//!   domain of `n` vCPUs therefore costs at most `DOMAIN_FIXED_BYTES + 8 N + 128 n` bytes,
//!   whatever storage the hypervisor picks for the vCPUs (a slice, a `Vec`, a `Box<[Vcpu]>`
//!   or an array; vmce itself allocates nothing).

use std::mem::size_of;
use vmce::broken::BROKEN_FRAMES_DEFAULT;
use vmce::vcpu::VCPU_SIZE_LIMIT;
use vmce::{BrokenFrames, Domain, Vcpu, VcpuMceState};

/// The budget for a domain's own state, excluding its vCPUs, at the default capacity.
const DOMAIN_SIZE_LIMIT: usize = 1024;

/// A domain's own state beyond 8 bytes per broken frame of its capacity: the profile, the
/// storage handle, the lock, the list's length and overflow mark.
const DOMAIN_FIXED_BYTES: usize = 64;

#[test]
fn vcpu_fits_in_128_bytes_with_its_lock() {
    let size = size_of::<Vcpu>();
    assert!(size <= 128, "Vcpu is {size} bytes");
    assert_eq!(VCPU_SIZE_LIMIT, 128);
    // The lock and the pending flag are what the Vcpu adds to the saved registers.
    assert!(size > size_of::<VcpuMceState>(), "{size}");
}

#[test]
fn domain_state_is_bounded_and_independent_of_the_vcpu_count() {
    let borrowed = size_of::<Domain<&[Vcpu]>>();
    let owned = size_of::<Domain<Vec<Vcpu>>>();
    let boxed = size_of::<Domain<Box<[Vcpu]>>>();
    for size in [borrowed, owned, boxed] {
        assert!(size <= DOMAIN_SIZE_LIMIT, "Domain is {size} bytes");
    }
    // An inline array only adds its vCPUs.
    assert!(size_of::<Domain<[Vcpu; 4]>>() <= DOMAIN_SIZE_LIMIT + 4 * size_of::<Vcpu>());
    // The broken-frame list is the bulk of it, and it is bounded.
    assert!(size_of::<BrokenFrames>() <= BROKEN_FRAMES_DEFAULT * 8 + 16);
}

/// The integrator's broken-frame capacity costs 8 bytes a frame, nothing else.
#[test]
fn broken_frame_capacity_costs_eight_bytes_a_frame() {
    let at = [
        (0, size_of::<Domain<&[Vcpu], 0>>()),
        (64, size_of::<Domain<&[Vcpu], 64>>()),
        (512, size_of::<Domain<&[Vcpu], 512>>()),
        (4096, size_of::<Domain<&[Vcpu], 4096>>()),
    ];
    for (capacity, size) in at {
        assert!(
            size <= DOMAIN_FIXED_BYTES + 8 * capacity,
            "capacity {capacity}: {size} bytes"
        );
    }
    let (_, empty) = at[0];
    let (_, large) = at[3];
    assert_eq!(large - empty, 8 * 4096);
    assert_eq!(size_of::<Domain<&[Vcpu]>>(), at[1].1, "the default is 64");
}

#[test]
fn whole_domain_cost_is_linear_in_vcpus() {
    for vcpus in [1usize, 8, 64, 512, 4096] {
        let total = size_of::<Domain<&[Vcpu]>>() + vcpus * size_of::<Vcpu>();
        assert!(
            total <= DOMAIN_SIZE_LIMIT + 128 * vcpus,
            "{vcpus} vCPUs: {total} bytes"
        );
    }
}
