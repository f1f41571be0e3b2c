//! Save and restore of one vCPU: encode and decode of its record in Xen's `VMCE_VCPU`
//! layout (release 4.10) and in vmce's native V1 and V2, against a plain copy of the same
//! state (`VcpuMceState` is `Copy`).
//!
//! The state saved is what each format can carry without loss: for Xen 4.10 and native V1,
//! an Intel+LMCE vCPU with CMCI enabled on both banks and `LMCE_EN` set; for native V2 the
//! same vCPU with a machine check in flight (`MCG_STATUS`, bank 1 and a pending #MC, the
//! longest V2 record in practice). Decoding is against an 8-vCPU Intel+LMCE destination.
//! The record sizes go to the summary as facts. Results are kept with `black_box(&result)`,
//! so that no copy of the returned value is measured.
//!
//! `domain_save/N`: [`Domain::save`] of an N-vCPU Intel domain, every vCPU's record and the
//! domain record (64 broken frames' worth of list, 8 of them used) read under the domain
//! lock, the consistent cut a stop-and-copy takes. Baseline `domain_save_baseline/copy/N`:
//! N plain copies of `VcpuMceState` and one of the broken-frame list, no lock.

mod common;

use common::{Cpus, OffsetMemory};

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use vmce::host::{HostBank, HostCapabilities};
use vmce::record::native::{self, NativeVersion};
use vmce::record::xen::{self, XenRelease};
use vmce::record::{LossPolicy, SavedVcpu};
use vmce::registers::{McgCap, McgStatus, MciMisc, MciStatus};
use vmce::{Domain, GuestMce, Profile, Vcpu, VcpuId, VcpuMceState, Vendor};

const PROFILE: Profile = Profile::IntelLmce;
const VCPUS: u32 = 8;
const SAVED: VcpuId = VcpuId(3);

/// vCPU 3 of an 8-vCPU domain, saved before and after an SRAR it consumed.
fn saved_states() -> (SavedVcpu, SavedVcpu) {
    let host = HostCapabilities::new(Vendor::Intel, McgCap::from_bits_retain(0x0F00_0C14));
    let vcpus: Vec<Vcpu> = (0..VCPUS).map(|_| Vcpu::new(PROFILE)).collect();
    let domain = Domain::new(PROFILE, &host, vcpus).expect("host backs profile");
    let vcpu = domain.vcpu(SAVED).expect("vCPU 3");
    for ctl2 in [0x280, 0x281] {
        assert_eq!(vcpu.wrmsr(ctl2, (1 << 30) | 1), vmce::WrmsrOutcome::Handled);
    }
    assert_eq!(vcpu.wrmsr(0x4D0, 1), vmce::WrmsrOutcome::Handled);
    let plain = domain.save().vcpu(SAVED).expect("vCPU 3");

    let bank = HostBank {
        bank: 1,
        status: MciStatus::from_bits_retain(0xBD80_0000_0000_0134),
        addr: 0x0412_3040,
        misc: MciMisc(0x86),
    };
    let error = GuestMce::from_host(
        &host,
        McgStatus::from_bits_retain(0x7),
        &bank,
        &OffsetMemory,
    )
    .expect("reflected");
    domain
        .inject(&error, Some(SAVED), &mut Cpus)
        .expect("consumer in domain");
    let in_flight = domain.save().vcpu(SAVED).expect("vCPU 3");
    assert!(in_flight.snapshot.pending);
    (plain, in_flight)
}

fn records(c: &mut Criterion) {
    common::load_average("loadavg_records");
    let (plain, in_flight) = saved_states();
    let mut group = c.benchmark_group("records");

    // Baseline: one copy of the registers (a save or a restore), and two (a round trip).
    let source = plain.snapshot.state;
    let mut copy = VcpuMceState::new(PROFILE);
    group.bench_function("baseline_memcpy", |b| {
        b.iter(|| *black_box(&mut copy) = *black_box(&source))
    });
    let mut back = VcpuMceState::new(PROFILE);
    group.bench_function("baseline_memcpy_round_trip", |b| {
        b.iter(|| {
            *black_box(&mut copy) = *black_box(&source);
            *black_box(&mut back) = *black_box(&copy);
        })
    });
    common::fact("bytes_memcpy", size_of::<VcpuMceState>());

    // Xen 4.10.
    let mut buf = [0u8; 64];
    let len = xen::encode(&plain, XenRelease::Xen4_10, LossPolicy::Refuse, &mut buf)
        .expect("Xen 4.10 carries it")
        .len;
    let xen_record = buf;
    let (decoded, _, _) =
        xen::decode(&xen_record[..len], PROFILE, VCPUS, XenRelease::Xen4_10).expect("decodes");
    assert_eq!(decoded, plain);
    common::fact("bytes_xen_4_10", len);
    group.bench_function("xen_4_10_encode", |b| {
        b.iter(|| {
            let encoded = xen::encode(
                black_box(&plain),
                XenRelease::Xen4_10,
                LossPolicy::Refuse,
                black_box(&mut buf),
            );
            black_box(&encoded);
        })
    });
    group.bench_function("xen_4_10_decode", |b| {
        b.iter(|| {
            let decoded = xen::decode(
                black_box(&xen_record[..len]),
                PROFILE,
                VCPUS,
                XenRelease::Xen4_10,
            );
            black_box(&decoded);
        })
    });
    group.bench_function("xen_4_10_round_trip", |b| {
        b.iter(|| {
            let len = xen::encode(
                black_box(&plain),
                XenRelease::Xen4_10,
                LossPolicy::Refuse,
                black_box(&mut buf),
            )
            .map_or(0, |encoding| encoding.len);
            xen::decode(black_box(&buf[..len]), PROFILE, VCPUS, XenRelease::Xen4_10)
        })
    });

    // Native V1 and V2.
    for (name, version, saved) in [
        ("native_v1", NativeVersion::V1, &plain),
        ("native_v2", NativeVersion::V2, &in_flight),
    ] {
        let mut buf = [0u8; native::MAX_VCPU_RECORD_BYTES];
        let len = native::encode_vcpu(saved, version, LossPolicy::Refuse, &mut buf)
            .expect("the version carries it")
            .len;
        let record = buf;
        let (decoded, _) =
            native::decode_vcpu(&record[..len], PROFILE, VCPUS, NativeVersion::NEWEST)
                .expect("decodes");
        assert_eq!(&decoded, saved);
        common::fact(&format!("bytes_{name}"), len);
        group.bench_function(format!("{name}_encode"), |b| {
            b.iter(|| {
                let encoded = native::encode_vcpu(
                    black_box(saved),
                    version,
                    LossPolicy::Refuse,
                    black_box(&mut buf),
                );
                black_box(&encoded);
            })
        });
        group.bench_function(format!("{name}_decode"), |b| {
            b.iter(|| {
                let decoded = native::decode_vcpu(
                    black_box(&record[..len]),
                    PROFILE,
                    VCPUS,
                    NativeVersion::NEWEST,
                );
                black_box(&decoded);
            })
        });
        group.bench_function(format!("{name}_round_trip"), |b| {
            b.iter(|| {
                let len = native::encode_vcpu(
                    black_box(saved),
                    version,
                    LossPolicy::Refuse,
                    black_box(&mut buf),
                )
                .map_or(0, |encoding| encoding.len);
                let decoded = native::decode_vcpu(
                    black_box(&buf[..len]),
                    PROFILE,
                    VCPUS,
                    NativeVersion::NEWEST,
                );
                black_box(&decoded);
            })
        });
    }
    group.finish();
}

fn domain_save(c: &mut Criterion) {
    let host = HostCapabilities::new(Vendor::Intel, McgCap::from_bits_retain(0x0F00_0C14));
    let mut group = c.benchmark_group("domain_save");
    for vcpus in [1usize, 64, 512] {
        let list: Vec<Vcpu> = (0..vcpus).map(|_| Vcpu::new(Profile::Intel)).collect();
        let domain = Domain::new(Profile::Intel, &host, list).expect("host backs profile");
        let error = GuestMce::from_host(
            &host,
            McgStatus::from_bits_retain(0x5),
            &HostBank {
                bank: 1,
                status: MciStatus::from_bits_retain(0xBD00_0000_0000_00C0),
                addr: 0x0412_3040,
                misc: MciMisc(0x86),
            },
            &OffsetMemory,
        )
        .expect("reflected");
        for frame in 0..8u64 {
            let mut error = error;
            error.guest_addr = vmce::GuestPhysAddr(frame << 12);
            domain.inject(&error, None, &mut Cpus).expect("injects");
            for vcpu in domain.vcpus() {
                vcpu.take_pending();
                vcpu.wrmsr(0x17A, 0);
            }
        }
        let mut out: Vec<SavedVcpu> = Vec::with_capacity(vcpus);
        group.bench_function(format!("{vcpus}"), |b| {
            b.iter(|| {
                out.clear();
                let save = black_box(&domain).save();
                out.extend(save.vcpus());
                let record = save.domain();
                drop(save);
                black_box((&out, &record));
            })
        });
        let states: Vec<VcpuMceState> = domain.vcpus().iter().map(Vcpu::state).collect();
        let frames = domain.broken_frames();
        let mut copies: Vec<VcpuMceState> = Vec::with_capacity(vcpus);
        group.bench_function(format!("baseline_copy/{vcpus}"), |b| {
            b.iter(|| {
                copies.clear();
                copies.extend(black_box(&states).iter().copied());
                let list = black_box(&frames).clone();
                black_box((&copies, &list));
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = records, domain_save
}
criterion_main!(benches);
