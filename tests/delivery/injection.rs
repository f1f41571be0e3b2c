//! docs/behaviour.md §4's delivery rules, per profile.

use crate::common;

use common::RecordingCpus;
use vmce::address::{GuestPhysAddr, HostPhysAddr};
use vmce::classify::ReflectClass;
use vmce::delivery::InjectError;
use vmce::registers::{McgStatus, MciMisc, MciStatus};
use vmce::{
    DeliveryMode, GuestMce, Profile, RdmsrOutcome, ShutdownReason, VcpuId, VcpuOutcome,
    WrmsrOutcome,
};

const SRAO: u64 = 0xBD00_0000_0040_00CF; // patrol scrub, MSCOD 0x0040
const SRAR: u64 = 0xBD80_0000_1234_0134; // data load, MSCOD 0x1234
const AMD_UC: u64 =
    (1 << 63) | (1 << 61) | (1 << 60) | (1 << 58) | (1 << 43) | (0x55 << 16) | 0x0136;

fn error(class: ReflectClass, status: u64, mcg_status: u64) -> GuestMce {
    GuestMce {
        class,
        host_mcg_status: McgStatus::from_bits_retain(mcg_status),
        host_status: MciStatus::from_bits_retain(status),
        host_addr: HostPhysAddr(0x0412_3ABC),
        guest_addr: GuestPhysAddr(0x0012_3ABC),
        misc: MciMisc(0x86),
    }
}

fn read(domain: &vmce::Domain<Vec<vmce::Vcpu>>, vcpu: usize, msr: u32) -> u64 {
    match domain.vcpus()[vcpu].rdmsr(msr) {
        RdmsrOutcome::Handled(value) => value,
        other => panic!("vCPU {vcpu} msr {msr:#x}: {other:?}"),
    }
}

/// (MCG_STATUS, MC1_STATUS, MC1_ADDR, MC1_MISC, pending)
fn view(domain: &vmce::Domain<Vec<vmce::Vcpu>>, vcpu: usize) -> (u64, u64, u64, u64, bool) {
    (
        read(domain, vcpu, 0x17A),
        read(domain, vcpu, 0x405),
        read(domain, vcpu, 0x406),
        read(domain, vcpu, 0x407),
        domain.vcpus()[vcpu].is_pending(),
    )
}

const SIGNAL_ONLY: (u64, u64, u64, u64, bool) = (0x5, 0, 0, 0, true);
const UNTOUCHED: (u64, u64, u64, u64, bool) = (0, 0, 0, 0, false);

#[test]
fn intel_srao_is_broadcast_with_the_data_on_vcpu_0() {
    for profile in [Profile::Intel, Profile::IntelLmce] {
        let domain = common::domain(profile, 4);
        let mut cpus = RecordingCpus::new(4);
        // Even if a consumer is named, action-optional data goes to vCPU 0.
        let report = domain
            .inject(
                &error(ReflectClass::SraoMemoryScrub, SRAO, 0x5),
                Some(VcpuId(2)),
                &mut cpus,
            )
            .unwrap();
        assert_eq!(report.mode, DeliveryMode::Broadcast);
        assert_eq!(report.data_vcpu, Some(VcpuId(0)));
        assert_eq!((report.delivered, report.shutdown), (4, 0));
        assert_eq!(
            view(&domain, 0),
            (0x5, 0xBD00_0000_0000_00CF, 0x0012_3ABC, 0x86, true)
        );
        for vcpu in 1..4 {
            assert_eq!(view(&domain, vcpu), SIGNAL_ONLY, "{profile} vCPU {vcpu}");
        }
        assert_eq!(cpus.notified.len(), 4);
        assert_eq!(
            cpus.notified[0],
            (
                VcpuId(0),
                VcpuOutcome::Delivered {
                    with_data: true,
                    overflow: false
                }
            )
        );
    }
}

#[test]
fn intel_srar_data_goes_to_the_consumer_and_the_others_get_mcip_ripv() {
    let domain = common::domain(Profile::Intel, 4);
    let mut cpus = RecordingCpus::new(4);
    let report = domain
        .inject(
            &error(ReflectClass::SrarDataLoad, SRAR, 0x7),
            Some(VcpuId(2)),
            &mut cpus,
        )
        .unwrap();
    assert_eq!(
        (report.mode, report.data_vcpu, report.delivered),
        (DeliveryMode::Broadcast, Some(VcpuId(2)), 4)
    );
    assert_eq!(
        view(&domain, 2),
        (0x7, 0xBD80_0000_0000_0134, 0x0012_3ABC, 0x86, true)
    );
    for vcpu in [0, 1, 3] {
        assert_eq!(view(&domain, vcpu), SIGNAL_ONLY, "vCPU {vcpu}");
    }
}

#[test]
fn host_lmce_without_guest_lmce_is_broadcast_without_lmce_s() {
    // Intel profile: no LMCE_P at all.
    let domain = common::domain(Profile::Intel, 4);
    let report = domain
        .inject(
            &error(ReflectClass::SrarDataLoad, SRAR, 0xF),
            Some(VcpuId(1)),
            &mut RecordingCpus::new(4),
        )
        .unwrap();
    assert_eq!(report.mode, DeliveryMode::Broadcast);
    assert_eq!(view(&domain, 1).0, 0x7, "LMCE_S stripped");
    // Intel+LMCE profile, but the guest never set MCG_EXT_CTL.LMCE_EN.
    let domain = common::domain(Profile::IntelLmce, 4);
    let report = domain
        .inject(
            &error(ReflectClass::SrarDataLoad, SRAR, 0xF),
            Some(VcpuId(1)),
            &mut RecordingCpus::new(4),
        )
        .unwrap();
    assert_eq!(
        (report.mode, report.delivered),
        (DeliveryMode::Broadcast, 4)
    );
    assert_eq!(view(&domain, 1).0, 0x7);
}

#[test]
fn lmce_goes_to_the_consumer_only_with_lmce_s() {
    let domain = common::domain(Profile::IntelLmce, 4);
    for vcpu in domain.vcpus() {
        assert_eq!(vcpu.wrmsr(0x4D0, 1), WrmsrOutcome::Handled);
    }
    let mut cpus = RecordingCpus::new(4);
    let report = domain
        .inject(
            &error(ReflectClass::SrarDataLoad, SRAR, 0xF),
            Some(VcpuId(3)),
            &mut cpus,
        )
        .unwrap();
    assert_eq!(
        (report.mode, report.data_vcpu, report.delivered),
        (DeliveryMode::Local, Some(VcpuId(3)), 1)
    );
    assert_eq!(
        view(&domain, 3),
        (0xF, 0xBD80_0000_0000_0134, 0x0012_3ABC, 0x86, true)
    );
    for vcpu in 0..3 {
        assert_eq!(view(&domain, vcpu), UNTOUCHED, "vCPU {vcpu}");
    }
    assert_eq!(
        cpus.notified,
        vec![(
            VcpuId(3),
            VcpuOutcome::Delivered {
                with_data: true,
                overflow: false
            }
        )]
    );
    // Host LMCE_S clear: broadcast even with LMCE_EN.
    let domain = common::domain(Profile::IntelLmce, 2);
    domain.vcpus()[1].wrmsr(0x4D0, 1);
    let report = domain
        .inject(
            &error(ReflectClass::SrarDataLoad, SRAR, 0x7),
            Some(VcpuId(1)),
            &mut RecordingCpus::new(2),
        )
        .unwrap();
    assert_eq!(report.mode, DeliveryMode::Broadcast);
}

#[test]
fn amd_is_never_broadcast() {
    let domain = common::domain(Profile::Amd, 4);
    let mut cpus = RecordingCpus::new(4);
    let report = domain
        .inject(
            &error(ReflectClass::AmdUncorrected, AMD_UC, 0x7),
            Some(VcpuId(3)),
            &mut cpus,
        )
        .unwrap();
    assert_eq!(
        (report.mode, report.data_vcpu, report.delivered),
        (DeliveryMode::Single, Some(VcpuId(3)), 1)
    );
    // AMD status bits (POISON) pass through; MSCOD is cleared.
    assert_eq!(
        view(&domain, 3),
        (0x7, AMD_UC & !(0xFFFF << 16), 0x0012_3ABC, 0x86, true)
    );
    for vcpu in 0..3 {
        assert_eq!(view(&domain, vcpu), UNTOUCHED);
    }
    let domain = common::domain(Profile::Amd, 4);
    let report = domain
        .inject(
            &error(ReflectClass::AmdUncorrected, AMD_UC, 0xF),
            None,
            &mut RecordingCpus::new(4),
        )
        .unwrap();
    assert_eq!((report.data_vcpu, report.delivered), (Some(VcpuId(0)), 1));
    assert_eq!(view(&domain, 0).0, 0x7, "AMD has no LMCE_S");
}

#[test]
fn mscod_is_cleared_and_every_other_bit_passes_through() {
    let status = 0xBD3F_FFFF_FFFF_00C3u64; // all 'other info' and counter bits set
    let domain = common::domain(Profile::Intel, 1);
    domain
        .inject(
            &error(ReflectClass::SraoMemoryScrub, status, 0x5),
            None,
            &mut RecordingCpus::new(1),
        )
        .unwrap();
    assert_eq!(view(&domain, 0).1, 0xBD3F_FFFF_0000_00C3);
}

#[test]
fn a_vcpu_with_mcip_still_set_is_reported_for_shutdown_not_dropped() {
    let domain = common::domain(Profile::Intel, 4);
    let mut cpus = RecordingCpus::new(4);
    domain
        .inject(
            &error(ReflectClass::SraoMemoryScrub, SRAO, 0x5),
            None,
            &mut cpus,
        )
        .unwrap();
    // vCPUs 0 and 1 handle it and clear MCIP; 2 and 3 are still in their handlers.
    for vcpu in 0..2 {
        assert!(domain.vcpus()[vcpu].take_pending());
        assert_eq!(domain.vcpus()[vcpu].wrmsr(0x405, 0), WrmsrOutcome::Handled);
        assert_eq!(domain.vcpus()[vcpu].wrmsr(0x17A, 0), WrmsrOutcome::Handled);
    }
    let before: Vec<_> = (2..4)
        .map(|v| (domain.vcpus()[v].state(), domain.vcpus()[v].is_pending()))
        .collect();
    let mut cpus = RecordingCpus::new(4);
    let report = domain
        .inject(
            &error(ReflectClass::SrarDataLoad, SRAR, 0x7),
            Some(VcpuId(1)),
            &mut cpus,
        )
        .unwrap();
    assert_eq!((report.delivered, report.shutdown), (2, 2));
    assert!(report.needs_shutdown());
    assert_eq!(
        report.first_shutdown,
        Some((VcpuId(2), ShutdownReason::MachineCheckInProgress))
    );
    assert_eq!(
        view(&domain, 1),
        (0x7, 0xBD80_0000_0000_0134, 0x0012_3ABC, 0x86, true)
    );
    let after: Vec<_> = (2..4)
        .map(|v| (domain.vcpus()[v].state(), domain.vcpus()[v].is_pending()))
        .collect();
    assert_eq!(
        before, after,
        "a vCPU that must shut down is left as it was"
    );
    assert_eq!(
        cpus.notified[2..],
        [
            (
                VcpuId(2),
                VcpuOutcome::Shutdown(ShutdownReason::MachineCheckInProgress)
            ),
            (
                VcpuId(3),
                VcpuOutcome::Shutdown(ShutdownReason::MachineCheckInProgress)
            ),
        ]
    );
}

#[test]
fn cr4_mce_clear_is_a_shutdown() {
    let domain = common::domain(Profile::Intel, 2);
    let mut cpus = RecordingCpus::new(2);
    cpus.cr4_mce[0] = false;
    let report = domain
        .inject(
            &error(ReflectClass::SraoMemoryScrub, SRAO, 0x5),
            None,
            &mut cpus,
        )
        .unwrap();
    assert_eq!(
        report.first_shutdown,
        Some((VcpuId(0), ShutdownReason::MachineCheckDisabled))
    );
    assert_eq!((report.delivered, report.shutdown), (1, 1));
    assert_eq!(view(&domain, 0), UNTOUCHED);
    assert_eq!(view(&domain, 1), SIGNAL_ONLY);
    // AMD single delivery too.
    let domain = common::domain(Profile::Amd, 2);
    let mut cpus = RecordingCpus::new(2);
    cpus.cr4_mce[1] = false;
    let report = domain
        .inject(
            &error(ReflectClass::AmdUncorrected, AMD_UC, 0x7),
            Some(VcpuId(1)),
            &mut cpus,
        )
        .unwrap();
    assert_eq!((report.delivered, report.shutdown), (0, 1));
}

#[test]
fn a_bank_still_holding_an_error_gets_over() {
    let domain = common::domain(Profile::Intel, 1);
    domain
        .inject(
            &error(ReflectClass::SraoMemoryScrub, SRAO, 0x5),
            None,
            &mut RecordingCpus::new(1),
        )
        .unwrap();
    // The guest clears MCIP but forgets MC1_STATUS.
    assert!(domain.vcpus()[0].take_pending());
    assert_eq!(domain.vcpus()[0].wrmsr(0x17A, 0), WrmsrOutcome::Handled);
    let report = domain
        .inject(
            &error(ReflectClass::SrarDataLoad, SRAR, 0x7),
            Some(VcpuId(0)),
            &mut RecordingCpus::new(1),
        )
        .unwrap();
    assert!(report.overflow);
    assert_eq!(view(&domain, 0).1, 0xBD80_0000_0000_0134 | (1 << 62));
}

#[test]
fn clearing_mcip_rearms_the_vcpu() {
    let domain = common::domain(Profile::Intel, 1);
    let vcpu = &domain.vcpus()[0];
    for round in 0..5 {
        let report = domain
            .inject(
                &error(ReflectClass::SraoMemoryScrub, SRAO, 0x5),
                None,
                &mut RecordingCpus::new(1),
            )
            .unwrap();
        assert_eq!(
            (report.delivered, report.overflow),
            (1, false),
            "round {round}"
        );
        assert!(vcpu.take_pending());
        assert!(!vcpu.take_pending(), "exactly one #MC per injection");
        assert_eq!(vcpu.wrmsr(0x405, 0), WrmsrOutcome::Handled);
        assert_eq!(vcpu.wrmsr(0x17A, 0), WrmsrOutcome::Handled);
    }
}

#[test]
fn an_unknown_consumer_changes_nothing() {
    let domain = common::domain(Profile::Intel, 2);
    let mut cpus = RecordingCpus::new(2);
    let result = domain.inject(
        &error(ReflectClass::SrarDataLoad, SRAR, 0x7),
        Some(VcpuId(2)),
        &mut cpus,
    );
    assert_eq!(result, Err(InjectError::NoSuchVcpu(VcpuId(2))));
    assert!(cpus.notified.is_empty());
    assert_eq!(view(&domain, 0), UNTOUCHED);
    assert_eq!(view(&domain, 1), UNTOUCHED);
}

#[test]
fn ctl2_state_never_causes_a_cmci() {
    let domain = common::domain(Profile::Intel, 2);
    for vcpu in domain.vcpus() {
        assert_eq!(vcpu.wrmsr(0x281, (1 << 30) | 1), WrmsrOutcome::Handled);
    }
    // Nothing in vmce can make a vCPU pending except an injection: a CMCI has no path.
    assert!(domain.vcpus().iter().all(|vcpu| !vcpu.is_pending()));
    assert_eq!(read(&domain, 0, 0x281), (1 << 30) | 1);
}
