//! Xen's `VMCE_VCPU` layouts byte for byte (docs/behaviour.md §5): what each release
//! writes, and what each release's loader takes, zero-fills, drops with a note, or refuses.

use crate::common;
use crate::shared::{
    CMCI_EN_THRESHOLD_2, in_flight, intel_with_ctl2, lmce_enabled, saved, xen_record,
    xen_record_bytes,
};
use vmce::record::native::{self, NativeVersion};
use vmce::record::xen::{self, XenRelease};
use vmce::record::{HvmError, RestoreError, StateError};
use vmce::record::{LoadNotes, LossPolicy, RecordError, SavedVcpu, StateFields};
use vmce::registers::{McgExtCtl, McgStatus, MciCtl2};
use vmce::{Profile, VcpuId, VcpuSnapshot};

fn xen_bytes(saved: &SavedVcpu, release: XenRelease) -> Vec<u8> {
    let mut out = [0u8; xen::MAX_RECORD_BYTES];
    let encoding = xen::encode(saved, release, LossPolicy::Refuse, &mut out).unwrap();
    assert!(encoding.dropped.is_empty());
    out[..encoding.len].to_vec()
}

#[test]
fn xen_layouts_are_little_endian_and_unpadded() {
    let record = saved(3, intel_with_ctl2());
    let expected_42 = [
        0x12, 0x00, 0x03, 0x00, 0x08, 0x00, 0x00, 0x00, // typecode 18, vCPU 3, 8 bytes
        0x02, 0x0C, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, // caps 0x0100_0C02
    ];
    let mut lossy = [0u8; 64];
    let encoding = xen::encode(&record, XenRelease::Xen4_2, LossPolicy::Allow, &mut lossy).unwrap();
    assert_eq!(&lossy[..encoding.len], &expected_42);
    assert_eq!(encoding.dropped, StateFields::MCI_CTL2);

    let bytes_43 = xen_bytes(&record, XenRelease::Xen4_3);
    assert_eq!(bytes_43.len(), 8 + 24);
    assert_eq!(&bytes_43[4..8], &[24, 0, 0, 0]);
    assert_eq!(&bytes_43[16..24], &[0; 8], "MC0_CTL2");
    assert_eq!(
        &bytes_43[24..32],
        &CMCI_EN_THRESHOLD_2.to_le_bytes(),
        "MC1_CTL2"
    );

    let bytes_410 = xen_bytes(&record, XenRelease::Xen4_10);
    assert_eq!(bytes_410.len(), 8 + 32);
    assert_eq!(
        &bytes_410[..32],
        &bytes_43[..32]
            .iter()
            .enumerate()
            .map(|(i, b)| if i == 4 { 32 } else { *b })
            .collect::<Vec<_>>()[..]
    );
    assert_eq!(&bytes_410[32..40], &[0; 8], "MCG_EXT_CTL");
}

#[test]
fn xen_decode_zero_fills_older_layouts() {
    for release in XenRelease::ALL {
        let payload = &[0x0100_0C02, CMCI_EN_THRESHOLD_2, CMCI_EN_THRESHOLD_2, 0]
            [..release.payload_len() as usize / 8];
        let (restored, len, notes) = xen::decode(
            &xen_record(1, payload),
            Profile::Intel,
            2,
            XenRelease::Xen4_10,
        )
        .unwrap();
        assert_eq!(len, 8 + release.payload_len() as usize);
        assert_eq!(restored.id, VcpuId(1));
        assert!(notes.is_empty());
        let expected_ctl2 = if release >= XenRelease::Xen4_3 {
            MciCtl2::from_bits_retain(CMCI_EN_THRESHOLD_2)
        } else {
            MciCtl2::empty()
        };
        assert_eq!(
            restored.snapshot.state.mci_ctl2, [expected_ctl2; 2],
            "{release}"
        );
        assert_eq!(restored.snapshot.state.mcg_status, McgStatus::empty());
        assert!(!restored.snapshot.pending);
    }
}

/// Xen 4.3 and later load `VMCE_VCPU` with the zero-extending entry load: any length up to
/// their own, zero-filled (a partial word keeps its low bytes). Xen 4.2 loads it at its exact
/// length. (Before: only 8, 24 and 32 were taken.)
#[test]
fn xen_loader_takes_every_length_up_to_its_own_and_zero_extends() {
    let words: [u64; 5] = [0x0100_0C02, CMCI_EN_THRESHOLD_2, 0x4000_7FFF, 0, 0];
    let full: Vec<u8> = words.iter().flat_map(|word| word.to_le_bytes()).collect();
    for loader in XenRelease::ALL {
        for length in 0..=full.len() {
            let record = xen_record_bytes(1, &full[..length]);
            let result = xen::decode(&record, Profile::Intel, 2, loader);
            let takes = match loader {
                XenRelease::Xen4_2 => length == 8,
                XenRelease::Xen4_3 => length <= 24,
                XenRelease::Xen4_10 => length <= 32,
            };
            assert_eq!(
                loader.loads_payload_len(length as u32),
                takes,
                "{loader} {length}"
            );
            if !takes {
                assert_eq!(
                    result,
                    Err(RecordError::Hvm(HvmError::BadLength {
                        length: length as u32,
                        accepted: loader.payload_len()
                    })),
                    "{loader} {length}"
                );
                continue;
            }
            let mut padded = [0u8; 32];
            padded[..length].copy_from_slice(&full[..length]);
            let word = |i: usize| u64::from_le_bytes(padded[8 * i..8 * i + 8].try_into().unwrap());
            let (restored, len, notes) =
                result.unwrap_or_else(|e| panic!("{loader} {length}: {e}"));
            assert_eq!(len, 8 + length);
            assert!(notes.is_empty(), "{loader} {length}: {notes}");
            let state = restored.snapshot.state;
            assert_eq!(state.mcg_cap.bits(), word(0), "{loader} {length}");
            assert_eq!(
                state.mci_ctl2.map(|ctl2| ctl2.bits()),
                [word(1), word(2)],
                "{loader} {length}"
            );
        }
    }
    // The partial words, spelled out: 4 bytes of caps, 12 and 20 bytes of payload.
    let decode = |length: usize| {
        xen::decode(
            &xen_record_bytes(0, &full[..length]),
            Profile::Intel,
            1,
            XenRelease::Xen4_10,
        )
        .unwrap()
        .0
        .snapshot
        .state
    };
    assert_eq!(decode(0).mcg_cap.bits(), 0, "no payload: caps 0, 0 banks");
    assert_eq!(decode(3).mcg_cap.bits(), 0x0C02);
    assert_eq!(
        decode(12).mci_ctl2[0].bits(),
        CMCI_EN_THRESHOLD_2 & 0xFFFF_FFFF
    );
    assert_eq!(decode(20).mci_ctl2[1].bits(), 0x4000_7FFF);
    assert_eq!(decode(18).mci_ctl2[1].bits(), 0x7FFF);
    assert_eq!(decode(17).mci_ctl2[1].bits(), 0xFF);
    // Longer than the loader's own is refused, whatever the bytes.
    let record = xen_record_bytes(0, &[0; 33]);
    assert_eq!(
        xen::decode(&record, Profile::Intel, 1, XenRelease::Xen4_10),
        Err(RecordError::Hvm(HvmError::BadLength {
            length: 33,
            accepted: 32
        }))
    );
    let error = xen::decode(
        &xen_record_bytes(0, &full[..4]),
        Profile::Intel,
        1,
        XenRelease::Xen4_2,
    )
    .unwrap_err();
    assert_eq!(
        error,
        RecordError::Hvm(HvmError::BadLength {
            length: 4,
            accepted: 8
        })
    );
    assert!(error.to_string().contains("4.2 only its own"), "{error}");
}

#[test]
fn xen_decode_refuses_what_xen_refuses() {
    // A 4.2 loader refuses the longer 4.3 record, as Xen 4.2 does.
    let record = xen_record(0, &[0x0100_0C02, 0, 0]);
    assert_eq!(
        xen::decode(&record, Profile::Intel, 1, XenRelease::Xen4_2),
        Err(RecordError::Hvm(HvmError::BadLength {
            length: 24,
            accepted: 8
        }))
    );
    let mut wrong_type = xen_record(0, &[0x0100_0C02]);
    wrong_type[0] = 2;
    assert_eq!(
        xen::decode(&wrong_type, Profile::Intel, 1, XenRelease::Xen4_10),
        Err(RecordError::Hvm(HvmError::WrongTypecode { found: 2 }))
    );
    assert_eq!(
        xen::decode(
            &xen_record(4, &[0x0100_0C02]),
            Profile::Intel,
            4,
            XenRelease::Xen4_10
        ),
        Err(RecordError::Restore(RestoreError::NoSuchVcpu {
            id: 4,
            vcpus: 4
        }))
    );
    let record = xen_record(0, &[0x0100_0C02, 0, 0]);
    for cut in 0..record.len() {
        assert!(matches!(
            xen::decode(&record[..cut], Profile::Intel, 1, XenRelease::Xen4_10),
            Err(RecordError::Truncated { .. })
        ));
    }
}

/// Xen's caps check on restore tolerates every bank count (and `CTL_P`): only bits outside
/// the guest capabilities are refused. (Before: counts below 2 and above 32 were refused.)
#[test]
fn xen_caps_rule_tolerates_every_bank_count_and_refuses_the_rest() {
    use vmce::profile::CapsError;
    let decode = |caps: u64, profile: Profile, loader: XenRelease| {
        xen::decode(&xen_record(0, &[caps]), profile, 1, loader)
            .map(|(saved, _, _)| saved.snapshot.state.mcg_cap.bits())
    };
    // Pre-4.2 guests carried their host's caps: any bank count, CTL_P.
    for loader in XenRelease::ALL {
        assert_eq!(decode(0x0100_0806, Profile::Intel, loader), Ok(0x0100_0806));
        assert_eq!(decode(0x0000_0106, Profile::Amd, loader), Ok(0x0000_0106));
        for count in [0u64, 1, 2, 32, 33, 40, 255] {
            assert_eq!(
                decode(0x0100_0C00 | count, Profile::Intel, loader),
                Ok(0x0100_0C00 | count),
                "{loader}: {count} banks"
            );
            assert_eq!(
                decode(0x100 | count, Profile::Amd, loader),
                Ok(0x100 | count),
                "{loader}: {count} banks"
            );
        }
    }
    // Caps, destination profile, the bits refused.
    for (caps, profile, bits) in [
        // TES_P and SER_P are outside the AMD profile.
        (0x0100_0806, Profile::Amd, 0x0100_0800),
        // EMC_P is outside the Intel profile.
        (0x0300_0C02, Profile::Intel, 0x0200_0000),
        // The bank-count field is bits 7:0 only: bit 9 (EXT_P) is a capability bit, refused.
        (0x0100_0EFF, Profile::Intel, 0x200),
    ] {
        assert_eq!(
            decode(caps, profile, XenRelease::Xen4_10),
            Err(RecordError::State(StateError::Caps(
                CapsError::UnsupportedBits { profile, bits }
            ))),
            "{caps:#x} into {profile}"
        );
    }
}

/// Whether `LMCE_P` is refused depends on the loader's release (Xen allows it from 4.10 on),
/// not on the record's length. (Before: an 8- or 24-byte record with `LMCE_P` was refused by
/// a 4.10 loader.)
#[test]
fn xen_lmce_rule_follows_the_loader_not_the_layout() {
    let decode = |payload: &[u64], loader: XenRelease| {
        xen::decode(&xen_record(0, payload), Profile::IntelLmce, 1, loader)
            .map(|(saved, _, notes)| (saved.snapshot.state.mcg_cap.bits(), notes))
    };
    let lmce_caps = 0x0900_0C02;
    for payload in [
        &[lmce_caps][..],
        &[lmce_caps, 0, CMCI_EN_THRESHOLD_2],
        &[lmce_caps, 0, 0, 0],
    ] {
        assert_eq!(
            decode(payload, XenRelease::Xen4_10),
            Ok((lmce_caps, LoadNotes::NONE)),
            "{} bytes",
            payload.len() * 8
        );
    }
    assert_eq!(
        decode(&[lmce_caps], XenRelease::Xen4_2),
        Err(RecordError::Hvm(HvmError::LmceBeforeXen410))
    );
    for payload in [&[lmce_caps][..], &[lmce_caps, 0, 0]] {
        assert_eq!(
            decode(payload, XenRelease::Xen4_3),
            Err(RecordError::Hvm(HvmError::LmceBeforeXen410))
        );
    }
    // The LMCE opt-in is the profile's: without it LMCE_P is a bit outside the profile.
    assert_eq!(
        xen::decode(
            &xen_record(0, &[lmce_caps]),
            Profile::Intel,
            1,
            XenRelease::Xen4_10
        )
        .map(|_| ()),
        Err(RecordError::State(StateError::Caps(
            vmce::profile::CapsError::UnsupportedBits {
                profile: Profile::Intel,
                bits: 0x0800_0000
            }
        )))
    );
    // The encoder still refuses to write LMCE caps for a release before 4.10.
    let mut out = [0u8; 64];
    for release in [XenRelease::Xen4_2, XenRelease::Xen4_3] {
        assert_eq!(
            xen::encode(
                &saved(0, lmce_enabled()),
                release,
                LossPolicy::Allow,
                &mut out
            ),
            Err(RecordError::Hvm(HvmError::LmceBeforeXen410))
        );
    }
}

/// Xen stores a restored `MCi_CTL2` without checking it (and a guest can write any value to
/// it under Xen): reserved bits are dropped and reported. (Before: refused.)
#[test]
fn xen_ctl2_reserved_bits_are_dropped_and_reported() {
    let decode = |payload: &[u64], profile: Profile| {
        xen::decode(&xen_record(0, payload), profile, 1, XenRelease::Xen4_10)
            .map(|(saved, _, notes)| (saved.snapshot.state.mci_ctl2.map(|c| c.bits()), notes))
    };
    let (ctl2, notes) = decode(
        &[0x0100_0C02, 0x8000 | CMCI_EN_THRESHOLD_2, 1 << 63],
        Profile::Intel,
    )
    .unwrap();
    assert_eq!(ctl2, [CMCI_EN_THRESHOLD_2, 0]);
    assert_eq!(notes.mci_ctl2_dropped, [0x8000, 1 << 63]);
    assert_eq!(notes.mcg_ext_ctl_dropped, 0);
    assert!(!notes.is_empty());
    assert_eq!(
        notes.to_string(),
        "dropped MC0_CTL2 bits 0x8000, MC1_CTL2 bits 0x8000000000000000"
    );
    // On AMD every CTL2 bit is reserved.
    let (ctl2, notes) = decode(&[0x2, 0, CMCI_EN_THRESHOLD_2], Profile::Amd).unwrap();
    assert_eq!(ctl2, [0, 0]);
    assert_eq!(notes.mci_ctl2_dropped, [0, CMCI_EN_THRESHOLD_2]);
    assert_eq!(notes.to_string(), "dropped MC1_CTL2 bits 0x40000002");
    // The 4.3 loader too, and a short record whose partial CTL2 word has reserved bits.
    let mut short = xen_record(0, &[0x0100_0C02, 0x0001_8000]);
    short.truncate(8 + 11);
    short[4] = 11;
    let (restored, _, notes) = xen::decode(&short, Profile::Intel, 1, XenRelease::Xen4_3).unwrap();
    assert_eq!(restored.snapshot.state.mci_ctl2[0].bits(), 0);
    assert_eq!(notes.mci_ctl2_dropped, [0x0001_8000, 0]);
    assert_eq!(LoadNotes::NONE.to_string(), "nothing dropped");
    assert_eq!(LoadNotes::default(), LoadNotes::NONE);

    // vmce's own records stay strict: its writer never produces such bits.
    let mut odd = intel_with_ctl2();
    odd.state.mci_ctl2[0] = MciCtl2::from_bits_retain(0x8000);
    for version in NativeVersion::ALL {
        let bytes = common::raw_vcpu_record(0, &odd, version as u8);
        assert_eq!(
            native::decode_vcpu(&bytes, Profile::Intel, 1, version),
            Err(RecordError::State(StateError::Ctl2Reserved {
                bank: 0,
                bits: 0x8000
            }))
        );
    }
}

/// Xen stores a restored `MCG_EXT_CTL` without checking it either: bits other than `LMCE_EN`,
/// and `LMCE_EN` of a vCPU without `LMCE_P`, are dropped and reported. (Before: refused.)
#[test]
fn xen_ext_ctl_bits_xen_stores_unchecked_are_dropped_and_reported() {
    let decode = |payload: &[u64], profile: Profile| {
        xen::decode(&xen_record(0, payload), profile, 1, XenRelease::Xen4_10)
            .map(|(saved, _, notes)| (saved.snapshot.state.mcg_ext_ctl, notes))
    };
    let (ext_ctl, notes) = decode(&[0x0100_0C02, 0, 0, 1], Profile::Intel).unwrap();
    assert_eq!(ext_ctl, McgExtCtl::empty());
    assert_eq!(notes.mcg_ext_ctl_dropped, 1);
    assert_eq!(notes.to_string(), "dropped MCG_EXT_CTL bits 0x1");
    let (ext_ctl, notes) = decode(&[0x0900_0C02, 0, 0, 3], Profile::IntelLmce).unwrap();
    assert_eq!(ext_ctl, McgExtCtl::LMCE_EN);
    assert_eq!(notes.mcg_ext_ctl_dropped, 2);
    assert_eq!(
        decode(&[0x0900_0C02, 0, 0, 1], Profile::IntelLmce),
        Ok((McgExtCtl::LMCE_EN, LoadNotes::NONE))
    );
    // Native records stay strict.
    let mut odd = lmce_enabled();
    odd.state.mcg_ext_ctl = McgExtCtl::from_bits_retain(3);
    let bytes = common::raw_vcpu_record(0, &odd, NativeVersion::V1 as u8);
    assert_eq!(
        native::decode_vcpu(&bytes, Profile::IntelLmce, 1, NativeVersion::V1),
        Err(RecordError::State(StateError::ExtCtlReserved { bits: 2 }))
    );
}

#[test]
fn xen_encode_names_what_an_old_release_cannot_carry() {
    let encode = |snapshot: VcpuSnapshot, release, policy| {
        xen::encode(&saved(0, snapshot), release, policy, &mut [0u8; 64])
    };
    let would_lose = |fields| Err(RecordError::WouldLose { fields });
    let refuse = LossPolicy::Refuse;
    let in_flight_fields = StateFields::MCG_STATUS | StateFields::BANK1 | StateFields::PENDING;

    assert_eq!(
        encode(intel_with_ctl2(), XenRelease::Xen4_2, refuse),
        would_lose(StateFields::MCI_CTL2)
    );
    let error = encode(lmce_enabled(), XenRelease::Xen4_3, refuse).unwrap_err();
    assert_eq!(Err(error), would_lose(StateFields::MCG_EXT_CTL));
    assert!(error.to_string().contains("MCG_EXT_CTL"), "{error}");
    // A lossy save still cannot take LMCE_P away from the guest.
    assert_eq!(
        encode(lmce_enabled(), XenRelease::Xen4_3, LossPolicy::Allow),
        Err(RecordError::Hvm(HvmError::LmceBeforeXen410))
    );
    // Xen never carries a machine check in flight.
    let error = encode(in_flight(), XenRelease::Xen4_10, refuse).unwrap_err();
    assert_eq!(Err(error), would_lose(in_flight_fields));
    assert!(
        error
            .to_string()
            .contains("MCG_STATUS, bank 1, the pending #MC"),
        "{error}"
    );
    let lossy = encode(in_flight(), XenRelease::Xen4_10, LossPolicy::Allow).unwrap();
    assert_eq!(lossy.dropped, in_flight_fields);
    // vCPU id, buffer size, the refusal.
    for (id, buffer, refusal) in [
        (
            70_000,
            64,
            RecordError::Hvm(HvmError::VcpuIdTooLarge { id: 70_000 }),
        ),
        (0, 39, RecordError::BufferTooSmall { needed: 40 }),
    ] {
        let saved = saved(id, intel_with_ctl2());
        let mut out = vec![0u8; buffer];
        let result = xen::encode(&saved, XenRelease::Xen4_10, refuse, &mut out);
        assert_eq!(result, Err(refusal), "vCPU {id}, {buffer} bytes");
    }
}
