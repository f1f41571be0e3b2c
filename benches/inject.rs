//! Injection of one virtual #MC into a domain of 1 to 4096 vCPUs.
//!
//! - `inject_broadcast`: Intel, an SRAO patrol-scrub error, every vCPU gets the #MC (vCPU 0
//!   the data).
//! - `inject_single_amd`: AMD, the consumer (the last vCPU) gets it.
//! - `inject_single_lmce`: Intel with LMCE, host `LMCE_S`, the consumer (the last vCPU, which
//!   opted in with `MCG_EXT_CTL.LMCE_EN`) gets it.
//!
//! After an injection every target has `MCIP` set, and a second injection would be a
//! shutdown outcome, so every measured injection goes into re-armed vCPUs. Re-arming uses
//! [`Vcpu::reset`] (plus `LMCE_EN` again for the LMCE consumer), which does the same work
//! whatever state it finds.
//!
//! - `batched/N` (the figure reported): K identical domains of N vCPUs are re-armed outside
//!   the timed region, then injected into one after the other inside it; the time per
//!   injection is the batch's time over K. K is 512/N for broadcast (at least 1) and 64 for
//!   single delivery, so the clock reads (`inject_baseline/timer_floor`) weigh at most
//!   1/K of their cost on each injection; at N ≥ 512 (K = 1) that is about 2 % of the figure.
//! - Cross-check, broadcast only: `rearm_inject/N` re-arms then injects in one loop with no
//!   clock read per call, `rearm/N` re-arms only; their difference is the injection
//!   (computed by `benches/summary.py`).
//!
//! - Event path, every group: the same batches, and after each injection the hypervisor's
//!   event step, `push_injection` (the [`vmce::Event`] built from the report and pushed):
//!   `batched_events/N` into a per-CPU [`vmce::EventRing`] (the injection-path queue),
//!   `batched_events_shared/N` into the shared [`EventQueue`]. The queue is drained untimed
//!   between chunks of at most its capacity, as a hypervisor drains it off the injection
//!   path; either over `batched/N` is the event path's cost.
//!
//! Baseline: `inject_baseline/store_per_vcpu/N`, one unlocked store into each of N slots of
//! a `Vcpu`'s size: the memory traffic no injection can avoid.

mod common;

use common::{Cpus, OffsetMemory};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};
use vmce::host::{HostBank, HostCapabilities};
use vmce::registers::{McgCap, McgStatus, MciMisc, MciStatus};
use vmce::{DeliveryMode, Domain, EventQueue, EventRing, GuestMce, Profile, Vcpu, VcpuId, Vendor};

const SIZES: [usize; 5] = [1, 8, 64, 512, 4096];

const MCG_EXT_CTL: u32 = 0x4D0;
const LMCE_EN: u64 = 1;

struct Case {
    group: &'static str,
    profile: Profile,
    host: HostCapabilities,
    error: GuestMce,
    mode: DeliveryMode,
}

fn error(host: &HostCapabilities, mcg_status: u64, status: u64) -> GuestMce {
    let bank = HostBank {
        bank: 1,
        status: MciStatus::from_bits_retain(status),
        addr: 0x0412_3040,
        misc: MciMisc(0x86),
    };
    GuestMce::from_host(
        host,
        McgStatus::from_bits_retain(mcg_status),
        &bank,
        &OffsetMemory,
    )
    .expect("a reflectable error")
}

fn cases() -> [Case; 3] {
    // A Skylake-SP-like Intel host (20 banks, CMCI_P, SER_P, LMCE_P) and an AMD host.
    let intel = HostCapabilities::new(Vendor::Intel, McgCap::from_bits_retain(0x0F00_0C14));
    let amd = HostCapabilities::new(Vendor::Amd, McgCap::from_bits_retain(0x17));
    [
        Case {
            group: "inject_broadcast",
            profile: Profile::Intel,
            host: intel,
            // SRAO patrol scrub: VAL UC EN MISCV ADDRV S, MCACOD 0xC0; MCIP|RIPV.
            error: error(&intel, 0x5, 0xBD00_0000_0000_00C0),
            mode: DeliveryMode::Broadcast,
        },
        Case {
            group: "inject_single_amd",
            profile: Profile::Amd,
            host: amd,
            // Uncorrected, poison, data read; MCIP|EIPV|RIPV.
            error: error(&amd, 0x7, 0xBC00_0800_0000_0134),
            mode: DeliveryMode::Single,
        },
        Case {
            group: "inject_single_lmce",
            profile: Profile::IntelLmce,
            host: intel,
            // SRAR data load: VAL UC EN MISCV ADDRV S AR, MCACOD 0x134; MCIP|EIPV|RIPV|LMCE_S.
            error: error(&intel, 0xF, 0xBD80_0000_0000_0134),
            mode: DeliveryMode::Local,
        },
    ]
}

struct Bench {
    domain: Domain<Vec<Vcpu>>,
    error: GuestMce,
    mode: DeliveryMode,
    consumer: Option<VcpuId>,
}

impl Bench {
    fn new(case: &Case, vcpus: usize) -> Bench {
        let list = (0..vcpus).map(|_| Vcpu::new(case.profile)).collect();
        let domain = Domain::new(case.profile, &case.host, list).expect("host backs profile");
        let last = VcpuId(u32::try_from(vcpus - 1).expect("vCPU id"));
        let consumer = (case.mode != DeliveryMode::Broadcast).then_some(last);
        let bench = Bench {
            domain,
            error: case.error,
            mode: case.mode,
            consumer,
        };
        bench.rearm();
        bench
    }

    /// Puts every vCPU the injection targets back to a state that takes a #MC.
    fn rearm(&self) {
        match self.consumer {
            None => {
                for vcpu in self.domain.vcpus() {
                    vcpu.reset();
                }
            }
            Some(id) => {
                let vcpu = self.domain.vcpu(id).expect("consumer");
                vcpu.reset();
                if self.mode == DeliveryMode::Local {
                    vcpu.wrmsr(MCG_EXT_CTL, LMCE_EN);
                }
            }
        }
    }

    fn inject(&self) -> vmce::InjectionReport {
        self.domain
            .inject(black_box(&self.error), self.consumer, &mut Cpus)
            .expect("consumer in domain")
    }

    /// The injection measured is the one named: delivered to its targets, no shutdown.
    fn check(&self) {
        self.rearm();
        let report = self.inject();
        let targets = match self.mode {
            DeliveryMode::Broadcast => self.domain.vcpus().len(),
            _ => 1,
        };
        assert_eq!(report.mode, self.mode);
        assert_eq!(report.delivered as usize, targets);
        assert_eq!(report.shutdown, 0);
    }
}

/// How many domains one timed batch injects into.
fn batch(mode: DeliveryMode, vcpus: usize) -> usize {
    match mode {
        DeliveryMode::Broadcast => (512 / vcpus).max(1),
        _ => 64,
    }
}

/// Re-arms every domain untimed, then times injections into them back to back.
fn batched(domains: &[Bench], iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let count = domains
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        for domain in &domains[..count] {
            domain.rearm();
        }
        let start = Instant::now();
        for domain in &domains[..count] {
            black_box(&domain.inject());
        }
        total += start.elapsed();
        left -= count as u64;
    }
    total
}

/// The queue the event rows push into (drained untimed between chunks).
static EVENTS: EventQueue<EVENT_CHUNK> = EventQueue::new();
const EVENT_CHUNK: usize = 128;

/// [`batched`], with the event step into a per-CPU ring after every injection.
fn batched_events(domains: &[Bench], iters: u64) -> Duration {
    let mut ring = EventRing::<{ EVENT_CHUNK + 1 }>::new();
    let (mut producer, mut consumer) = ring.split();
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let count = domains
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        for domain in &domains[..count] {
            domain.rearm();
        }
        for chunk in domains[..count].chunks(EVENT_CHUNK) {
            let start = Instant::now();
            for domain in chunk {
                let report = domain.inject();
                black_box(producer.push_injection(Some(1), &report, &domain.error));
            }
            total += start.elapsed();
            while consumer.pop().is_some() {}
        }
        left -= count as u64;
    }
    assert_eq!(
        consumer.dropped(),
        0,
        "the event ring must never fill in a timed batch"
    );
    total
}

/// [`batched`], with the event step into the shared queue after every injection.
fn batched_events_shared(domains: &[Bench], iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let count = domains
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        for domain in &domains[..count] {
            domain.rearm();
        }
        for chunk in domains[..count].chunks(EVENT_CHUNK) {
            let start = Instant::now();
            for domain in chunk {
                let report = domain.inject();
                black_box(EVENTS.push_injection(Some(1), &report, &domain.error));
            }
            total += start.elapsed();
            while EVENTS.pop().is_some() {}
        }
        left -= count as u64;
    }
    assert_eq!(
        EVENTS.dropped(),
        0,
        "the event queue must never fill in a timed batch"
    );
    total
}

fn inject(c: &mut Criterion) {
    common::load_average("loadavg_inject");
    for case in cases() {
        let mut group = c.benchmark_group(case.group);
        for vcpus in SIZES {
            let domains: Vec<Bench> = (0..batch(case.mode, vcpus))
                .map(|_| Bench::new(&case, vcpus))
                .collect();
            for domain in &domains {
                domain.check();
            }
            let targets = match case.mode {
                DeliveryMode::Broadcast => vcpus,
                _ => 1,
            };
            group.throughput(Throughput::Elements(targets as u64));
            group.bench_with_input(
                BenchmarkId::new("batched", vcpus),
                &domains,
                |b, domains| b.iter_custom(|iters| batched(domains, iters)),
            );
            group.bench_with_input(
                BenchmarkId::new("batched_events", vcpus),
                &domains,
                |b, domains| b.iter_custom(|iters| batched_events(domains, iters)),
            );
            group.bench_with_input(
                BenchmarkId::new("batched_events_shared", vcpus),
                &domains,
                |b, domains| b.iter_custom(|iters| batched_events_shared(domains, iters)),
            );
            if case.mode == DeliveryMode::Broadcast {
                let bench = &domains[0];
                group.bench_function(BenchmarkId::new("rearm_inject", vcpus), |b| {
                    b.iter(|| {
                        bench.rearm();
                        black_box(&bench.inject());
                    })
                });
                group.bench_function(BenchmarkId::new("rearm", vcpus), |b| {
                    b.iter(|| bench.rearm())
                });
            }
            for domain in &domains {
                domain.check();
            }
        }
        group.finish();
    }

    let mut group = c.benchmark_group("inject_baseline");
    for vcpus in SIZES {
        group.throughput(Throughput::Elements(vcpus as u64));
        let mut slots = vec![[0u64; size_of::<Vcpu>() / 8]; vcpus];
        group.bench_function(BenchmarkId::new("store_per_vcpu", vcpus), |b| {
            b.iter(|| {
                for slot in black_box(&mut slots).iter_mut() {
                    slot[1] = black_box(McgStatus::MCIP.bits());
                }
            })
        });
    }
    group.throughput(Throughput::Elements(1));
    group.bench_function("timer_floor", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                black_box(());
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = inject
}
criterion_main!(benches);
