//! Bad input never panics, and the guest-visible invariants hold after every step.

mod common;
mod model;

use model::{Model, Op, SaveFormat};

use proptest::prelude::*;
use vmce::address::{GuestPhysAddr, HostPhysAddr};
use vmce::classify::{Disposition, classify};
use vmce::host::HostCapabilities;
use vmce::registers::{McgCap, McgStatus, MciMisc, MciStatus};
use vmce::{GuestCpus, GuestMce, Profile, VcpuId, VcpuOutcome, Vendor};

fn msr_index() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => prop::sample::select(vec![0x0u32, 0x1, 0x179, 0x17A, 0x17B, 0x4D0, 0x405, 0x406, 0x407, 0x281, 0x280]),
        4 => 0x400u32..0x480,
        2 => 0x280u32..0x2A0,
        1 => any::<u32>(),
    ]
}

fn value() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(u64::MAX),
        0u64..16,
        (0u32..64).prop_map(|bit| 1u64 << bit),
        any::<u64>()
    ]
}

fn host_status() -> impl Strategy<Value = u64> {
    prop_oneof![
        prop::sample::select(model::INTERESTING_STATUS.to_vec()),
        any::<u64>(),
    ]
}

fn op(vcpus: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..vcpus, msr_index()).prop_map(|(vcpu, msr)| Op::Read { vcpu, msr }),
        5 => (0..vcpus, msr_index(), value()).prop_map(|(vcpu, msr, value)| Op::Write { vcpu, msr, value }),
        2 => (0u8..12, host_status(), 0u64..16, any::<u64>(), prop_oneof![Just(0x86u64), any::<u64>()],
              prop::option::of(0u32..(vcpus as u32 + 1)), prop::bool::weighted(0.9))
            .prop_map(|(bank, status, mcg_status, addr, misc, consumer, cr4_mce)| Op::HostError {
                bank, status, mcg_status, addr, misc, consumer, cr4_mce }),
        2 => (0..vcpus).prop_map(|vcpu| Op::TakePending { vcpu }),
        1 => (0..vcpus).prop_map(|vcpu| Op::Reset { vcpu }),
        2 => (0..vcpus).prop_map(|vcpu| Op::ClearMcip { vcpu }),
        2 => prop::sample::select(SaveFormat::ALL.to_vec()).prop_map(|format| Op::SaveRestore { format }),
        1 => (prop_oneof![(0u64..0x20).prop_map(|frame| frame << 12 | 0x40), (0x4000u64..0x4010).prop_map(|frame| frame << 12), any::<u64>()], 0u32..(vcpus as u32 + 1)).prop_map(|(addr, vcpu)| Op::BrokenAccess { addr, vcpu }),
    ]
}

struct Cpus(bool);
impl GuestCpus for Cpus {
    fn is_up(&self, _: VcpuId) -> bool {
        true
    }
    fn machine_check_enabled(&self, _: VcpuId) -> bool {
        self.0
    }
    fn notify(&mut self, _: VcpuId, _: VcpuOutcome) {}
}

fn run(profile: Profile, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut model = Model::new(profile, 3);
    for (step, op) in ops.iter().enumerate() {
        model
            .step(op)
            .map_err(|error| TestCaseError::fail(format!("step {step} {op:?}: {error}")))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn intel_domains_survive_any_sequence(ops in prop::collection::vec(op(3), 1..60)) {
        run(Profile::Intel, ops)?;
    }

    #[test]
    fn lmce_domains_survive_any_sequence(ops in prop::collection::vec(op(3), 1..60)) {
        run(Profile::IntelLmce, ops)?;
    }

    #[test]
    fn amd_domains_survive_any_sequence(ops in prop::collection::vec(op(3), 1..60)) {
        run(Profile::Amd, ops)?;
    }

    /// The classifier is total over every input and never reflects a PCC or address-less error,
    /// nor (Intel) an address coarser than a page.
    #[test]
    fn classify_is_total(raw_cap in any::<u64>(), amd in any::<bool>(), mcg in any::<u64>(), status in any::<u64>(), misc in any::<u64>()) {
        let host = HostCapabilities::new(if amd { Vendor::Amd } else { Vendor::Intel }, McgCap::from_bits_retain(raw_cap));
        let status = MciStatus::from_bits_retain(status);
        let disposition = classify(&host, McgStatus::from_bits_retain(mcg), status, MciMisc(misc));
        if let Disposition::Reflect(_) = disposition {
            prop_assert!(status.contains(MciStatus::VAL | MciStatus::UC | MciStatus::ADDRV));
            prop_assert!(!status.contains(MciStatus::PCC));
            prop_assert!(mcg & 0x3 != 0);
            if !amd {
                prop_assert!(MciMisc(misc).address_lsb() <= vmce::classify::COARSEST_REFLECTED_ADDRESS_LSB);
            }
        }
    }

    /// Injecting arbitrary error contents never shows the MSCOD and never panics.
    #[test]
    fn arbitrary_guest_errors_hide_mscod(status in any::<u64>(), mcg in any::<u64>(), addr in any::<u64>(), misc in any::<u64>(),
                                         consumer in prop::option::of(0u32..4), profile in prop::sample::select(Profile::ALL.to_vec())) {
        let model = Model::new(profile, 4);
        let domain = &model.domain;
        let error = GuestMce {
            class: vmce::classify::ReflectClass::SrarDataLoad,
            host_mcg_status: McgStatus::from_bits_retain(mcg),
            host_status: MciStatus::from_bits_retain(status),
            host_addr: HostPhysAddr(addr),
            guest_addr: GuestPhysAddr(addr),
            misc: MciMisc(misc),
        };
        let result = domain.inject(&error, consumer.map(VcpuId), &mut Cpus(true));
        if addr >> 52 != 0 {
            // No guest holds such an address, and no record could carry its frame.
            prop_assert_eq!(result, Err(vmce::InjectError::AddressOutOfRange(GuestPhysAddr(addr))));
            prop_assert!(domain.broken_frames().is_empty());
            return Ok(());
        }
        let report = result.unwrap();
        prop_assert!(report.delivered >= 1);
        model.check_invariants().map_err(TestCaseError::fail)?;
    }
}

/// The model's save/restore step really round-trips, and really refuses a lossy save.
#[test]
fn model_round_trips_and_refuses() {
    let mut model = Model::new(Profile::Intel, 3);
    let srao = Op::HostError {
        bank: 1,
        status: 0xBD00_0000_0040_00CF,
        mcg_status: 0x5,
        addr: 0x0412_3ABC,
        misc: 0x86,
        consumer: None,
        cr4_mce: true,
    };
    for op in [
        Op::SaveRestore {
            format: SaveFormat::Xen(vmce::record::xen::XenRelease::Xen4_2),
        },
        srao,
        Op::SaveRestore {
            format: SaveFormat::Native(vmce::record::native::NativeVersion::V2),
        },
        Op::SaveRestore {
            format: SaveFormat::Xen(vmce::record::xen::XenRelease::Xen4_10),
        },
        Op::TakePending { vcpu: 0 },
        Op::BrokenAccess {
            addr: 0x0412_3040,
            vcpu: 1,
        },
    ] {
        model.step(&op).unwrap();
    }
    assert_eq!((model.round_trips, model.refused_saves), (2, 1));
    assert!(model.domain.vcpus()[1].is_pending() && !model.domain.vcpus()[0].is_pending());
}
