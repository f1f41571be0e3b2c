//! docs/behaviour.md §4's delivery rules, per profile: one injection per row of [`CASES`],
//! then the rules that take more than one injection.

use crate::common;

use common::RecordingCpus;
use vmce::address::{GuestPhysAddr, HostPhysAddr};
use vmce::classify::ReflectClass;
use vmce::delivery::InjectError;
use vmce::registers::{McgStatus, MciMisc, MciStatus};
use vmce::{
    DeliveryMode, GuestMce, InjectionReport, Profile, RdmsrOutcome, ShutdownReason, VcpuId,
    VcpuOutcome, WrmsrOutcome,
};

use DeliveryMode::{Broadcast, Local, Single};
use Profile::{Amd, Intel, IntelLmce};
use ShutdownReason::{MachineCheckDisabled, MachineCheckInProgress};

const SRAO: u64 = 0xBD00_0000_0040_00CF; // patrol scrub, MSCOD 0x0040
const SRAR: u64 = 0xBD80_0000_1234_0134; // data load, MSCOD 0x1234
const AMD_UC: u64 =
    (1 << 63) | (1 << 61) | (1 << 60) | (1 << 58) | (1 << 43) | (0x55 << 16) | 0x0136;
/// Every 'other info' and counter bit set.
const ALL_OTHER_INFO: u64 = 0xBD3F_FFFF_FFFF_00C3;

/// A host error: its class, `MC1_STATUS` and the host's `MCG_STATUS`.
type HostError = (ReflectClass, u64, u64);

const SRAO_ERROR: HostError = (ReflectClass::SraoMemoryScrub, SRAO, 0x5);
const SRAR_ERROR: HostError = (ReflectClass::SrarDataLoad, SRAR, 0x7);
/// The host signalled it locally (`LMCE_S`).
const SRAR_LMCE_S: HostError = (ReflectClass::SrarDataLoad, SRAR, 0xF);
const AMD_ERROR: HostError = (ReflectClass::AmdUncorrected, AMD_UC, 0x7);
const AMD_LMCE_S: HostError = (ReflectClass::AmdUncorrected, AMD_UC, 0xF);
const ALL_BITS_SRAO: HostError = (ReflectClass::SraoMemoryScrub, ALL_OTHER_INFO, 0x5);

fn error((class, status, mcg_status): HostError) -> GuestMce {
    GuestMce {
        class,
        host_mcg_status: McgStatus::from_bits_retain(mcg_status),
        host_status: MciStatus::from_bits_retain(status),
        host_addr: HostPhysAddr(0x0412_3ABC),
        guest_addr: GuestPhysAddr(0x0012_3ABC),
        misc: MciMisc(0x86),
    }
}

fn inject(
    domain: &vmce::Domain<Vec<vmce::Vcpu>>,
    host_error: HostError,
    consumer: Option<u32>,
    cpus: &mut RecordingCpus,
) -> InjectionReport {
    domain
        .inject(&error(host_error), consumer.map(VcpuId), cpus)
        .unwrap()
}

fn read(domain: &vmce::Domain<Vec<vmce::Vcpu>>, vcpu: usize, msr: u32) -> u64 {
    match domain.vcpus()[vcpu].rdmsr(msr) {
        RdmsrOutcome::Handled(value) => value,
        other => panic!("vCPU {vcpu} msr {msr:#x}: {other:?}"),
    }
}

/// What a vCPU's guest reads: (MCG_STATUS, MC1_STATUS, MC1_ADDR, MC1_MISC), and whether a
/// #MC is pending.
type View = (u64, u64, u64, u64, bool);

fn view(domain: &vmce::Domain<Vec<vmce::Vcpu>>, vcpu: usize) -> View {
    (
        read(domain, vcpu, 0x17A),
        read(domain, vcpu, 0x405),
        read(domain, vcpu, 0x406),
        read(domain, vcpu, 0x407),
        domain.vcpus()[vcpu].is_pending(),
    )
}

/// The data vCPU: `mcg_status`, and `status` (MSCOD cleared) at the guest address.
const fn data(mcg_status: u64, status: u64) -> View {
    (mcg_status, status, 0x0012_3ABC, 0x86, true)
}

const SIGNAL_ONLY: View = (0x5, 0, 0, 0, true);
const UNTOUCHED: View = (0, 0, 0, 0, false);
const SRAR_VIEW: View = data(0x7, 0xBD80_0000_0000_0134);

const WITH_DATA: VcpuOutcome = VcpuOutcome::Delivered {
    with_data: true,
    overflow: false,
};
const WITHOUT_DATA: VcpuOutcome = VcpuOutcome::Delivered {
    with_data: false,
    overflow: false,
};

/// What one vCPU is left with: its view, and its notification (`None`: not notified).
type Left = (View, Option<VcpuOutcome>);

const SRAO_DATA: Left = (data(0x5, 0xBD00_0000_0000_00CF), Some(WITH_DATA));
const SRAR_DATA: Left = (SRAR_VIEW, Some(WITH_DATA));
/// A local delivery keeps `LMCE_S`.
const LMCE_DATA: Left = (data(0xF, 0xBD80_0000_0000_0134), Some(WITH_DATA));
/// AMD status bits (POISON) pass through; MSCOD is cleared.
const AMD_DATA: Left = (data(0x7, AMD_UC & !(0xFFFF << 16)), Some(WITH_DATA));
/// MSCOD cleared, every other bit as the host had it.
const ALL_BITS_DATA: Left = (data(0x5, 0xBD3F_FFFF_0000_00C3), Some(WITH_DATA));
/// `MCIP|RIPV`, bank 1 empty.
const SIGNALLED: Left = (SIGNAL_ONLY, Some(WITHOUT_DATA));
/// Not a target: nothing changed, no notification.
const IDLE: Left = (UNTOUCHED, None);
/// `CR4.MCE` clear: nothing changed, told to shut down.
const SHUT: Left = (UNTOUCHED, Some(VcpuOutcome::Shutdown(MachineCheckDisabled)));

/// One injection into a fresh domain, and everything it must leave behind.
struct Case {
    name: &'static str,
    profile: Profile,
    /// vCPUs whose guest set `MCG_EXT_CTL.LMCE_EN` first.
    lmce_en: &'static [usize],
    /// vCPUs with `CR4.MCE` clear.
    cr4_mce_clear: &'static [usize],
    error: HostError,
    consumer: Option<u32>,
    /// The report's mode, data vCPU, delivered and shutdown counts.
    report: (DeliveryMode, Option<u32>, u32, u32),
    first_shutdown: Option<(u32, ShutdownReason)>,
    /// Every vCPU of the domain, in order: the domain has this many.
    left: &'static [Left],
}

/// `error` naming `consumer`, into a fresh domain under `profile`.
const fn case(
    name: &'static str,
    profile: Profile,
    error: HostError,
    consumer: Option<u32>,
) -> Case {
    Case {
        name,
        profile,
        lmce_en: &[],
        cr4_mce_clear: &[],
        error,
        consumer,
        report: (Broadcast, None, 0, 0),
        first_shutdown: None,
        left: &[],
    }
}

impl Case {
    const fn lmce_en(self, lmce_en: &'static [usize]) -> Self {
        Case { lmce_en, ..self }
    }

    const fn cr4_mce_clear(self, cr4_mce_clear: &'static [usize]) -> Self {
        Case {
            cr4_mce_clear,
            ..self
        }
    }

    const fn first_shutdown(self, vcpu: u32, reason: ShutdownReason) -> Self {
        Case {
            first_shutdown: Some((vcpu, reason)),
            ..self
        }
    }

    /// The report's mode, data vCPU, delivered and shutdown counts, and what each vCPU is
    /// left with.
    const fn gives(
        self,
        mode: DeliveryMode,
        data_vcpu: Option<u32>,
        delivered: u32,
        shutdown: u32,
        left: &'static [Left],
    ) -> Self {
        Case {
            report: (mode, data_vcpu, delivered, shutdown),
            left,
            ..self
        }
    }
}

/// docs/behaviour.md §4, "What the guest sees": one row per rule. (Not rustfmt's layout,
/// which puts every argument of a row on a line of its own.)
#[rustfmt::skip]
const CASES: &[Case] = &[
    case("Intel SRAO: data on vCPU 0, not the consumer", Intel, SRAO_ERROR, Some(2))
        .gives(Broadcast, Some(0), 4, 0, &[SRAO_DATA, SIGNALLED, SIGNALLED, SIGNALLED]),
    case("Intel+LMCE SRAO: the same", IntelLmce, SRAO_ERROR, Some(2))
        .gives(Broadcast, Some(0), 4, 0, &[SRAO_DATA, SIGNALLED, SIGNALLED, SIGNALLED]),
    case("Intel SRAR: data on the consumer", Intel, SRAR_ERROR, Some(2))
        .gives(Broadcast, Some(2), 4, 0, &[SIGNALLED, SIGNALLED, SRAR_DATA, SIGNALLED]),
    case("host LMCE, Intel guest: no LMCE_S", Intel, SRAR_LMCE_S, Some(1))
        .gives(Broadcast, Some(1), 4, 0, &[SIGNALLED, SRAR_DATA, SIGNALLED, SIGNALLED]),
    case("host LMCE, no LMCE_EN: no LMCE_S", IntelLmce, SRAR_LMCE_S, Some(1))
        .gives(Broadcast, Some(1), 4, 0, &[SIGNALLED, SRAR_DATA, SIGNALLED, SIGNALLED]),
    case("host LMCE, LMCE_EN: local", IntelLmce, SRAR_LMCE_S, Some(3))
        .lmce_en(&[0, 1, 2, 3])
        .gives(Local, Some(3), 1, 0, &[IDLE, IDLE, IDLE, LMCE_DATA]),
    case("LMCE_EN, host LMCE_S clear: broadcast", IntelLmce, SRAR_ERROR, Some(1))
        .lmce_en(&[1])
        .gives(Broadcast, Some(1), 2, 0, &[SIGNALLED, SRAR_DATA]),
    case("AMD: the consumer only", Amd, AMD_ERROR, Some(3))
        .gives(Single, Some(3), 1, 0, &[IDLE, IDLE, IDLE, AMD_DATA]),
    case("AMD, no consumer, host LMCE_S: no LMCE_S", Amd, AMD_LMCE_S, None)
        .gives(Single, Some(0), 1, 0, &[AMD_DATA, IDLE, IDLE, IDLE]),
    case("MSCOD cleared, other bits kept", Intel, ALL_BITS_SRAO, None)
        .gives(Broadcast, Some(0), 1, 0, &[ALL_BITS_DATA]),
    case("Intel, CR4.MCE clear", Intel, SRAO_ERROR, None)
        .cr4_mce_clear(&[0])
        .first_shutdown(0, MachineCheckDisabled)
        .gives(Broadcast, Some(0), 1, 1, &[SHUT, SIGNALLED]),
    case("AMD, CR4.MCE clear on the consumer", Amd, AMD_ERROR, Some(1))
        .cr4_mce_clear(&[1])
        .first_shutdown(1, MachineCheckDisabled)
        .gives(Single, Some(1), 0, 1, &[IDLE, SHUT]),
];

#[test]
fn one_injection_per_rule() {
    for case in CASES {
        let name = case.name;
        let vcpus = case.left.len();
        let domain = common::domain(case.profile, vcpus);
        for &vcpu in case.lmce_en {
            let outcome = domain.vcpus()[vcpu].wrmsr(0x4D0, 1);
            assert_eq!(outcome, WrmsrOutcome::Handled, "{name}: LMCE_EN on {vcpu}");
        }
        let mut cpus = RecordingCpus::new(vcpus);
        for &vcpu in case.cr4_mce_clear {
            cpus.cr4_mce[vcpu] = false;
        }
        let report = inject(&domain, case.error, case.consumer, &mut cpus);
        let (mode, data_vcpu, delivered, shutdown) = case.report;
        assert_eq!(
            (
                report.mode,
                report.data_vcpu,
                report.delivered,
                report.shutdown
            ),
            (mode, data_vcpu.map(VcpuId), delivered, shutdown),
            "{name}: mode, data vCPU, delivered, shutdown"
        );
        let first_shutdown = case.first_shutdown.map(|(v, reason)| (VcpuId(v), reason));
        assert_eq!(report.first_shutdown, first_shutdown, "{name}");
        let mut notified = Vec::new();
        for (vcpu, &(expected, outcome)) in case.left.iter().enumerate() {
            assert_eq!(view(&domain, vcpu), expected, "{name}: vCPU {vcpu}");
            notified.extend(outcome.map(|outcome| (VcpuId(vcpu as u32), outcome)));
        }
        assert_eq!(cpus.notified, notified, "{name}: notifications");
    }
}

#[test]
fn a_vcpu_with_mcip_still_set_is_reported_for_shutdown_not_dropped() {
    let domain = common::domain(Intel, 4);
    inject(&domain, SRAO_ERROR, None, &mut RecordingCpus::new(4));
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
    let report = inject(&domain, SRAR_ERROR, Some(1), &mut cpus);
    assert_eq!((report.delivered, report.shutdown), (2, 2));
    assert!(report.needs_shutdown());
    assert_eq!(
        report.first_shutdown,
        Some((VcpuId(2), MachineCheckInProgress))
    );
    assert_eq!(view(&domain, 1), SRAR_VIEW);
    let after: Vec<_> = (2..4)
        .map(|v| (domain.vcpus()[v].state(), domain.vcpus()[v].is_pending()))
        .collect();
    assert_eq!(
        before, after,
        "a vCPU that must shut down is left as it was"
    );
    let in_progress = VcpuOutcome::Shutdown(MachineCheckInProgress);
    assert_eq!(
        cpus.notified[2..],
        [(VcpuId(2), in_progress), (VcpuId(3), in_progress)]
    );
}

#[test]
fn a_bank_still_holding_an_error_gets_over() {
    let domain = common::domain(Intel, 1);
    inject(&domain, SRAO_ERROR, None, &mut RecordingCpus::new(1));
    // The guest clears MCIP but forgets MC1_STATUS.
    assert!(domain.vcpus()[0].take_pending());
    assert_eq!(domain.vcpus()[0].wrmsr(0x17A, 0), WrmsrOutcome::Handled);
    let report = inject(&domain, SRAR_ERROR, Some(0), &mut RecordingCpus::new(1));
    assert!(report.overflow);
    assert_eq!(view(&domain, 0).1, 0xBD80_0000_0000_0134 | (1 << 62));
}

#[test]
fn clearing_mcip_rearms_the_vcpu() {
    let domain = common::domain(Intel, 1);
    let vcpu = &domain.vcpus()[0];
    for round in 0..5 {
        let report = inject(&domain, SRAO_ERROR, None, &mut RecordingCpus::new(1));
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
    let domain = common::domain(Intel, 2);
    let mut cpus = RecordingCpus::new(2);
    let result = domain.inject(&error(SRAR_ERROR), Some(VcpuId(2)), &mut cpus);
    assert_eq!(result, Err(InjectError::NoSuchVcpu(VcpuId(2))));
    assert!(cpus.notified.is_empty());
    assert_eq!(view(&domain, 0), UNTOUCHED);
    assert_eq!(view(&domain, 1), UNTOUCHED);
}

#[test]
fn ctl2_state_never_causes_a_cmci() {
    let domain = common::domain(Intel, 2);
    for vcpu in domain.vcpus() {
        assert_eq!(vcpu.wrmsr(0x281, (1 << 30) | 1), WrmsrOutcome::Handled);
    }
    // Nothing in vmce can make a vCPU pending except an injection: a CMCI has no path.
    assert!(domain.vcpus().iter().all(|vcpu| !vcpu.is_pending()));
    assert_eq!(read(&domain, 0, 0x281), (1 << 30) | 1);
}
