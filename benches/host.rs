//! Host collection and classification of one error on a 32-bank host: what the
//! hypervisor's #MC handler spends in vmce before it injects.
//!
//! `pipeline_simulated`: [`collect`] on a [`SimulatedHost`] with `MCG_CAP` count 32 and one
//! SRAO error in bank 7, then [`HostMce::most_severe`] and [`GuestMce::from_classified`]. `collect`
//! only reads (nothing is released), so every iteration sees the same error.
//!
//! The simulated host decodes every MSR index it is asked for; `pipeline_flat` runs the same
//! pipeline over an `MsrAccess` that is a flat array, to show vmce's own share. On hardware
//! each of the 35 reads is a real `rdmsr` instead, which costs far more than either.
//!
//! Baseline: `baseline_array_reads`, the same number of values (35: `MCG_STATUS`, 32
//! `MCi_STATUS`, the valid bank's `ADDR` and `MISC`) read from an array at run-time indices.

mod common;

use common::OffsetMemory;

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use vmce::classify::Disposition;
use vmce::host::{HostCapabilities, HostMce, MsrAccess, SimulatedHost, collect};
use vmce::registers::McgCap;
use vmce::{GuestMce, Vendor};

/// SER_P, TES_P, CMCI_P, 32 banks.
const HOST_CAP: u64 = 0x0100_0C20;
const BANKS: usize = 32;
/// MCG_STATUS, every bank's STATUS, ADDR and MISC of the one valid bank.
const READS: usize = 1 + BANKS + 2;
const ERROR_BANK: u8 = 7;
/// SRAO patrol scrub: VAL UC EN MISCV ADDRV S, MCACOD 0xC0 (MSCOD 0x0010).
const SRAO_STATUS: u64 = 0xBD00_0000_0010_00C0;

/// The host's MCA registers as one flat array: `MCi_*` at `index - 0x400`, `MCG_STATUS`
/// beside them.
struct FlatMsrs {
    mcg_status: u64,
    banks: [u64; 4 * BANKS],
}

impl MsrAccess for FlatMsrs {
    fn read(&mut self, index: u32) -> u64 {
        let slot = index.wrapping_sub(0x400) as usize;
        self.banks.get(slot).copied().unwrap_or(self.mcg_status)
    }

    fn write(&mut self, index: u32, value: u64) {
        let slot = index.wrapping_sub(0x400) as usize;
        match self.banks.get_mut(slot) {
            Some(register) => *register = value,
            None => self.mcg_status = value,
        }
    }
}

fn pipeline(msrs: &mut impl MsrAccess, host: &HostCapabilities) -> Option<GuestMce> {
    let event: HostMce = collect(msrs, host);
    match event.most_severe(host) {
        Some((bank, Disposition::Reflect(class))) => {
            GuestMce::from_classified(class, event.mcg_status, &bank, &OffsetMemory).ok()
        }
        _ => None,
    }
}

fn host(c: &mut Criterion) {
    common::load_average("loadavg_host");
    let caps = HostCapabilities::new(Vendor::Intel, McgCap::from_bits_retain(HOST_CAP));
    assert_eq!(usize::from(caps.readable_banks()), BANKS);
    let mut simulated = SimulatedHost::new(caps);
    simulated.raise(ERROR_BANK, SRAO_STATUS, 0x5, 0x0412_3040, 0x86);
    let mut flat = FlatMsrs {
        mcg_status: 0x5,
        banks: [0; 4 * BANKS],
    };
    let base = 4 * usize::from(ERROR_BANK);
    flat.banks[base + 1] = SRAO_STATUS;
    flat.banks[base + 2] = 0x0412_3040;
    flat.banks[base + 3] = 0x86;

    // The pipeline measured is the one named: one SRAO error, translated.
    for guest in [pipeline(&mut simulated, &caps), pipeline(&mut flat, &caps)] {
        let guest = guest.expect("reflected");
        assert_eq!(guest.guest_addr.0, 0x0012_3040);
        assert_eq!(guest.guest_status().bits(), 0xBD00_0000_0000_00C0);
    }
    assert_eq!(simulated.invalid_accesses(), 0);

    let mut group = c.benchmark_group("host");
    let values: [u64; READS] = core::array::from_fn(|i| i as u64 * 3);
    group.bench_function("baseline_array_reads", |b| {
        let values = black_box(&values);
        b.iter(|| {
            let mut sum = 0u64;
            for i in 0..READS {
                sum = sum.wrapping_add(values[black_box(i)]);
            }
            sum
        })
    });
    group.bench_function("pipeline_simulated", |b| {
        b.iter(|| {
            let guest = pipeline(black_box(&mut simulated), black_box(&caps));
            black_box(&guest);
        })
    });
    group.bench_function("pipeline_flat", |b| {
        b.iter(|| {
            let guest = pipeline(black_box(&mut flat), black_box(&caps));
            black_box(&guest);
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = host
}
criterion_main!(benches);
