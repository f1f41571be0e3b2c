//! A machine check during a live migration: an error raised between the pre-copy save and
//! stop-and-copy reaches the destination, and the broken frame stays broken there.

use crate::common;

use crate::shared::{CMCI_EN_THRESHOLD_2, intel_with_ctl2, native_bytes, saved};
use common::{OFFSET_MEMORY, RecordingCpus, domain};
use vmce::host::{HostBank, HostCapabilities};
use vmce::record::native::{self, NativeRecord, NativeVersion};
use vmce::record::xen::{self, XenRelease};
use vmce::record::{LossPolicy, RecordError, StateFields};
use vmce::registers::{McgStatus, MciMisc, MciStatus};
use vmce::{Access, GuestFrame, GuestMce, GuestPhysAddr, Profile, Vcpu, VcpuId};

fn srao_on(host: &HostCapabilities) -> GuestMce {
    let bank = HostBank {
        bank: 7,
        status: MciStatus::from_bits_retain(0xBD00_0000_0040_00CF),
        addr: ((common::GUEST_RAM_HOST_FRAME + 0x123) << 12) | 0xABC,
        misc: MciMisc(0x86),
    };
    GuestMce::from_host(
        host,
        McgStatus::MCIP | McgStatus::RIPV,
        &bank,
        &OFFSET_MEMORY,
    )
    .unwrap()
}

#[test]
fn an_error_between_precopy_and_stop_and_copy_reaches_the_destination() {
    let source = domain(Profile::Intel, 4);
    source.vcpus()[1].restore(&saved(1, intel_with_ctl2()).snapshot);
    let save = |domain: &vmce::Domain<Vec<Vcpu>>| -> Vec<Vec<u8>> {
        let mut records = Vec::new();
        let mut out = [0u8; native::MAX_DOMAIN_RECORD_BYTES];
        let save = domain.save();
        let len = native::encode_domain(
            &save.domain(),
            NativeVersion::V2,
            LossPolicy::Refuse,
            &mut out,
        )
        .unwrap()
        .len;
        records.push(out[..len].to_vec());
        for saved in save.vcpus() {
            records.push(native_bytes(&saved, NativeVersion::V2));
        }
        records
    };
    let restore = |records: &[Vec<u8>]| {
        let destination = domain(Profile::Intel, 4);
        let mut vcpus = Vec::new();
        for bytes in records {
            match native::decode(bytes, Profile::Intel, 4, NativeVersion::V2).unwrap() {
                (NativeRecord::Domain(saved), _) => destination.restore_domain(&saved).unwrap(),
                (NativeRecord::Vcpu(saved), _) => vcpus.push(saved),
            }
        }
        destination.restore_vcpus(&vcpus).unwrap();
        destination
    };

    let precopy = save(&source);
    // The error arrives while memory is being copied: the vCPUs have not taken it yet.
    let report = source
        .inject(
            &srao_on(&common::intel_host()),
            None,
            &mut RecordingCpus::new(4),
        )
        .unwrap();
    assert_eq!(report.delivered, 4);
    let final_copy = save(&source);

    // Xen's layout cannot carry it: the save fails loudly.
    let mut out = [0u8; xen::MAX_RECORD_BYTES];
    let error = xen::encode(
        &source.save().vcpu(VcpuId(0)).unwrap(),
        XenRelease::Xen4_10,
        LossPolicy::Refuse,
        &mut out,
    )
    .unwrap_err();
    assert!(
        matches!(error, RecordError::WouldLose { fields } if fields.contains(StateFields::PENDING))
    );

    // Restoring the pre-copy alone would have lost the error.
    let stale = restore(&precopy);
    assert!(stale.vcpus().iter().all(|vcpu| !vcpu.is_pending()));

    let destination = restore(&final_copy);
    for (id, vcpu) in destination.vcpus().iter().enumerate() {
        assert!(
            vcpu.take_pending(),
            "vCPU {id} takes the #MC on the destination"
        );
        assert_eq!(vcpu.rdmsr(0x17A), vmce::RdmsrOutcome::Handled(0x5));
    }
    assert_eq!(
        destination.vcpus()[0].rdmsr(0x405),
        vmce::RdmsrOutcome::Handled(0xBD00_0000_0000_00CF),
        "MC1_STATUS, MSCOD clear"
    );
    assert_eq!(
        destination.vcpus()[0].rdmsr(0x406),
        vmce::RdmsrOutcome::Handled(0x0012_3ABC),
        "MC1_ADDR, guest address"
    );
    assert_eq!(
        destination.vcpus()[1].rdmsr(0x405),
        vmce::RdmsrOutcome::Handled(0)
    );
    assert_eq!(
        destination.vcpus()[1].rdmsr(0x281),
        vmce::RdmsrOutcome::Handled(CMCI_EN_THRESHOLD_2),
        "CTL2 kept"
    );

    // The broken frame came back to the toolstack.
    assert_eq!(destination.broken_frames().as_slice(), &[GuestFrame(0x123)]);
    // The guest handles the #MC and clears MCIP, then touches the broken frame again.
    for vcpu in destination.vcpus() {
        assert_eq!(vcpu.wrmsr(0x17A, 0), vmce::WrmsrOutcome::Handled);
    }
    let mut cpus = RecordingCpus::new(4);
    let report = destination
        .inject_broken_access(
            GuestPhysAddr(0x0012_3F00),
            Access::DataLoad,
            VcpuId(2),
            &mut cpus,
        )
        .unwrap();
    assert_eq!(report.data_vcpu, Some(VcpuId(2)));
    let status = MciStatus::from_bits_retain(match destination.vcpus()[2].rdmsr(0x405) {
        vmce::RdmsrOutcome::Handled(value) => value,
        other => panic!("{other:?}"),
    });
    assert!(
        status.contains(MciStatus::VAL | MciStatus::UC | MciStatus::S | MciStatus::AR),
        "{status}"
    );
    assert_eq!(status.mcacod().0, 0x0134);
    assert_eq!(
        destination.vcpus()[2].rdmsr(0x406),
        vmce::RdmsrOutcome::Handled(0x0012_3F00)
    );
    assert_eq!(
        destination.vcpus()[2].rdmsr(0x17A),
        vmce::RdmsrOutcome::Handled(0x7),
        "MCIP|EIPV|RIPV"
    );
    assert_eq!(
        destination.inject_broken_access(
            GuestPhysAddr(0x0999_0000),
            Access::DataLoad,
            VcpuId(2),
            &mut cpus
        ),
        Err(vmce::delivery::InjectError::FrameNotBroken(GuestFrame(
            0x9990
        )))
    );
}

#[test]
fn synthesized_broken_access_errors_classify_as_reflectable() {
    use vmce::classify::{Disposition, classify};
    for (host, vendor) in [
        (common::intel_host(), vmce::Vendor::Intel),
        (common::amd_host(), vmce::Vendor::Amd),
    ] {
        for access in [Access::DataLoad, Access::InstructionFetch] {
            let error = GuestMce::broken_frame_access(vendor, access, GuestPhysAddr(0x5000));
            let verdict = classify(&host, error.host_mcg_status, error.host_status, error.misc);
            assert_eq!(
                verdict,
                Disposition::Reflect(error.class),
                "{vendor:?} {access:?}"
            );
            assert!(error.class.action_required());
        }
    }
}
