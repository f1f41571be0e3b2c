//! Guest MSR emulation: one `rdmsr`/`wrmsr` exit's worth of vmce work, per register class,
//! through [`Vcpu::rdmsr`] / [`Vcpu::wrmsr`] (the writer lock taken where the access needs
//! it), against an unlocked array load / store with a black-boxed index.
//!
//! Each access is consumed the way an MSR exit handler does: the outcome is matched into the
//! value for EDX:EAX (or a "not ours" / "#GP" code) and only that `u64` leaves the loop.
//! Handing the whole outcome enum to `black_box` instead measures a store-forwarding stall of
//! the benchmark's own making (about 5 ns here), not vmce.
//!
//! The `diag_*` rows split the cost: the same load/store under an uncontended
//! `spin::SpinMutex` (the lock a `Vcpu` holds), a sequence-lock read of the same slot (what a
//! lock-free read path would cost), and vmce's read emulation without the lock
//! (`VcpuMceState::rdmsr` on a plain state).

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use spin::mutex::SpinMutex;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use vmce::{Profile, RdmsrOutcome, Vcpu, VcpuMceState, WrmsrOutcome};

const MCG_CAP: u32 = 0x179;
const MCG_STATUS: u32 = 0x17A;
const MC1_STATUS: u32 = 0x405;
const MC1_CTL2: u32 = 0x281;
/// IA32_TIME_STAMP_COUNTER: not an MCA register.
const NOT_OURS: u32 = 0x10;
/// `CMCI_EN` and a threshold of 1.
const CTL2_VALUE: u64 = (1 << 30) | 1;

/// A small table: what the baseline measures is one load or store at a run-time index.
const SLOTS: usize = 32;

/// What the exit handler does with a read: the value for EDX:EAX, or a code for "not ours"
/// and "#GP" (never an MCA value here).
fn exit_value(outcome: RdmsrOutcome) -> u64 {
    match outcome {
        RdmsrOutcome::Handled(value) => value,
        RdmsrOutcome::NotOurs => 0xDEAD_0001,
        RdmsrOutcome::RaiseGp(_) => 0xDEAD_0002,
    }
}

/// What the exit handler does with a write: resume, hand over, or inject #GP.
fn exit_code(outcome: WrmsrOutcome) -> u64 {
    match outcome {
        WrmsrOutcome::Handled => 0,
        WrmsrOutcome::NotOurs => 1,
        WrmsrOutcome::RaiseGp(_) => 2,
    }
}

/// A sequence-locked table: readers retry while the sequence is odd or changed.
struct SeqLocked {
    sequence: AtomicU64,
    slots: [AtomicU64; SLOTS],
}

impl SeqLocked {
    fn read(&self, index: usize) -> u64 {
        loop {
            let before = self.sequence.load(Ordering::Acquire);
            let value = self.slots[index].load(Ordering::Relaxed);
            std::sync::atomic::fence(Ordering::Acquire);
            if before & 1 == 0 && self.sequence.load(Ordering::Relaxed) == before {
                return value;
            }
        }
    }
}

fn table() -> [u64; SLOTS] {
    core::array::from_fn(|i| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn msr(c: &mut Criterion) {
    common::load_average("loadavg_msr");
    let mut group = c.benchmark_group("msr");

    // Baselines: one load / one store at a run-time index, no lock.
    let loads = table();
    group.bench_function("baseline_load", |b| {
        let loads = black_box(&loads);
        b.iter(|| loads[black_box(5)])
    });
    let mut stores = table();
    group.bench_function("baseline_store", |b| {
        b.iter(|| {
            let stores = black_box(&mut stores);
            stores[black_box(5)] = black_box(0);
        })
    });

    // Where the time goes: the lock alone, and the emulation alone.
    let locked: SpinMutex<[u64; SLOTS]> = SpinMutex::new(table());
    group.bench_function("diag_locked_load", |b| {
        b.iter(|| black_box(&locked).lock()[black_box(5)])
    });
    group.bench_function("diag_locked_store", |b| {
        b.iter(|| black_box(&locked).lock()[black_box(5)] = black_box(0))
    });
    let seqlocked = SeqLocked {
        sequence: AtomicU64::new(0),
        slots: table().map(AtomicU64::new),
    };
    group.bench_function("diag_seqlock_load", |b| {
        b.iter(|| black_box(&seqlocked).read(black_box(5)))
    });
    let state = VcpuMceState::new(Profile::Intel);
    group.bench_function("diag_unlocked_emulate_read_mcg_cap", |b| {
        b.iter(|| exit_value(black_box(&state).rdmsr(black_box(MCG_CAP))))
    });

    // vmce, through the Vcpu: lock-free, or under the writer lock, as each access needs.
    let vcpu = Vcpu::new(Profile::Intel);
    let reads = [
        ("rdmsr_mcg_cap", MCG_CAP),
        ("rdmsr_mcg_status", MCG_STATUS),
        ("rdmsr_mc1_status", MC1_STATUS),
        ("rdmsr_mc1_ctl2", MC1_CTL2),
        ("rdmsr_not_ours", NOT_OURS),
    ];
    for (name, index) in reads {
        group.bench_function(name, |b| {
            b.iter(|| exit_value(black_box(&vcpu).rdmsr(black_box(index))))
        });
    }
    let writes = [
        ("wrmsr_mc1_status_0", MC1_STATUS, 0),
        ("wrmsr_mc1_ctl2", MC1_CTL2, CTL2_VALUE),
        ("wrmsr_not_ours", NOT_OURS, 0),
        ("wrmsr_gp_mcg_cap", MCG_CAP, 0),
        ("wrmsr_gp_mc1_status_nonzero", MC1_STATUS, 1),
    ];
    for (name, index, value) in writes {
        group.bench_function(name, |b| {
            b.iter(|| exit_code(black_box(&vcpu).wrmsr(black_box(index), black_box(value))))
        });
    }
    group.finish();

    // The outcomes measured are the ones named.
    assert_eq!(
        vcpu.rdmsr(MC1_CTL2),
        vmce::RdmsrOutcome::Handled(CTL2_VALUE)
    );
    assert_eq!(vcpu.rdmsr(NOT_OURS), vmce::RdmsrOutcome::NotOurs);
    assert!(matches!(
        vcpu.wrmsr(MCG_CAP, 0),
        vmce::WrmsrOutcome::RaiseGp(_)
    ));
    assert!(matches!(
        vcpu.wrmsr(MC1_STATUS, 1),
        vmce::WrmsrOutcome::RaiseGp(_)
    ));
    assert_eq!(vcpu.wrmsr(MC1_STATUS, 0), vmce::WrmsrOutcome::Handled);
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = msr
}
criterion_main!(benches);
