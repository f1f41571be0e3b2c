//! vmce's native V1/V2 records: round trips, reading forward, refusing loss going back, the
//! domain record checked field by field, and envelope errors.

use crate::common;

use crate::shared::{in_flight, intel_with_ctl2, lmce_enabled, native_bytes, saved};
use common::domain;
use vmce::record::native::{self, NativeRecord, NativeVersion, RecordKind};
use vmce::record::{LossPolicy, RecordError, SavedDomain, StateFields};
use vmce::record::{NativeError, RestoreError, StateError};
use vmce::registers::{McgCap, McgStatus, MciStatus};
use vmce::{BrokenFrames, GuestFrame, Profile};

#[test]
fn native_records_round_trip_and_read_forward() {
    for snapshot in [intel_with_ctl2(), lmce_enabled()] {
        let record = saved(1, snapshot);
        let profile = if snapshot.state.mcg_cap.contains(McgCap::LMCE_P) {
            Profile::IntelLmce
        } else {
            Profile::Intel
        };
        for version in NativeVersion::ALL {
            let bytes = native_bytes(&record, version);
            assert_eq!(bytes[0], RecordKind::Vcpu as u8);
            assert_eq!(bytes[1], version as u8);
            assert_eq!(
                usize::from(u16::from_le_bytes([bytes[2], bytes[3]])),
                bytes.len() - 4
            );
            for loader in NativeVersion::ALL
                .into_iter()
                .filter(|loader| *loader >= version)
            {
                let (restored, len) = native::decode_vcpu(&bytes, profile, 2, loader).unwrap();
                assert_eq!(len, bytes.len());
                assert_eq!(restored, record, "{version} read by {loader}");
            }
        }
    }
    let record = saved(1, in_flight());
    let bytes = native_bytes(&record, NativeVersion::V2);
    assert_eq!(
        native::decode_vcpu(&bytes, Profile::Intel, 2, NativeVersion::V2)
            .unwrap()
            .0,
        record
    );
    assert_eq!(
        native::decode_vcpu(&bytes, Profile::Intel, 2, NativeVersion::V1),
        Err(RecordError::Native(NativeError::UnsupportedVersion {
            kind: RecordKind::Vcpu,
            version: 2,
            newest: 1
        }))
    );
}

#[test]
fn native_backward_encoding_refuses_loss() {
    let mut out = [0u8; native::MAX_VCPU_RECORD_BYTES];
    assert_eq!(
        native::encode_vcpu(
            &saved(0, in_flight()),
            NativeVersion::V1,
            LossPolicy::Refuse,
            &mut out
        ),
        Err(RecordError::WouldLose {
            fields: StateFields::MCG_STATUS | StateFields::BANK1 | StateFields::PENDING
        })
    );
    let domain = domain(Profile::Intel, 2);
    let mut frames: BrokenFrames = BrokenFrames::new();
    frames.insert(GuestFrame(0x123));
    domain
        .restore_domain(&SavedDomain {
            profile: Profile::Intel,
            vcpus: 2,
            broken_frames: frames,
        })
        .unwrap();
    let mut out = [0u8; native::MAX_DOMAIN_RECORD_BYTES];
    assert_eq!(
        native::encode_domain(
            &domain.save().domain(),
            NativeVersion::V1,
            LossPolicy::Refuse,
            &mut out
        ),
        Err(RecordError::WouldLose {
            fields: StateFields::BROKEN_FRAMES
        })
    );
    // Nothing to lose: V1 has no domain record, and none is written.
    let empty = common::domain(Profile::Intel, 2).save().domain();
    assert_eq!(
        native::encode_domain(&empty, NativeVersion::V1, LossPolicy::Refuse, &mut out)
            .unwrap()
            .len,
        0
    );
}

fn domain_record(vendor: u8, lmce: bool, vcpus: u32, frames: &[u64]) -> Vec<u8> {
    common::raw_domain_record(vendor, lmce, vcpus, frames)
}

#[test]
fn native_domain_record_is_checked_field_by_field() {
    let decode = |bytes: &[u8], profile: Profile| {
        native::decode_domain(bytes, profile, 4, NativeVersion::V2).map(|(saved, _)| saved)
    };
    let good = decode(
        &domain_record(0, true, 4, &[0x123, 0x456]),
        Profile::IntelLmce,
    )
    .unwrap();
    assert_eq!(good.profile, Profile::IntelLmce);
    assert_eq!(
        good.broken_frames.as_slice(),
        &[GuestFrame(0x123), GuestFrame(0x456)]
    );
    assert_eq!(
        decode(&domain_record(0, true, 4, &[]), Profile::Intel),
        Err(RecordError::Restore(RestoreError::ProfileMismatch {
            saved: Profile::IntelLmce,
            destination: Profile::Intel
        }))
    );
    assert_eq!(
        decode(&domain_record(1, true, 4, &[]), Profile::Amd),
        Err(RecordError::Native(NativeError::LmceOnAmd))
    );
    assert_eq!(
        decode(&domain_record(7, false, 4, &[]), Profile::Amd),
        Err(RecordError::Native(NativeError::UnknownVendor { code: 7 }))
    );
    assert_eq!(
        decode(&domain_record(0, false, 3, &[]), Profile::Intel),
        Err(RecordError::Restore(RestoreError::VcpuCountMismatch {
            saved: 3,
            destination: 4
        }))
    );
    let frames: Vec<u64> = (0..65).collect();
    assert_eq!(
        decode(&domain_record(0, false, 4, &frames), Profile::Intel),
        Err(RecordError::Native(NativeError::TooManyBrokenFrames {
            count: 65,
            capacity: 64
        }))
    );
    assert_eq!(
        decode(&domain_record(0, false, 4, &[1 << 40]), Profile::Intel),
        Err(RecordError::Restore(RestoreError::FrameOutOfRange {
            frame: 1 << 40
        }))
    );
    // A frame listed twice (found by the native_record fuzz target: it decoded, and
    // re-encoded without the duplicate).
    assert_eq!(
        decode(
            &domain_record(0, false, 4, &[0, 0, 0, 0x8AC]),
            Profile::Intel
        ),
        Err(RecordError::Native(NativeError::DuplicateBrokenFrame {
            frame: 0
        }))
    );
    let mut lying_length = domain_record(0, false, 4, &[0x123]);
    lying_length.push(0);
    lying_length[2] += 1;
    assert_eq!(
        decode(&lying_length, Profile::Intel),
        Err(RecordError::Native(NativeError::TrailingBytes { extra: 1 }))
    );
    // An over-long varint (vcpus = 4 as 0x84 0x00) is not the canonical encoding.
    let mut padded = vec![RecordKind::Domain as u8, 2, 5, 0, 0, 0, 0x84, 0x00, 0];
    assert_eq!(
        decode(&padded, Profile::Intel),
        Err(RecordError::Native(NativeError::MalformedPayload))
    );
    padded = vec![RecordKind::Domain as u8, 2, 4, 0, 0, 2, 4, 0];
    assert_eq!(
        decode(&padded, Profile::Intel),
        Err(RecordError::Native(NativeError::MalformedPayload)),
        "bool 2"
    );
    assert_eq!(
        native::decode_vcpu(
            &domain_record(0, false, 4, &[]),
            Profile::Intel,
            4,
            NativeVersion::V2
        ),
        Err(RecordError::Native(NativeError::WrongKind {
            expected: RecordKind::Vcpu,
            found: RecordKind::Domain
        }))
    );
    let mut v1_domain = domain_record(0, false, 4, &[]);
    v1_domain[1] = 1;
    assert_eq!(
        decode(&v1_domain, Profile::Intel),
        Err(RecordError::Native(NativeError::NoSuchVersion {
            kind: RecordKind::Domain,
            version: 1
        }))
    );
}

#[test]
fn native_envelope_errors_are_named() {
    let bytes = native_bytes(&saved(1, in_flight()), NativeVersion::V2);
    let decode = |bytes: &[u8]| {
        native::decode(bytes, Profile::Intel, 2, NativeVersion::V2).map(|(record, _)| record)
    };
    for cut in 0..bytes.len() {
        assert!(
            matches!(decode(&bytes[..cut]), Err(RecordError::Truncated { .. })),
            "cut {cut}"
        );
    }
    let mut unknown = bytes.clone();
    unknown[0] = 9;
    assert_eq!(
        decode(&unknown),
        Err(RecordError::Native(NativeError::UnknownKind { kind: 9 }))
    );
    for version in [0u8, 3, 255] {
        let mut newer = bytes.clone();
        newer[1] = version;
        assert_eq!(
            decode(&newer),
            Err(RecordError::Native(NativeError::UnsupportedVersion {
                kind: RecordKind::Vcpu,
                version,
                newest: 2
            }))
        );
    }
    assert_eq!(
        native::decode(&bytes, Profile::Intel, 1, NativeVersion::V2),
        Err(RecordError::Restore(RestoreError::NoSuchVcpu {
            id: 1,
            vcpus: 1
        }))
    );
    // A host MSCOD smuggled into the guest's bank 1.
    let mut with_mscod = in_flight();
    with_mscod.state.banks[1].status = MciStatus::from_bits_retain(0xBD00_0000_0040_00CF);
    let smuggled = common::raw_vcpu_record(0, &with_mscod, NativeVersion::V2 as u8);
    assert_eq!(
        decode(&smuggled),
        Err(RecordError::State(StateError::MscodInRecord {
            bits: 0x0040_0000
        }))
    );
    // MCG_STATUS bits the guest can never hold (LMCE_S without LMCE_P, bit 5).
    for bits in [0x8u64, 0x20] {
        let mut odd = in_flight();
        odd.state.mcg_status = McgStatus::from_bits_retain(bits | 0x5);
        let bytes = common::raw_vcpu_record(0, &odd, NativeVersion::V2 as u8);
        assert_eq!(
            decode(&bytes),
            Err(RecordError::State(StateError::McgStatusReserved { bits }))
        );
    }
    assert!(matches!(decode(&bytes), Ok(NativeRecord::Vcpu(_))));
}
