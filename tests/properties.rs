//! Bad input never panics, and the guest-visible invariants hold after every step.

mod common;

use proptest::prelude::*;
use vmce::address::{GuestPhysAddr, HostPhysAddr};
use vmce::classify::{Disposition, classify};
use vmce::host::{HostCapabilities, SimulatedHost, collect, release};
use vmce::registers::{McgCap, McgStatus, MciMisc, MciStatus};
use vmce::{GuestCpus, GuestMce, Profile, RdmsrOutcome, VcpuId, VcpuOutcome, Vendor, WrmsrOutcome};

#[derive(Clone, Debug)]
enum Op {
    Read {
        vcpu: usize,
        msr: u32,
    },
    Write {
        vcpu: usize,
        msr: u32,
        value: u64,
    },
    HostError {
        bank: u8,
        status: u64,
        mcg_status: u64,
        addr: u64,
        misc: u64,
        consumer: Option<u32>,
        cr4_mce: bool,
    },
    TakePending {
        vcpu: usize,
    },
    Reset {
        vcpu: usize,
    },
}

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
        prop::sample::select(vec![
            0xBD80_0000_0000_0134u64,
            0xBD00_0000_0000_00C0,
            0xBC00_0000_0001_0090,
            0xBD20_0000_8000_017A,
            0xBD00_0000_0040_00CF,
            0xBC20_0000_8000_0136,
            0xBF20_0000_8000_017A,
            0xBD80_FFFF_FFFF_0150,
        ]),
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
    ]
}

struct Cpus(bool);
impl GuestCpus for Cpus {
    fn machine_check_enabled(&self, _: VcpuId) -> bool {
        self.0
    }
    fn notify(&mut self, _: VcpuId, _: VcpuOutcome) {}
}

/// Any host memory: the low 48 bits of the frame, shifted.
struct AnyMemory;
impl vmce::GuestMemory for AnyMemory {
    fn guest_frame(&self, host: vmce::HostFrame) -> Option<vmce::GuestFrame> {
        (!host.0.is_multiple_of(3)).then_some(vmce::GuestFrame(host.0 & 0xF_FFFF_FFFF))
    }
}

fn check_invariants(
    domain: &vmce::Domain<Vec<vmce::Vcpu>>,
    profile: Profile,
) -> Result<(), TestCaseError> {
    for (id, vcpu) in domain.vcpus().iter().enumerate() {
        prop_assert_eq!(
            vcpu.rdmsr(0x179),
            RdmsrOutcome::Handled(profile.mcg_cap().bits())
        );
        let state = vcpu.snapshot().state;
        prop_assert_eq!(
            state.banks[0],
            vmce::vcpu::GuestBank::EMPTY,
            "vCPU {}: bank 0 stays empty",
            id
        );
        prop_assert_eq!(
            state.banks[1].status.mscod().0,
            0,
            "vCPU {}: host MSCOD visible",
            id
        );
        for bank in 2..32u32 {
            for offset in 1..4 {
                prop_assert_eq!(
                    vcpu.rdmsr(0x400 + 4 * bank + offset),
                    RdmsrOutcome::Handled(0)
                );
            }
        }
        prop_assert_eq!(
            state.mcg_status.bits() & !0xF,
            0,
            "reserved MCG_STATUS bits"
        );
    }
    Ok(())
}

fn run(profile: Profile, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let vcpus = 3;
    let domain = common::domain(profile, vcpus);
    let host_caps = common::host_for(profile);
    for op in ops {
        match op {
            Op::Read { vcpu, msr } => {
                let before = domain.vcpus()[vcpu].snapshot();
                let outcome = domain.vcpus()[vcpu].rdmsr(msr);
                prop_assert_eq!(
                    domain.vcpus()[vcpu].snapshot(),
                    before,
                    "reads change nothing"
                );
                if vmce::registers::msr::McaMsr::decode(msr).is_none() {
                    prop_assert_eq!(outcome, RdmsrOutcome::NotOurs);
                }
            }
            Op::Write { vcpu, msr, value } => {
                let before = domain.vcpus()[vcpu].snapshot();
                let outcome = domain.vcpus()[vcpu].wrmsr(msr, value);
                if matches!(outcome, WrmsrOutcome::RaiseGp(_) | WrmsrOutcome::NotOurs) {
                    prop_assert_eq!(
                        domain.vcpus()[vcpu].snapshot(),
                        before,
                        "#GP leaves state unchanged"
                    );
                }
                if vmce::registers::msr::McaMsr::decode(msr).is_none() {
                    prop_assert_eq!(outcome, WrmsrOutcome::NotOurs);
                }
            }
            Op::HostError {
                bank,
                status,
                mcg_status,
                addr,
                misc,
                consumer,
                cr4_mce,
            } => {
                let mut host = SimulatedHost::new(host_caps);
                host.raise(bank, status, mcg_status, addr, misc);
                let event = collect(&mut host, &host_caps);
                release(&mut host, &event);
                prop_assert_eq!(host.invalid_accesses(), 0);
                for bank in event.banks() {
                    let disposition =
                        classify(&host_caps, event.mcg_status, bank.status, bank.misc);
                    if matches!(disposition, Disposition::Reflect(_)) {
                        prop_assert!(
                            bank.status
                                .contains(MciStatus::VAL | MciStatus::UC | MciStatus::ADDRV)
                        );
                        prop_assert!(!bank.status.contains(MciStatus::PCC));
                    }
                    if let Ok(error) =
                        GuestMce::from_host(&host_caps, event.mcg_status, bank, &AnyMemory)
                    {
                        let result =
                            domain.inject(&error, consumer.map(VcpuId), &mut Cpus(cr4_mce));
                        match consumer {
                            Some(id) if id as usize >= vcpus => prop_assert!(result.is_err()),
                            _ => prop_assert!(result.is_ok()),
                        }
                    }
                }
            }
            Op::TakePending { vcpu } => {
                let vcpu = &domain.vcpus()[vcpu];
                // A guest may write MCG_STATUS between injection and delivery, so MCIP is not
                // guaranteed here; what is guaranteed is one delivery per injection.
                if vcpu.take_pending() {
                    prop_assert!(!vcpu.take_pending());
                }
            }
            Op::Reset { vcpu } => domain.vcpus()[vcpu].reset(),
        }
        check_invariants(&domain, profile)?;
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

    /// The classifier is total over every input and never reflects a PCC or address-less error.
    #[test]
    fn classify_is_total(raw_cap in any::<u64>(), amd in any::<bool>(), mcg in any::<u64>(), status in any::<u64>(), misc in any::<u64>()) {
        let host = HostCapabilities::new(if amd { Vendor::Amd } else { Vendor::Intel }, McgCap::from_bits_retain(raw_cap));
        let status = MciStatus::from_bits_retain(status);
        let disposition = classify(&host, McgStatus::from_bits_retain(mcg), status, MciMisc(misc));
        if let Disposition::Reflect(_) = disposition {
            prop_assert!(status.contains(MciStatus::VAL | MciStatus::UC | MciStatus::ADDRV));
            prop_assert!(!status.contains(MciStatus::PCC));
            prop_assert!(mcg & 0x3 != 0);
        }
    }

    /// Injecting arbitrary error contents never shows the MSCOD and never panics.
    #[test]
    fn arbitrary_guest_errors_hide_mscod(status in any::<u64>(), mcg in any::<u64>(), addr in any::<u64>(), misc in any::<u64>(),
                                         consumer in prop::option::of(0u32..4), profile in prop::sample::select(Profile::ALL.to_vec())) {
        let domain = common::domain(profile, 4);
        let error = GuestMce {
            class: vmce::classify::ReflectClass::SrarDataLoad,
            host_mcg_status: McgStatus::from_bits_retain(mcg),
            host_status: MciStatus::from_bits_retain(status),
            host_addr: HostPhysAddr(addr),
            guest_addr: GuestPhysAddr(addr),
            misc: MciMisc(misc),
        };
        let report = domain.inject(&error, consumer.map(VcpuId), &mut Cpus(true)).unwrap();
        prop_assert!(report.delivered >= 1);
        check_invariants(&domain, profile)?;
    }
}
