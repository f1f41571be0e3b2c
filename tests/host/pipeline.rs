//! The whole path through a mock of the MSR boundary only: errors raised on a simulated host
//! as QEMU's `mce` and Xen's injector raise them → collect → classify → translate → inject →
//! the guest reads its MSRs.

use crate::common;

use common::{OFFSET_MEMORY, RecordingCpus};
use vmce::classify::{Disposition, FatalReason, HostOnlyReason, ReflectClass};
use vmce::host::{HostCapabilities, RaiseOutcome, SimulatedHost, collect, release};
use vmce::registers::{McgCap, msr};
use vmce::{
    DeliveryMode, GuestMce, HostFrame, InjectionReport, NotReflected, Profile, RdmsrOutcome,
    VcpuId, Vendor,
};

/// A host physical address inside the guest's RAM (guest frame 0x123, offset 0xABC).
const OWNED_ADDR: u64 = (common::GUEST_RAM_HOST_FRAME + 0x123) << 12 | 0xABC;
const GUEST_ADDR: u64 = 0x0012_3ABC;

/// What the hypervisor's #MC handler does, from collection to injection.
fn host_mc_handler(
    host: &mut SimulatedHost,
    domain: &vmce::Domain<Vec<vmce::Vcpu>>,
    consumer: Option<VcpuId>,
) -> Result<InjectionReport, NotReflected> {
    let caps = host.capabilities();
    let event = collect(host, &caps);
    release(host, &event);
    let (bank, disposition) = event.most_severe(&caps).expect("a valid bank");
    let class = match disposition {
        Disposition::Fatal(reason) => return Err(NotReflected::Fatal(reason)),
        Disposition::HostOnly(reason) => return Err(NotReflected::HostOnly(reason)),
        Disposition::Reflect(class) => class,
    };
    // Classified once: `most_severe` gave the class, only the address is left to translate.
    let error = GuestMce::from_classified(class, event.mcg_status, &bank, &OFFSET_MEMORY)
        .map_err(NotReflected::Translate)?;
    Ok(domain
        .inject(
            &error,
            consumer,
            &mut RecordingCpus::new(domain.vcpus().len()),
        )
        .unwrap())
}

fn guest_read(domain: &vmce::Domain<Vec<vmce::Vcpu>>, vcpu: usize, index: u32) -> u64 {
    match domain.vcpus()[vcpu].rdmsr(index) {
        RdmsrOutcome::Handled(value) => value,
        other => panic!("{other:?}"),
    }
}

fn assert_host_released(host: &SimulatedHost) {
    assert_eq!(
        host.peek(msr::IA32_MCG_STATUS),
        Some(0),
        "MCIP cleared on the host"
    );
    for bank in 0..host.capabilities().readable_banks() {
        assert_eq!(
            host.peek(msr::ia32_mci_status(bank)).unwrap() >> 63,
            0,
            "host bank {bank} released"
        );
    }
    assert_eq!(
        host.invalid_accesses(),
        0,
        "vmce touched only MSRs the host has"
    );
}

#[test]
fn qemu_srar_on_an_application_processor() {
    let mut host = SimulatedHost::new(common::qemu_host());
    let domain = common::domain(Profile::Intel, 4);
    // mce 2 9 0xbd80000000000134 0x7 <addr> 0x86, taken by the CPU running vCPU 2.
    assert_eq!(
        host.raise(9, 0xBD80_0000_0000_0134, 0x7, OWNED_ADDR, 0x86),
        RaiseOutcome::Logged
    );
    let report = host_mc_handler(&mut host, &domain, Some(VcpuId(2))).unwrap();
    assert_eq!(
        (report.mode, report.data_vcpu, report.delivered),
        (DeliveryMode::Broadcast, Some(VcpuId(2)), 4)
    );
    assert_eq!(guest_read(&domain, 2, 0x17A), 0x7);
    assert_eq!(guest_read(&domain, 2, 0x405), 0xBD80_0000_0000_0134);
    assert_eq!(guest_read(&domain, 2, 0x406), GUEST_ADDR);
    assert_eq!(guest_read(&domain, 2, 0x407), 0x86);
    for vcpu in [0, 1, 3] {
        assert_eq!(guest_read(&domain, vcpu, 0x17A), 0x5);
        assert_eq!(guest_read(&domain, vcpu, 0x405), 0);
    }
    assert!(domain.vcpus().iter().all(|vcpu| vcpu.take_pending()));
    assert_host_released(&host);
}

#[test]
fn xen_injector_srao_writeback_reaches_vcpu_0_without_mscod() {
    let mut host = SimulatedHost::new(common::intel_host());
    let domain = common::domain(Profile::Intel, 2);
    host.raise(7, 0xBD20_0000_8000_017A, 0x5, OWNED_ADDR, 0x86);
    let report = host_mc_handler(&mut host, &domain, Some(VcpuId(1))).unwrap();
    assert_eq!(report.data_vcpu, Some(VcpuId(0)));
    assert_eq!(guest_read(&domain, 0, 0x405), 0xBD20_0000_0000_017A);
    assert_eq!(
        guest_read(&domain, 0, 0x1),
        0xBD20_0000_0000_017A,
        "P5_MC_TYPE"
    );
    assert_eq!(guest_read(&domain, 0, 0x0), GUEST_ADDR, "P5_MC_ADDR");
    assert_host_released(&host);
}

#[test]
fn patrol_scrub_with_a_corrected_error_beside_it() {
    let mut host = SimulatedHost::new(common::intel_host());
    let domain = common::domain(Profile::Intel, 2);
    host.raise(5, 0xBD00_0000_0040_00CF, 0x5, OWNED_ADDR, 0x8C);
    host.log(3, 0x9C00_0000_0000_0090, 0x1000, 0x86);
    let caps = host.capabilities();
    let event = collect(&mut host, &caps);
    assert_eq!(event.banks().len(), 2);
    let (bank, disposition) = event.most_severe(&caps).unwrap();
    assert_eq!(
        (bank.bank, disposition),
        (5, Disposition::Reflect(ReflectClass::SraoMemoryScrub))
    );
    release(&mut host, &event);
    let error = GuestMce::from_classified(
        ReflectClass::SraoMemoryScrub,
        event.mcg_status,
        &bank,
        &OFFSET_MEMORY,
    )
    .unwrap();
    domain
        .inject(&error, None, &mut RecordingCpus::new(2))
        .unwrap();
    assert_eq!(guest_read(&domain, 0, 0x405), 0xBD00_0000_0000_00CF);
    assert_eq!(guest_read(&domain, 0, 0x407), 0x8C);
    assert_host_released(&host);
}

#[test]
fn a_fatal_bank_wins_and_nothing_is_injected() {
    let mut host = SimulatedHost::new(common::intel_host());
    let domain = common::domain(Profile::Intel, 2);
    host.raise(2, 0xBD00_0000_0000_00C0, 0x5, OWNED_ADDR, 0x86);
    host.log(4, 0xBF20_0000_8000_017A, OWNED_ADDR, 0x86);
    let result = host_mc_handler(&mut host, &domain, None);
    assert_eq!(
        result,
        Err(NotReflected::Fatal(FatalReason::ProcessorContextCorrupt))
    );
    assert!(domain.vcpus().iter().all(|vcpu| !vcpu.is_pending()));
}

#[test]
fn ucna_and_corrected_errors_reach_no_guest() {
    for (status, mcg_status, reason) in [
        (0xBC00_0000_0001_0090u64, 0u64, HostOnlyReason::Ucna),
        (0xBC20_0000_8000_0136, 0, HostOnlyReason::Ucna),
        (0x9C00_0000_0000_0090, 0, HostOnlyReason::Corrected),
    ] {
        let mut host = SimulatedHost::new(common::intel_host());
        let domain = common::domain(Profile::Intel, 2);
        host.raise(1, status, mcg_status, OWNED_ADDR, 0x86);
        assert_eq!(
            host_mc_handler(&mut host, &domain, None),
            Err(NotReflected::HostOnly(reason))
        );
        assert!(
            domain
                .vcpus()
                .iter()
                .all(|vcpu| !vcpu.is_pending() && vcpu.state().mcg_status.is_empty())
        );
    }
}

#[test]
fn memory_the_guest_does_not_own_is_not_reflected() {
    let mut host = SimulatedHost::new(common::intel_host());
    let domain = common::domain(Profile::Intel, 2);
    host.raise(1, 0xBD80_0000_0000_0134, 0x7, 0x0000_3000, 0x86);
    let result = host_mc_handler(&mut host, &domain, Some(VcpuId(1)));
    assert_eq!(
        result,
        Err(NotReflected::Translate(
            vmce::address::TranslateError::NotOwned(HostFrame(3))
        ))
    );
    assert!(domain.vcpus().iter().all(|vcpu| !vcpu.is_pending()));
}

#[test]
fn qemu_broadcast_form_reflects_once() {
    // `mce -b 1 ...`: the target CPU gets the SRAO, every other CPU gets VAL|UC in bank 1 with
    // MCIP|RIPV. Each CPU's handler collects its own banks.
    let domain = common::domain(Profile::Intel, 4);
    let mut reflected = 0;
    for cpu in 0..4 {
        let mut host = SimulatedHost::new(common::qemu_host());
        if cpu == 1 {
            host.raise(1, 0xBD00_0000_0000_00C0, 0x5, OWNED_ADDR, 0x86);
        } else {
            host.raise(1, 0xA000_0000_0000_0000, 0x5, 0, 0);
        }
        match host_mc_handler(&mut host, &domain, Some(VcpuId(cpu))) {
            Ok(report) => {
                reflected += 1;
                assert_eq!(report.delivered, 4);
            }
            Err(reason) => assert_eq!(reason, NotReflected::HostOnly(HostOnlyReason::Ucna)),
        }
        assert_host_released(&host);
    }
    assert_eq!(reflected, 1);
    assert_eq!(guest_read(&domain, 0, 0x405), 0xBD00_0000_0000_00C0);
}

#[test]
fn amd_host_to_amd_guest() {
    let mut host = SimulatedHost::new(common::amd_host());
    let domain = common::domain(Profile::Amd, 4);
    let status =
        (1u64 << 63) | (1 << 61) | (1 << 60) | (1 << 58) | (1 << 43) | (0x1F << 16) | 0x0136;
    host.raise(4, status, 0x7, OWNED_ADDR, 0);
    let report = host_mc_handler(&mut host, &domain, Some(VcpuId(3))).unwrap();
    assert_eq!(
        (report.mode, report.data_vcpu, report.delivered),
        (DeliveryMode::Single, Some(VcpuId(3)), 1)
    );
    assert_eq!(guest_read(&domain, 3, 0x405), status & !(0xFFFF << 16));
    assert_eq!(guest_read(&domain, 3, 0x406), GUEST_ADDR);
    assert!(!domain.vcpus()[0].is_pending());
    assert_host_released(&host);
}

#[test]
fn a_host_with_more_than_32_banks_is_read_within_the_architectural_range() {
    let caps = HostCapabilities::new(Vendor::Intel, McgCap::from_bits_retain(0x0100_0C00 | 40));
    let mut host = SimulatedHost::new(caps);
    host.raise(31, 0xBD00_0000_0000_00C0, 0x5, OWNED_ADDR, 0x86);
    let event = collect(&mut host, &caps);
    assert_eq!(event.banks().len(), 1);
    assert_eq!(event.banks()[0].bank, 31);
    release(&mut host, &event);
    assert_host_released(&host);
}

#[test]
fn addr_and_misc_are_read_only_when_valid() {
    let mut host = SimulatedHost::new(common::intel_host());
    host.raise(2, 0xA000_0000_0000_0000, 0x5, 0xDEAD_0000, 0x86);
    let caps = host.capabilities();
    let event = collect(&mut host, &caps);
    assert_eq!((event.banks()[0].addr, event.banks()[0].misc.0), (0, 0));
}

#[test]
fn a_second_host_error_while_the_guest_handles_the_first_is_a_shutdown_report() {
    let mut host = SimulatedHost::new(common::intel_host());
    let domain = common::domain(Profile::Intel, 2);
    host.raise(1, 0xBD00_0000_0000_00C0, 0x5, OWNED_ADDR, 0x86);
    host_mc_handler(&mut host, &domain, None).unwrap();
    host.raise(1, 0xBD80_0000_0000_0134, 0x7, OWNED_ADDR + 0x1000, 0x86);
    let report = host_mc_handler(&mut host, &domain, Some(VcpuId(1))).unwrap();
    assert_eq!((report.delivered, report.shutdown), (0, 2));
    assert!(report.needs_shutdown());
}

const SRAO_SCRUB: u64 = 0xBD00_0000_0000_00C0;
const SRAR_DATA_LOAD: u64 = 0xBD80_0000_0000_0134;

/// `MCi_MISC` with a physical address mode (bits 8:6 = 2) and the given address LSB.
const fn physical_misc(lsb: u8) -> u64 {
    (2 << 6) | lsb as u64
}

#[test]
fn an_address_within_a_page_is_reflected_with_its_offset_and_misc() {
    for lsb in [6, 12] {
        for (status, mcg_status, consumer, data_vcpu) in [
            (SRAO_SCRUB, 0x5, None, 0usize),
            (SRAR_DATA_LOAD, 0x7, Some(VcpuId(1)), 1),
        ] {
            let mut host = SimulatedHost::new(common::intel_host());
            let domain = common::domain(Profile::Intel, 2);
            let misc = physical_misc(lsb);
            host.raise(1, status, mcg_status, OWNED_ADDR, misc);
            let report = host_mc_handler(&mut host, &domain, consumer).unwrap();
            assert_eq!(
                report.data_vcpu,
                Some(VcpuId(data_vcpu as u32)),
                "LSB {lsb}"
            );
            assert_eq!(guest_read(&domain, data_vcpu, 0x405), status);
            assert_eq!(
                guest_read(&domain, data_vcpu, 0x406),
                GUEST_ADDR,
                "frame rewritten, offset kept, LSB {lsb}"
            );
            assert_eq!(
                guest_read(&domain, data_vcpu, 0x407),
                misc,
                "MISC passed through, LSB {lsb}"
            );
            assert_host_released(&host);
        }
    }
}

#[test]
fn an_address_coarser_than_a_page_is_refused_with_a_reason() {
    for lsb in [13, 21, 30] {
        for (status, mcg_status, consumer, expected) in [
            (
                SRAO_SCRUB,
                0x5,
                None,
                NotReflected::HostOnly(HostOnlyReason::AddressCoarserThanPage { lsb }),
            ),
            (
                SRAR_DATA_LOAD,
                0x7,
                Some(VcpuId(1)),
                NotReflected::Fatal(FatalReason::ActionRequiredAddressCoarserThanPage { lsb }),
            ),
        ] {
            let mut host = SimulatedHost::new(common::intel_host());
            let domain = common::domain(Profile::Intel, 2);
            // The bits below the LSB are not valid; here they still name a page the guest
            // owns, so only the granularity stands between this error and the guest.
            host.raise(1, status, mcg_status, OWNED_ADDR, physical_misc(lsb));
            let caps = host.capabilities();
            let event = collect(&mut host, &caps);
            release(&mut host, &event);
            let (bank, disposition) = event.most_severe(&caps).unwrap();
            let from_host = GuestMce::from_host(&caps, event.mcg_status, &bank, &OFFSET_MEMORY);
            assert_eq!(from_host, Err(expected), "LSB {lsb}");
            let agreed = match disposition {
                Disposition::HostOnly(reason) => NotReflected::HostOnly(reason),
                Disposition::Fatal(reason) => NotReflected::Fatal(reason),
                Disposition::Reflect(class) => panic!("LSB {lsb}: reflected as {class}"),
            };
            assert_eq!(agreed, expected, "most_severe agrees, LSB {lsb}");
            assert!(
                expected
                    .to_string()
                    .contains(&format!("2^{lsb}-byte region")),
                "{expected}"
            );
            assert!(domain.vcpus().iter().all(|vcpu| !vcpu.is_pending()));
            assert_host_released(&host);

            let mut host = SimulatedHost::new(common::intel_host());
            host.raise(1, status, mcg_status, OWNED_ADDR, physical_misc(lsb));
            assert_eq!(host_mc_handler(&mut host, &domain, consumer), Err(expected));
            assert!(domain.vcpus().iter().all(|vcpu| !vcpu.is_pending()));
        }
    }
}

#[test]
fn a_coarse_bank_beside_a_page_sized_one() {
    // A coarse SRAO stays with the host; the page-sized SRAO in another bank is reflected.
    let mut host = SimulatedHost::new(common::intel_host());
    let domain = common::domain(Profile::Intel, 2);
    host.raise(
        2,
        SRAO_SCRUB,
        0x5,
        OWNED_ADDR + 0x20_0000,
        physical_misc(21),
    );
    host.log(5, SRAO_SCRUB, OWNED_ADDR, physical_misc(6));
    let report = host_mc_handler(&mut host, &domain, None).unwrap();
    assert_eq!(report.data_vcpu, Some(VcpuId(0)));
    assert_eq!(guest_read(&domain, 0, 0x406), GUEST_ADDR);
    assert_host_released(&host);

    // A coarse SRAR is fatal and outranks a page-sized SRAO: nothing is injected.
    let mut host = SimulatedHost::new(common::intel_host());
    let domain = common::domain(Profile::Intel, 2);
    host.raise(2, SRAR_DATA_LOAD, 0x7, OWNED_ADDR, physical_misc(21));
    host.log(5, SRAO_SCRUB, OWNED_ADDR + 0x1000, physical_misc(6));
    assert_eq!(
        host_mc_handler(&mut host, &domain, Some(VcpuId(1))),
        Err(NotReflected::Fatal(
            FatalReason::ActionRequiredAddressCoarserThanPage { lsb: 21 }
        ))
    );
    assert!(domain.vcpus().iter().all(|vcpu| !vcpu.is_pending()));
}

#[test]
fn amd_misc_low_bits_do_not_refuse_an_error() {
    // AMD's MCi_MISC has no address LSB: bits 5:0 = 21 here must not be read as one.
    let mut host = SimulatedHost::new(common::amd_host());
    let domain = common::domain(Profile::Amd, 4);
    let status = (1u64 << 63) | (1 << 61) | (1 << 60) | (1 << 59) | (1 << 58) | (1 << 43) | 0x0136;
    let misc = physical_misc(21);
    host.raise(4, status, 0x7, OWNED_ADDR, misc);
    let report = host_mc_handler(&mut host, &domain, Some(VcpuId(3))).unwrap();
    assert_eq!(report.data_vcpu, Some(VcpuId(3)));
    assert_eq!(guest_read(&domain, 3, 0x406), GUEST_ADDR);
    assert_eq!(guest_read(&domain, 3, 0x407), misc);
    assert_host_released(&host);
}
