//! Save records: Xen's `VMCE_VCPU` layouts byte for byte, the HVM context walk, native
//! V1/V2 records, and every way a hostile or mistaken record is refused without a partial
//! restore.

mod common;

use common::{OffsetMemory, RecordingCpus, domain};
use vmce::host::{HostBank, HostCapabilities};
use vmce::record::hvm::{HvmContext, HvmHeader, HvmWriter};
use vmce::record::native::{self, NativeRecord, NativeVersion, RecordKind};
use vmce::record::xen::{self, XenRelease};
use vmce::record::{HvmError, NativeError, RestoreError, StateError};
use vmce::record::{LoadNotes, LossPolicy, RecordError, SavedDomain, SavedVcpu, StateFields};
use vmce::registers::{McgCap, McgExtCtl, McgStatus, MciCtl2, MciMisc, MciStatus};
use vmce::state::GuestBank;
use vmce::{
    Access, BrokenFrames, GuestFrame, GuestMce, GuestPhysAddr, Profile, Vcpu, VcpuId, VcpuMceState,
    VcpuSnapshot, Vendor,
};

const CMCI_EN_THRESHOLD_2: u64 = 0x4000_0002;

fn intel_with_ctl2() -> VcpuSnapshot {
    let mut state = VcpuMceState::new(Profile::Intel);
    state.mci_ctl2 = [
        MciCtl2::empty(),
        MciCtl2::from_bits_retain(CMCI_EN_THRESHOLD_2),
    ];
    VcpuSnapshot {
        state,
        pending: false,
    }
}

fn lmce_enabled() -> VcpuSnapshot {
    let mut snapshot = intel_with_ctl2();
    snapshot.state = VcpuMceState {
        mcg_cap: Profile::IntelLmce.mcg_cap(),
        mcg_ext_ctl: McgExtCtl::LMCE_EN,
        ..snapshot.state
    };
    snapshot
}

fn in_flight() -> VcpuSnapshot {
    let mut snapshot = intel_with_ctl2();
    snapshot.state.mcg_status = McgStatus::MCIP | McgStatus::RIPV;
    snapshot.state.banks[1] = GuestBank {
        status: MciStatus::from_bits_retain(0xBD00_0000_0000_00CF),
        addr: 0x0012_3ABC,
        misc: 0x86,
    };
    snapshot.pending = true;
    snapshot
}

/// The profile a test snapshot belongs to: its vendor, with LMCE when its caps have it.
fn profile_of(snapshot: &VcpuSnapshot) -> Profile {
    match snapshot.state.vendor {
        Vendor::Amd => Profile::Amd,
        Vendor::Intel if snapshot.state.mcg_cap.contains(McgCap::LMCE_P) => Profile::IntelLmce,
        Vendor::Intel => Profile::Intel,
    }
}

fn saved(id: u32, snapshot: VcpuSnapshot) -> SavedVcpu {
    SavedVcpu {
        id: VcpuId(id),
        snapshot: snapshot.check(profile_of(&snapshot)).unwrap(),
    }
}

fn xen_bytes(saved: &SavedVcpu, release: XenRelease) -> Vec<u8> {
    let mut out = [0u8; xen::MAX_RECORD_BYTES];
    let encoding = xen::encode(saved, release, LossPolicy::Refuse, &mut out).unwrap();
    assert!(encoding.dropped.is_empty());
    out[..encoding.len].to_vec()
}

fn native_bytes(saved: &SavedVcpu, version: NativeVersion) -> Vec<u8> {
    let mut out = [0u8; native::MAX_VCPU_RECORD_BYTES];
    let encoding = native::encode_vcpu(saved, version, LossPolicy::Refuse, &mut out).unwrap();
    out[..encoding.len].to_vec()
}

fn xen_record(instance: u16, payload: &[u64]) -> Vec<u8> {
    let mut bytes = vec![18, 0];
    bytes.extend_from_slice(&instance.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u32 * 8).to_le_bytes());
    for word in payload {
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    bytes
}

// ---- Xen layout ------------------------------------------------------------------------

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

/// A `VMCE_VCPU` record with a payload of exactly `payload` bytes.
fn xen_record_bytes(instance: u16, payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![18, 0];
    bytes.extend_from_slice(&instance.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
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
    assert_eq!(
        decode(0x0100_0806, Profile::Amd, XenRelease::Xen4_10),
        Err(RecordError::State(StateError::Caps(
            CapsError::UnsupportedBits {
                profile: Profile::Amd,
                bits: 0x0100_0800
            }
        )))
    );
    // EMC_P is outside the Intel profile.
    assert_eq!(
        decode(0x0300_0C02, Profile::Intel, XenRelease::Xen4_10),
        Err(RecordError::State(StateError::Caps(
            CapsError::UnsupportedBits {
                profile: Profile::Intel,
                bits: 0x0200_0000
            }
        )))
    );
    // The bank-count field is bits 7:0 only: bit 9 (EXT_P) is a capability bit, refused.
    assert_eq!(
        decode(0x0100_0EFF, Profile::Intel, XenRelease::Xen4_10),
        Err(RecordError::State(StateError::Caps(
            CapsError::UnsupportedBits {
                profile: Profile::Intel,
                bits: 0x200
            }
        )))
    );
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
    assert_eq!(
        xen::encode(
            &saved(70_000, intel_with_ctl2()),
            XenRelease::Xen4_10,
            refuse,
            &mut [0u8; 64]
        ),
        Err(RecordError::Hvm(HvmError::VcpuIdTooLarge { id: 70_000 }))
    );
    assert_eq!(
        xen::encode(
            &saved(0, intel_with_ctl2()),
            XenRelease::Xen4_10,
            refuse,
            &mut [0u8; 39]
        ),
        Err(RecordError::BufferTooSmall { needed: 40 })
    );
}

// ---- HVM context -----------------------------------------------------------------------

const HEADER: HvmHeader = HvmHeader {
    version: 1,
    changeset: 0x1234_5678,
    cpuid: 0x0005_0654,
    gtsc_khz: 2_000_000,
};

fn context(vcpus: &[SavedVcpu], release: XenRelease) -> Vec<u8> {
    let mut out = vec![0u8; 4096];
    let mut writer = HvmWriter::new(&mut out, HEADER).unwrap();
    writer.push(2, 0, &[0xAA; 1024]).unwrap(); // CPU
    for vcpu in vcpus {
        writer.push(3, vcpu.id.0 as u16, &[0x55; 3]).unwrap(); // odd lengths are skipped too
        writer.push_vmce(vcpu, release, LossPolicy::Refuse).unwrap();
    }
    writer.push(5, 0, &[]).unwrap();
    let len = writer.finish().unwrap().len;
    out.truncate(len);
    out
}

#[test]
fn hvm_context_walk_finds_every_vmce_record() {
    let vcpus = [
        saved(0, intel_with_ctl2()),
        saved(
            1,
            VcpuSnapshot {
                state: VcpuMceState::new(Profile::Intel),
                pending: false,
            },
        ),
    ];
    let blob = context(&vcpus, XenRelease::Xen4_10);
    let parsed = HvmContext::parse(&blob).unwrap();
    assert_eq!(parsed.header(), HEADER);
    assert_eq!(parsed.records().count(), 1 + 2 * 2 + 1);
    let restored: Vec<_> = parsed
        .vmce_vcpus(Profile::Intel, 2, XenRelease::Xen4_10)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        restored,
        vcpus.map(|vcpu| (vcpu, LoadNotes::NONE)),
        "nothing dropped"
    );
    assert_eq!(parsed.end_offset(), blob.len());
    // A 4.3 loader refuses the 4.10 records inside the stream.
    assert!(
        parsed
            .vmce_vcpus(Profile::Intel, 2, XenRelease::Xen4_3)
            .all(|record| matches!(
                record,
                Err(RecordError::Hvm(HvmError::BadLength { length: 32, .. }))
            ))
    );
}

#[test]
fn hvm_context_framing_errors_are_named() {
    let blob = context(&[saved(0, intel_with_ctl2())], XenRelease::Xen4_3);
    // Every truncation is an error, never a panic or a partial walk.
    for cut in 0..blob.len() {
        let error = HvmContext::parse(&blob[..cut]).unwrap_err();
        assert!(
            matches!(
                error,
                RecordError::Truncated { .. } | RecordError::Hvm(HvmError::MissingEnd)
            ),
            "cut at {cut}: {error:?}"
        );
    }
    // Running out before END: no room for a descriptor, or nothing at all.
    assert_eq!(
        HvmContext::parse(&blob[..blob.len() - 1]).unwrap_err(),
        RecordError::Hvm(HvmError::MissingEnd)
    );
    assert_eq!(
        HvmContext::parse(&blob[..blob.len() - 8]).unwrap_err(),
        RecordError::Hvm(HvmError::MissingEnd)
    );
    let mut bad_magic = blob.clone();
    bad_magic[8] ^= 1;
    assert_eq!(
        HvmContext::parse(&bad_magic).unwrap_err(),
        RecordError::Hvm(HvmError::BadMagic { found: 0x5438_1287 })
    );
    let mut no_header = blob.clone();
    no_header[0] = 18;
    assert_eq!(
        HvmContext::parse(&no_header).unwrap_err(),
        RecordError::Hvm(HvmError::MissingHeader { found: 18 })
    );
    // A record whose length runs past the end of the stream.
    let mut overlong = blob.clone();
    overlong[8 + 24 + 4..8 + 24 + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        HvmContext::parse(&overlong).unwrap_err(),
        RecordError::Truncated { .. }
    ));
}

/// Xen loads the header with a strict-length entry load and checks its magic and version
/// (`HVM_FILE_VERSION`, 1), not its instance. (Before: any version and only instance 0.)
#[test]
fn hvm_header_is_checked_as_xen_checks_it() {
    let blob = context(&[saved(0, intel_with_ctl2())], XenRelease::Xen4_10);
    for version in [0u32, 2, u32::MAX] {
        let mut other_version = blob.clone();
        other_version[12..16].copy_from_slice(&version.to_le_bytes());
        let error = HvmContext::parse(&other_version).unwrap_err();
        assert_eq!(
            error,
            RecordError::Hvm(HvmError::BadHeaderVersion { found: version })
        );
        assert!(error.to_string().contains("expected 1"), "{error}");
    }
    // The writer writes what it is given; the loader refuses it.
    let mut out = [0u8; 256];
    let header = HvmHeader {
        version: 2,
        ..HEADER
    };
    let len = HvmWriter::new(&mut out, header)
        .unwrap()
        .finish()
        .unwrap()
        .len;
    assert_eq!(
        HvmContext::parse(&out[..len]).unwrap_err(),
        RecordError::Hvm(HvmError::BadHeaderVersion { found: 2 })
    );
    // Any instance: Xen does not look at it.
    let mut header_instance = blob.clone();
    header_instance[2..4].copy_from_slice(&0x1234u16.to_le_bytes());
    let parsed = HvmContext::parse(&header_instance).unwrap();
    assert_eq!(parsed.header(), HEADER);
    assert_eq!(
        parsed
            .vmce_vcpus(Profile::Intel, 1, XenRelease::Xen4_10)
            .count(),
        1
    );
    // Exactly 24 bytes: a longer or shorter header record is refused, even when the first 24
    // bytes are a valid header.
    for length in [0u32, 16, 23, 25, 32] {
        let mut resized = blob[..8].to_vec();
        resized[4..8].copy_from_slice(&length.to_le_bytes());
        let mut payload = blob[8..32].to_vec();
        payload.resize(length as usize, 0);
        resized.extend_from_slice(&payload);
        resized.extend_from_slice(&blob[32..]);
        assert_eq!(
            HvmContext::parse(&resized).unwrap_err(),
            RecordError::Hvm(HvmError::BadHeaderLength { length }),
            "{length}"
        );
    }
}

/// Xen's load stops at the first record whose typecode is END and ignores END's instance,
/// its length and every byte after it. (Before: refused as BadEnd or TrailingBytes.)
#[test]
fn hvm_end_stops_the_load_and_what_follows_is_ignored() {
    let vcpus = [saved(0, intel_with_ctl2())];
    let blob = context(&vcpus, XenRelease::Xen4_10);
    let expected = vec![(vcpus[0], LoadNotes::NONE)];
    let walk = |bytes: &[u8]| {
        let parsed = HvmContext::parse(bytes).unwrap();
        assert_eq!(parsed.header(), HEADER);
        let restored: Vec<_> = parsed
            .vmce_vcpus(Profile::Intel, 1, XenRelease::Xen4_10)
            .collect::<Result<_, _>>()
            .unwrap();
        (restored, parsed.records().count(), parsed.end_offset())
    };
    let canonical = walk(&blob);
    assert_eq!(canonical, (expected, 4, blob.len()));

    let mut trailing = blob.clone();
    trailing.extend_from_slice(&[0xEE; 3]);
    assert_eq!(walk(&trailing), canonical);

    let mut end_with_instance_and_length = blob.clone();
    let end = end_with_instance_and_length.len() - 8;
    end_with_instance_and_length[end + 2..end + 8].copy_from_slice(&[0x22, 0, 9, 0, 0, 0]);
    assert_eq!(walk(&end_with_instance_and_length), canonical);
    // END claims more bytes than there are: still ignored.
    end_with_instance_and_length[end + 4..end + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(walk(&end_with_instance_and_length), canonical);

    // A VMCE_VCPU record after END is not loaded, nor a malformed one.
    let mut after_end = blob.clone();
    after_end.extend_from_slice(&xen_record(0, &[0x0100_0C02, 0x8000, 0, 0]));
    after_end.extend_from_slice(&[18, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
    assert_eq!(walk(&after_end), canonical);
}

// ---- native records ----------------------------------------------------------------------

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

// ---- all-or-nothing restore ----------------------------------------------------------------

#[test]
fn failed_restores_change_nothing() {
    let domain = domain(Profile::Intel, 3);
    domain.vcpus()[1].restore(&saved(1, intel_with_ctl2()).snapshot);
    let view = |vcpu: &Vcpu| (vcpu.state(), vcpu.is_pending());
    let before: Vec<_> = domain.vcpus().iter().map(view).collect();

    for records in [
        vec![saved(0, in_flight()), saved(3, in_flight())],
        vec![saved(2, in_flight()), saved(2, intel_with_ctl2())],
        vec![
            saved(0, in_flight()),
            SavedVcpu {
                id: VcpuId(2),
                snapshot: in_flight().check(Profile::IntelLmce).unwrap(),
            },
        ],
    ] {
        assert!(domain.restore_vcpus(&records).is_err());
        let after: Vec<_> = domain.vcpus().iter().map(view).collect();
        assert_eq!(after, before, "{records:?}");
        assert!(!domain.vcpus()[0].is_pending());
    }
    // A record checked for another profile than the domain's is refused as such, even one
    // whose state the domain's profile allows.
    let lmce_checked = SavedVcpu {
        id: VcpuId(1),
        snapshot: in_flight().check(Profile::IntelLmce).unwrap(),
    };
    assert_eq!(
        domain.restore_vcpus(&[lmce_checked]),
        Err(RestoreError::CheckedForOtherProfile {
            id: 1,
            checked_for: Profile::IntelLmce,
            destination: Profile::Intel
        })
    );
    // What no vCPU of the profile can hold never becomes a record to restore.
    let mut bad = in_flight();
    bad.state.mci_ctl2[0] = MciCtl2::from_bits_retain(1 << 31);
    assert_eq!(
        bad.check(Profile::Intel),
        Err(StateError::Ctl2Reserved {
            bank: 0,
            bits: 1 << 31
        })
    );
    assert_eq!(
        in_flight().check(Profile::Amd),
        Err(StateError::VendorMismatch {
            destination: Profile::Amd
        })
    );
    let mut bank0 = in_flight();
    bank0.state.banks[0].addr = 1;
    assert_eq!(bank0.check(Profile::Intel), Err(StateError::Bank0NotEmpty));
    assert_eq!(view(&domain.vcpus()[1]), before[1]);

    domain.restore_vcpus(&[saved(2, in_flight())]).unwrap();
    assert!(
        domain.vcpus()[2].take_pending(),
        "restored pending #MC re-armed"
    );
}

// ---- a machine check during a live migration -----------------------------------------------

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
        &OffsetMemory,
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
