//! Property tests for the save records: every state round-trips through every format that
//! can carry it (and every other format names exactly what it cannot carry), and arbitrary
//! or mutated bytes never panic a decoder; whatever decodes re-encodes to the same bytes, or,
//! for the forms only Xen's tolerance accepts (short Xen payloads, dropped bits, bytes after
//! END), to a canonical form that decodes to the same state.
//!
//! The second half is the stable mirror of the record fuzz targets (`fuzz/fuzz_targets/
//! {xen_record,native_record,hvm_context}.rs`): the same checks (`tests/record_checks`), run
//! on every committed seed, on structured records and streams, and on random and mutated
//! bytes. The seeds themselves are generated here (`VMCE_BLESS=1` rewrites them).

use crate::common;
use crate::record_checks;
use crate::shared::{le_words as words, native_bytes, xen_record_bytes as xen_raw};

use proptest::prelude::*;
use vmce::record::hvm::HvmContext;
use vmce::record::native::{self, NativeRecord, NativeVersion};
use vmce::record::xen::{self, XenRelease};
use vmce::record::{HvmError, RestoreError};
use vmce::record::{LossPolicy, RecordError, SavedVcpu, StateFields};
use vmce::registers::{McgCap, McgExtCtl, McgStatus, MciCtl2, MciStatus};
use vmce::state::GuestBank;
use vmce::{Profile, VcpuId, VcpuMceState, VcpuSnapshot, Vendor};

const VCPUS: u32 = 8;

fn any_profile() -> impl Strategy<Value = Profile> {
    prop::sample::select(Profile::ALL.to_vec())
}

/// A state a vCPU of `profile` can really hold (after a restore from an old host, or after
/// any sequence of guest writes and injections).
fn valid_snapshot(profile: Profile) -> impl Strategy<Value = SavedVcpu> {
    (
        0..VCPUS,
        prop::option::of((any::<u8>(), any::<bool>())),
        any::<[u64; 2]>(),
        any::<bool>(),
        any::<u64>(),
        any::<[u64; 3]>(),
        any::<bool>(),
        any::<u8>(),
    )
        .prop_map(
            move |(id, old_caps, ctl2, lmce_en, status_bits, bank, pending, presence)| {
                let mut caps = profile.mcg_cap();
                if let Some((count, ctl_p)) = old_caps {
                    caps = McgCap::from_bits_retain((caps.bits() & !0xFF) | u64::from(count));
                    caps.set(McgCap::CTL_P, ctl_p);
                }
                let keep = |bit: u8| presence & (1 << bit) != 0;
                let mut state = VcpuMceState::new(profile);
                state.mcg_cap = caps;
                if profile.vendor() == Vendor::Intel && keep(0) {
                    state.mci_ctl2 =
                        ctl2.map(|bits| MciCtl2::from_bits_retain(bits & MciCtl2::WRITABLE));
                }
                if caps.contains(McgCap::LMCE_P) && lmce_en {
                    state.mcg_ext_ctl = McgExtCtl::LMCE_EN;
                }
                if keep(1) {
                    state.mcg_status = McgStatus::from_bits_retain(
                        status_bits & vmce::state::writable_mcg_status(caps).bits(),
                    );
                }
                if keep(2) {
                    state.banks[1] = GuestBank {
                        status: MciStatus::from_bits_retain(bank[0]).without_mscod(),
                        addr: bank[1],
                        misc: bank[2],
                    };
                }
                SavedVcpu {
                    id: VcpuId(id),
                    snapshot: VcpuSnapshot {
                        state,
                        pending: pending && keep(3),
                    }
                    .check(profile)
                    .expect("a valid state"),
                }
            },
        )
}

fn profile_and_state() -> impl Strategy<Value = (Profile, SavedVcpu)> {
    any_profile().prop_flat_map(|profile| (Just(profile), valid_snapshot(profile)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn every_state_round_trips_through_every_format_that_carries_it((profile, saved) in profile_and_state()) {
        let present = StateFields::present_in(&saved.snapshot);
        let mut out = [0u8; 128];
        for release in XenRelease::ALL {
            let result = xen::encode(&saved, release, LossPolicy::Refuse, &mut out);
            let lost = present.difference(release.carries());
            let lmce = saved.snapshot.state.mcg_cap.contains(McgCap::LMCE_P);
            match result {
                Ok(encoding) => {
                    prop_assert!(lost.is_empty());
                    prop_assert!(!lmce || release == XenRelease::Xen4_10);
                    let (decoded, len, notes) = xen::decode(&out[..encoding.len], profile, VCPUS, XenRelease::Xen4_10).unwrap();
                    prop_assert_eq!(len, encoding.len);
                    prop_assert_eq!(decoded, saved);
                    prop_assert!(notes.is_empty());
                }
                Err(RecordError::WouldLose { fields }) => prop_assert_eq!(fields, lost),
                Err(RecordError::Hvm(HvmError::LmceBeforeXen410)) => {
                    prop_assert!(lmce && lost.is_empty() && release < XenRelease::Xen4_10)
                }
                Err(other) => prop_assert!(false, "{other:?}"),
            }
        }
        for version in NativeVersion::ALL {
            let result = native::encode_vcpu(&saved, version, LossPolicy::Refuse, &mut out);
            let lost = present.difference(version.carries());
            match result {
                Ok(encoding) => {
                    prop_assert!(lost.is_empty());
                    for loader in NativeVersion::ALL.into_iter().filter(|loader| *loader >= version) {
                        let (decoded, len) = native::decode_vcpu(&out[..encoding.len], profile, VCPUS, loader).unwrap();
                        prop_assert_eq!(len, encoding.len);
                        prop_assert_eq!(decoded, saved);
                    }
                }
                Err(RecordError::WouldLose { fields }) => prop_assert_eq!(fields, lost),
                Err(other) => prop_assert!(false, "{other:?}"),
            }
        }
        // V2 carries everything a vCPU can hold.
        prop_assert!(present.difference(NativeVersion::V2.carries()).is_empty());
    }
}

/// Re-encodes whatever a decoder accepted; it must give back the input bytes.
fn check_any_bytes(bytes: &[u8], profile: Profile) -> Result<(), TestCaseError> {
    let mut out = [0u8; native::MAX_DOMAIN_RECORD_BYTES];
    for loader in XenRelease::ALL {
        let Ok((saved, len, notes)) = xen::decode(bytes, profile, VCPUS, loader) else {
            continue;
        };
        // The loader's own layout carries whatever it loaded: written back in it, the state
        // loads unchanged and nothing more is dropped.
        let encoding = xen::encode(&saved, loader, LossPolicy::Refuse, &mut out).unwrap();
        let (again, again_len, again_notes) =
            xen::decode(&out[..encoding.len], profile, VCPUS, loader).unwrap();
        prop_assert_eq!(again, saved);
        prop_assert_eq!(again_len, encoding.len);
        prop_assert!(again_notes.is_empty());
        // A release's own layout with nothing dropped is written back byte for byte (unless
        // it is an LMCE record in a layout older than 4.10, which no encoder writes).
        if let Some(release) = XenRelease::from_payload_len(len as u32 - 8)
            && notes.is_empty()
            && let Ok(encoding) = xen::encode(&saved, release, LossPolicy::Refuse, &mut out)
        {
            prop_assert_eq!(&out[..encoding.len], &bytes[..len]);
        }
    }
    if let Ok(context) = HvmContext::parse(bytes) {
        for record in context.vmce_vcpus(profile, VCPUS, XenRelease::Xen4_10) {
            let _ = record;
        }
        prop_assert!(context.records().count() <= bytes.len() / 8);
        prop_assert!(context.end_offset() <= bytes.len());
        // Re-written, the stream keeps its header and records and loses what Xen ignores.
        let rewritten = common::rewritten(&context);
        let len = rewritten.len();
        let again = HvmContext::parse(&rewritten).unwrap();
        prop_assert_eq!(again.header(), context.header());
        prop_assert!(again.records().eq(context.records()));
        let canonical = bytes[2..4] == [0, 0]
            && context.end_offset() == bytes.len()
            && bytes[bytes.len() - 6..] == [0; 6];
        if canonical {
            prop_assert_eq!(&rewritten[..len], bytes);
        }
    }
    match native::decode(bytes, profile, VCPUS, NativeVersion::NEWEST) {
        Ok((NativeRecord::Vcpu(saved), len)) => {
            let version = if bytes[1] == 1 {
                NativeVersion::V1
            } else {
                NativeVersion::V2
            };
            let encoding =
                native::encode_vcpu(&saved, version, LossPolicy::Refuse, &mut out).unwrap();
            prop_assert_eq!(&out[..encoding.len], &bytes[..len]);
        }
        Ok((NativeRecord::Domain(saved), len)) => {
            let encoding =
                native::encode_domain(&saved, NativeVersion::V2, LossPolicy::Refuse, &mut out)
                    .unwrap();
            prop_assert_eq!(&out[..encoding.len], &bytes[..len]);
        }
        Err(_) => {}
    }
    Ok(())
}

fn fixtures() -> Vec<Vec<u8>> {
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/records");
    let mut files: Vec<_> = std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| std::fs::read(path).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_a_decoder(bytes in prop::collection::vec(any::<u8>(), 0..96), profile in any_profile()) {
        check_any_bytes(&bytes, profile)?;
    }

    #[test]
    fn mutated_fixtures_never_panic_a_decoder(
        which in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        profile in any_profile(),
    ) {
        let fixtures = fixtures();
        let mut bytes = which.get(&fixtures).clone();
        for (at, value) in flips {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        let keep = cut.index(bytes.len() + 1).max(bytes.len() / 2);
        bytes.truncate(keep);
        check_any_bytes(&bytes, profile)?;
    }
}

// ---- the record fuzz targets' checks, on stable --------------------------------------------

use record_checks::{FRAME_LIMIT, Selector};
use vmce::record::SavedDomain;
use vmce::record::hvm::{HvmHeader, HvmWriter};

type Checker = fn(&[u8]) -> Result<(), String>;

const TARGETS: [(&str, Checker); 3] = [
    ("xen_record", record_checks::check_xen_record),
    ("native_record", record_checks::check_native_record),
    ("hvm_context", record_checks::check_hvm_context),
];

fn checker(target: &str) -> Checker {
    TARGETS.iter().find(|(name, _)| *name == target).unwrap().1
}

/// A fuzz input: the two selector bytes, then `bytes`.
fn input(profile: Profile, release: usize, vcpus: u32, populate: u8, bytes: &[u8]) -> Vec<u8> {
    let mut input = vec![Selector::byte(profile, release, vcpus, false), populate];
    input.extend_from_slice(bytes);
    input
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/records")
            .join(name),
    )
    .unwrap()
}

/// A context stream of `records` (typecode, instance, payload).
fn hvm_stream(records: &[(u16, u16, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![0u8; 64 + records.iter().map(|r| 8 + r.2.len()).sum::<usize>()];
    let header = HvmHeader {
        version: 1,
        changeset: 0x2f1c_95a8,
        cpuid: 0x0005_0654,
        gtsc_khz: 2_100_000,
    };
    let mut writer = HvmWriter::new(&mut out, header).unwrap();
    for (typecode, instance, payload) in records {
        writer.push(*typecode, *instance, payload).unwrap();
    }
    let len = writer.finish().unwrap().len;
    out.truncate(len);
    out
}

/// `snapshot` as vmce's encoder writes it, or, for a state no vCPU of its profile can hold
/// (a hostile record), with the words as they are.
fn native_vcpu(id: u32, snapshot: VcpuSnapshot, version: NativeVersion) -> Vec<u8> {
    match snapshot.check(crate::shared::profile_of(&snapshot)) {
        Ok(snapshot) => native_bytes(
            &SavedVcpu {
                id: VcpuId(id),
                snapshot,
            },
            version,
        ),
        Err(_) => common::raw_vcpu_record(id, &snapshot, version as u8),
    }
}

fn native_domain_raw(vendor: u8, lmce: bool, vcpus: u32, frames: &[u64]) -> Vec<u8> {
    common::raw_domain_record(vendor, lmce, vcpus, frames)
}

fn native_domain(profile: Profile, vcpus: u32, frames: &[u64]) -> Vec<u8> {
    let saved: SavedDomain = SavedDomain {
        profile,
        vcpus,
        broken_frames: frames.iter().map(|&f| vmce::GuestFrame(f)).collect(),
    };
    let mut out = [0u8; native::MAX_DOMAIN_RECORD_BYTES];
    let len = native::encode_domain(&saved, NativeVersion::V2, LossPolicy::Refuse, &mut out)
        .unwrap()
        .len;
    out[..len].to_vec()
}

/// A vCPU state a native V2 record carries: CTL2, and an error in flight.
fn in_flight(profile: Profile, id: u64) -> VcpuSnapshot {
    let mut state = VcpuMceState::new(profile);
    if profile.vendor() == Vendor::Intel {
        state.mci_ctl2 = [
            MciCtl2::from_bits_retain(id),
            MciCtl2::from_bits_retain((1 << 30) | 2),
        ];
    }
    if profile.has_lmce() {
        state.mcg_ext_ctl = McgExtCtl::LMCE_EN;
    }
    state.mcg_status = McgStatus::from_bits_retain(0x5);
    state.banks[1] = GuestBank {
        status: MciStatus::from_bits_retain(0xBD00_0000_0000_00C0),
        addr: 0x0012_3ABC + (id << 12),
        misc: 0x86,
    };
    VcpuSnapshot {
        state,
        pending: id.is_multiple_of(2),
    }
}

/// The seeds of the three record fuzz targets: target, file name, input. Populate bytes
/// pick the populated domain and the checker's domain record (see `tests/record_checks`).
/// The tables are laid out by hand, a row or two per seed (rustfmt would give each argument
/// a line of its own).
#[rustfmt::skip]
fn generated_seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    use Profile::{Amd, Intel, IntelLmce};
    let (x42, x43, x410) = (0, 1, 2);
    let (v1, v2) = (0, 1);
    let intel = 0x0100_0C02u64;
    let lmce = 0x0900_0C02u64;
    let edge = FRAME_LIMIT - 1;
    // The golden fixtures: target, fixture (and seed) name, profile, loader, vCPUs, populate.
    let fixtures = [
        ("xen_record", "xen-0-byte-payload.bin", Intel, x410, 1, 0x00),
        ("xen_record", "xen-12-byte-payload.bin", Intel, x43, 2, 0x1D),
        ("xen_record", "xen-4.10-lmce.bin", IntelLmce, x410, 4, 0x2E),
        ("xen_record", "xen-4.2-pre-4.2-1-bank.bin", Amd, x42, 4, 0x4C),
        ("xen_record", "xen-4.2-pre-4.2-40-banks.bin", Intel, x42, 1, 0x67),
        ("xen_record", "xen-4.2-pre-4.2-host-caps.bin", Intel, x43, 2, 0x88),
        ("xen_record", "xen-4.3-ctl2-reserved-bits.bin", Intel, x410, 3, 0xB3),
        ("xen_record", "xen-4.3-ctl2.bin", Intel, x43, 2, 0xD1),
        ("xen_record", "xen-8-byte-lmce.bin", IntelLmce, x410, 4, 0xE6),
        ("hvm_context", "hvm-context-xen-4.10.bin", Intel, 0, 4, 0x00),
        ("hvm_context", "hvm-context-bytes-after-end.bin", Intel, 0, 2, 0x3B),
        ("native_record", "native-v1-vcpu.bin", Amd, v1, 4, 0x00),
        ("native_record", "native-v2-domain.bin", IntelLmce, v2, 4, 0x2B),
        ("native_record", "native-v2-vcpu-in-flight.bin", Intel, v2, 1, 0x1C),
    ];
    let mut seeds: Vec<_> = fixtures
        .into_iter()
        .map(|(target, name, profile, loader, vcpus, populate)| {
            (target, name, input(profile, loader, vcpus, populate, &fixture(name)))
        })
        .collect();
    // Built: target, seed name, profile, loader, vCPUs, populate, bytes.
    let built = vec![
        // ---- xen_record: the loader rules one by one.
        ("xen_record", "xen-lmce-refused-by-4.3-loader.bin", IntelLmce, x43, 2, 0x5A,
            xen_raw(1, &words(&[lmce, 0, 1 << 30, 1]))),
        ("xen_record", "xen-4-byte-payload-for-4.2-loader.bin", Intel, x42, 2, 0x00,
            xen_raw(0, &intel.to_le_bytes()[..4])),
        ("xen_record", "xen-33-byte-payload.bin", Intel, x410, 2, 0x1F, xen_raw(0, &[0x11; 33])),
        ("xen_record", "xen-4.3-layout-for-4.2-loader.bin", Intel, x42, 2, 0x20,
            xen_raw(0, &words(&[intel, 5, 0]))),
        ("xen_record", "xen-amd-ctl2-and-ext-ctl-dropped.bin", Amd, x410, 2, 0x3D,
            xen_raw(1, &words(&[0x2, 1 << 30 | 7, u64::MAX, 1]))),
        ("xen_record", "xen-ext-ctl-without-lmce-dropped.bin", Intel, x410, 3, 0x47,
            xen_raw(2, &words(&[intel, 0, 0, 0xFFFF]))),
        ("xen_record", "xen-lmce-en-without-lmce-p-dropped.bin", Intel, x43, 2, 0x0B,
            xen_raw(1, &words(&[intel, 0, 0, 1]))),
        ("xen_record", "xen-caps-outside-profile.bin", Intel, x410, 2, 0x6B,
            xen_raw(0, &words(&[intel | 1 << 9, 0, 0, 0]))),
        ("xen_record", "xen-no-such-vcpu.bin", Intel, x410, 2, 0x90,
            xen_raw(2, &words(&[intel, 0, 0, 0]))),
        ("xen_record", "xen-27-byte-payload-partial-word.bin", IntelLmce, x410, 2, 0xA8,
            xen_raw(1, &[words(&[lmce, 0x4000_0001, 0x0102_0304_0506_0708]), vec![1, 2, 3]].concat())),
        // ---- hvm_context
        ("hvm_context", "hvm-context-4.2-records-every-vcpu.bin", Intel, 0, 3, 0x15, hvm_stream(&[
            (2, 0, vec![0x11; 4]),
            (18, 0, words(&[intel])),
            (18, 1, words(&[0x0100_0828])),
            (18, 2, words(&[0x106])),
        ])),
        ("hvm_context", "hvm-context-duplicate-vcpu.bin", Intel, 0, 2, 0x2A, hvm_stream(&[
            (18, 0, words(&[intel, 5, 0])),
            (18, 1, words(&[intel, 0, 1 << 30])),
            (18, 0, words(&[intel])),
        ])),
        ("hvm_context", "hvm-context-missing-vcpus.bin", IntelLmce, 0, 4, 0x1C,
            hvm_stream(&[(18, 2, words(&[lmce, 0, 0, 1]))])),
        ("hvm_context", "hvm-context-lmce-only-4.10.bin", IntelLmce, 0, 2, 0xEF,
            hvm_stream(&[(18, 0, words(&[lmce, 0, 0, 1])), (18, 1, words(&[lmce]))])),
        ("hvm_context", "hvm-context-reserved-ctl2-dropped.bin", Intel, 0, 2, 0x71, hvm_stream(&[
            (18, 0, words(&[intel, 1 << 31 | 3, 0])),
            (18, 1, words(&[intel, 0, u64::MAX])),
        ])),
        ("hvm_context", "hvm-context-short-payloads.bin", Amd, 0, 2, 0x96, hvm_stream(&[
            (18, 0, vec![2, 0, 0, 0]),
            (18, 1, vec![2, 1, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]),
        ])),
        ("hvm_context", "hvm-context-hostile-caps.bin", Intel, 0, 2, 0x52, hvm_stream(&[
            (18, 0, words(&[intel])),
            (18, 1, words(&[u64::MAX, 1 << 40])),
        ])),
        // ---- native_record
        ("native_record", "native-v2-vcpu-under-v1-loader.bin", Intel, v1, 1, 0x05,
            fixture("native-v2-vcpu-in-flight.bin")),
        ("native_record", "native-domain-frame-at-52-bit-edge.bin", Intel, v2, 1, 0x04, [
            native_domain_raw(0, false, 1, &[edge, 0]),
            native_vcpu(0, in_flight(Intel, 0), NativeVersion::V2),
        ].concat()),
        ("native_record", "native-domain-frame-beyond-52-bits.bin", Intel, v2, 1, 0x04, [
            native_domain_raw(0, false, 1, &[FRAME_LIMIT]),
            native_vcpu(0, in_flight(Intel, 0), NativeVersion::V2),
        ].concat()),
        ("native_record", "native-domain-64-frames-into-a-full-list.bin", Amd, v2, 1, 0x1C, [
            native_domain_raw(1, false, 1, &(0..64).map(|k| 0x2000 + k).collect::<Vec<_>>()),
            native_vcpu(0, in_flight(Amd, 0), NativeVersion::V2),
        ].concat()),
        ("native_record", "native-domain-65-frames.bin", Intel, v2, 2, 0x00,
            native_domain_raw(0, false, 2, &(0..65).collect::<Vec<_>>())),
        ("native_record", "native-domain-of-another-count.bin", Intel, v2, 2, 0x61, [
            native_domain_raw(0, false, 3, &[7]),
            native_vcpu(0, in_flight(Intel, 0), NativeVersion::V2),
            native_vcpu(1, in_flight(Intel, 1), NativeVersion::V2),
        ].concat()),
        ("native_record", "native-hostile-vcpu.bin", Intel, v2, 2, 0x3E, {
            let mut hostile = in_flight(Intel, 1);
            hostile.state.mci_ctl2[0] = MciCtl2::from_bits_retain(1 << 31);
            hostile.state.banks[1].status = MciStatus::from_bits_retain(0xBD00_0000_1234_00C0);
            hostile.state.mcg_status = McgStatus::from_bits_retain(0x1F);
            [
                native_vcpu(0, in_flight(Intel, 0), NativeVersion::V2),
                native_vcpu(1, hostile, NativeVersion::V2),
            ]
            .concat()
        }),
        ("native_record", "native-hostile-vcpu-mscod.bin", Intel, v2, 2, 0x9C, {
            let mut hostile = in_flight(Intel, 1);
            hostile.state.banks[1].status = MciStatus::from_bits_retain(0xBD00_0000_1234_00C0);
            native_vcpu(1, hostile, NativeVersion::V2)
        }),
        ("native_record", "native-hostile-vcpu-lmce-s-without-lmce-p.bin", Intel, v2, 2, 0xC3, {
            let mut hostile = in_flight(Intel, 0);
            hostile.state.mcg_status = McgStatus::from_bits_retain(0xD);
            native_vcpu(0, hostile, NativeVersion::V2)
        }),
        ("native_record", "native-non-canonical-varint.bin", Intel, v2, 1, 0x00,
            vec![2, 2, 5, 0, 0, 0, 0x81, 0x00, 0]),
    ];
    for (target, name, profile, loader, vcpus, populate, bytes) in built {
        seeds.push((target, name, input(profile, loader, vcpus, populate, &bytes)));
    }
    // A vCPU record of the other vendor, under a hostile selector.
    seeds.push((
        "xen_record",
        "xen-other-vendor-hostile.bin",
        [vec![Selector::byte(Amd, x410, 3, true), 0xF4], xen_raw(1, &words(&[0x106, 0, 0, 0]))]
            .concat(),
    ));
    // Whole-domain streams: name, profile, vCPUs, populate, vCPU records in order, domain
    // records (0: none; 1: first; 2: first, and another after vCPU 0).
    let whole_domains = [
        ("native-whole-domain.bin", IntelLmce, 3, 0x0F, &[0u32, 1, 2][..], 1),
        ("native-whole-domain-amd.bin", Amd, 2, 0x96, &[1, 0][..], 1),
        ("native-duplicate-vcpu.bin", Intel, 3, 0x1B, &[0, 1, 1, 2][..], 1),
        ("native-missing-vcpu.bin", Intel, 3, 0x04, &[0, 2][..], 1),
        ("native-missing-vcpu-no-domain-record.bin", IntelLmce, 4, 0x6A, &[3, 1][..], 0),
        ("native-two-domain-records.bin", Intel, 2, 0x33, &[0, 1][..], 2),
    ];
    for (name, profile, vcpus, populate, ids, domains) in whole_domains {
        let mut stream = Vec::new();
        if domains > 0 {
            stream.extend(native_domain(profile, vcpus, &[0x123, edge]));
        }
        for &id in ids {
            stream.extend(native_vcpu(id, in_flight(profile, u64::from(id)), NativeVersion::V2));
            if domains == 2 && id == 0 {
                stream.extend(native_domain(profile, vcpus, &[0x456]));
            }
        }
        seeds.push(("native_record", name, input(profile, v2, vcpus, populate, &stream)));
    }
    seeds
}

fn seed_path(target: &str, name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target)
        .join(name)
}

/// The committed seeds are the generated ones (`VMCE_BLESS=1 cargo test --test
/// record_properties` rewrites them); minimized crash inputs may sit beside them.
#[test]
fn fuzz_seeds_are_current() {
    let bless = std::env::var_os("VMCE_BLESS").is_some();
    for (target, name, input) in generated_seeds() {
        let path = seed_path(target, name);
        if bless {
            std::fs::write(&path, &input).unwrap();
        } else {
            let committed = std::fs::read(&path).unwrap_or_default();
            assert_eq!(
                committed,
                input,
                "{} is stale: VMCE_BLESS=1",
                path.display()
            );
        }
    }
}

/// Every committed seed passes its target's checks, under every populated domain and every
/// checker domain record.
#[test]
fn every_fuzz_seed_passes_its_target_checks() {
    for (target, check) in TARGETS {
        let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds")
            .join(target);
        let mut files: Vec<_> = std::fs::read_dir(directory)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty());
        for path in files {
            let mut input = std::fs::read(&path).unwrap();
            if let Err(failure) = check(&input) {
                panic!("{}: {failure}", path.display());
            }
            if input.len() >= 2 {
                for populate in [0x00, 0x1F, 0x3A, 0x55, 0x84, 0xAB, 0xD6, 0xE9] {
                    input[1] = populate;
                    if let Err(failure) = check(&input) {
                        panic!("{} with populate {populate:#x}: {failure}", path.display());
                    }
                }
            }
        }
    }
    // The seeds reach every outcome that matters.
    let seen = record_checks::SEEN.with(|set| set.borrow().clone());
    let mut missing = Vec::new();
    for kind in [
        "restore_vcpus",
        "restore",
        "restore_domain",
        "Vcpu::restore",
    ] {
        for domain in ["fresh", "populated"] {
            missing.push(format!("{kind} {domain} Ok"));
        }
    }
    for (kind, error) in [
        ("restore_vcpus", "NoSuchVcpu"),
        ("restore_vcpus", "DuplicateVcpu"),
        ("restore_vcpus", "Ctl2Reserved"),
        ("restore_vcpus", "Caps"),
        ("restore_vcpus", "VendorMismatch"),
        ("restore_vcpus", "MscodInRecord"),
        ("restore_vcpus", "McgStatusReserved"),
        ("restore", "MissingVcpu"),
        ("restore", "DuplicateVcpu"),
        ("restore", "ProfileMismatch"),
        ("restore", "VcpuCountMismatch"),
        ("restore", "BrokenFramesCapacity"),
        ("restore_domain", "BrokenFramesCapacity"),
        ("restore_domain", "ProfileMismatch"),
        ("Vcpu::restore", "ExtCtlReserved"),
        ("Vcpu::restore", "ExtCtlWithoutLmce"),
    ] {
        missing.push(format!("{kind} populated {error}"));
    }
    for outcome in [
        "xen load BadLength",
        "xen load LmceBeforeXen410",
        "xen load Caps",
        "xen load NoSuchVcpu",
        "native decode FrameOutOfRange",
        "native decode TooManyBrokenFrames",
        "native decode MalformedPayload",
        "native decode UnsupportedVersion",
        "native decode Ctl2Reserved",
        "walker Ok",
        "walker TwoDomainRecords",
        "walker Record",
        "notes checked against a live vCPU",
    ] {
        missing.push(outcome.to_string());
    }
    missing.retain(|outcome| !seen.contains(outcome));
    assert!(
        missing.is_empty(),
        "no seed reaches {missing:?}; seen {seen:?}"
    );
}

/// A frame at or beyond 2^40 is beyond the 52-bit physical address space: the decoder
/// refuses it (`FrameOutOfRange`), and `src/broken.rs` says such frames are never listed,
/// "the entry points refuse them". A domain record made by the toolstack rather than
/// decoded reaches `Domain::restore` and `Domain::restore_domain` unchecked: they list the
/// frame, and the domain's next save writes a record its destination refuses.
#[test]
fn restore_lists_no_frame_beyond_52_bits() {
    for whole in [false, true] {
        let domain = record_checks::fresh(Profile::Intel, 1);
        let saved: SavedDomain = SavedDomain {
            profile: Profile::Intel,
            vcpus: 1,
            broken_frames: [
                vmce::GuestFrame(FRAME_LIMIT - 1),
                vmce::GuestFrame(FRAME_LIMIT),
            ]
            .into_iter()
            .collect(),
        };
        let result = if whole {
            let vcpu = SavedVcpu {
                id: VcpuId(0),
                snapshot: VcpuSnapshot {
                    state: VcpuMceState::new(Profile::Intel),
                    pending: false,
                }
                .check(Profile::Intel)
                .unwrap(),
            };
            domain.restore(Some(&saved), &[vcpu])
        } else {
            domain.restore_domain(&saved)
        };
        assert_eq!(
            result,
            Err(RestoreError::FrameOutOfRange { frame: FRAME_LIMIT })
        );
        assert!(domain.broken_frames().is_empty());
    }
}

/// Words a `VMCE_VCPU` payload or a native record is likely to matter with: every profile's
/// caps, old hosts' caps, caps outside every profile, CTL2 values with and without reserved
/// bits, `LMCE_EN` and reserved `MCG_EXT_CTL` bits; or any word.
fn interesting_word() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => prop::sample::select(vec![
            0u64,
            0x0100_0C02,
            0x0900_0C02,
            0x2,
            0x0100_0828,
            0x106,
            0x101,
            0x0100_0E02,
            (1 << 30) | 5,
            0x7FFF,
            1 << 31,
            1,
            3,
            u64::MAX,
        ]),
        1 => any::<u64>(),
    ]
}

/// The two selector bytes, any.
fn selector() -> impl Strategy<Value = (u8, u8)> {
    (any::<u8>(), any::<u8>())
}

fn profile_of(selector: u8) -> Profile {
    Selector::split(&[selector, 0]).unwrap().0.profile
}

/// A payload of interesting words, cut anywhere from 0 to 40 bytes.
fn xen_payload() -> impl Strategy<Value = Vec<u8>> {
    (prop::collection::vec(interesting_word(), 0..6), 0usize..41).prop_map(|(list, cut)| {
        let mut bytes = words(&list);
        bytes.truncate(cut);
        bytes
    })
}

/// One native record for a destination of `profile`: a vCPU record of a state the profile
/// can hold (or with one field made hostile), a domain record of any vendor, count and
/// frames around the 52-bit edge, or a few bytes of garbage.
fn native_record_bytes(profile: Profile) -> impl Strategy<Value = Vec<u8>> {
    let frame = prop_oneof![
        prop::sample::select(vec![0u64, 0x123, FRAME_LIMIT - 1, FRAME_LIMIT, u64::MAX]),
        0u64..0x200,
    ];
    prop_oneof![
        4 => (valid_snapshot(profile), 0u32..5, any::<bool>(), prop::option::of((0usize..4, interesting_word())))
            .prop_map(|(saved, id, v2, hostile)| {
                let mut snapshot = *saved.snapshot;
                if let Some((field, word)) = hostile {
                    let state = &mut snapshot.state;
                    match field {
                        0 => state.mcg_cap = McgCap::from_bits_retain(word),
                        1 => state.mci_ctl2[1] = MciCtl2::from_bits_retain(word),
                        2 => state.mcg_ext_ctl = McgExtCtl::from_bits_retain(word),
                        _ => state.mcg_status = McgStatus::from_bits_retain(word),
                    }
                }
                let version = if v2 || !StateFields::present_in(&snapshot).difference(NativeVersion::V1.carries()).is_empty() {
                    NativeVersion::V2
                } else {
                    NativeVersion::V1
                };
                native_vcpu(id, snapshot, version)
            }),
        2 => (0u8..3, any::<bool>(), 0u32..6, prop::collection::vec(frame, 0..4))
            .prop_map(|(vendor, lmce, vcpus, frames)| native_domain_raw(vendor, lmce, vcpus, &frames)),
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ]
}

fn hvm_record() -> impl Strategy<Value = (u16, u16, Vec<u8>)> {
    (
        prop::sample::select(vec![18u16, 18, 18, 2, 3]),
        0u16..5,
        xen_payload(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn xen_record_checks_hold_on_structured_records(
        (selector, populate) in selector(),
        instance in 0u16..5,
        payload in xen_payload(),
    ) {
        let bytes = xen_raw(instance, &payload);
        let data = [&[selector, populate][..], &bytes].concat();
        if let Err(failure) = record_checks::check_xen_record(&data) {
            prop_assert!(false, "{failure}");
        }
    }

    #[test]
    fn native_record_checks_hold_on_structured_streams(
        (selector, populate, records) in selector().prop_flat_map(|(selector, populate)| {
            (Just(selector), Just(populate), prop::collection::vec(native_record_bytes(profile_of(selector)), 0..6))
        }),
    ) {
        let data = [vec![selector, populate], records.concat()].concat();
        if let Err(failure) = record_checks::check_native_record(&data) {
            prop_assert!(false, "{failure}");
        }
    }

    #[test]
    fn hvm_context_checks_hold_on_structured_streams(
        (selector, populate) in selector(),
        records in prop::collection::vec(hvm_record(), 0..6),
        tail in prop::collection::vec(any::<u8>(), 0..3),
    ) {
        let data = [vec![selector, populate], hvm_stream(&records), tail].concat();
        if let Err(failure) = record_checks::check_hvm_context(&data) {
            prop_assert!(false, "{failure}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Random bytes behind the selectors, and committed seeds with a few bytes changed and
    /// cut, through every target's checks.
    #[test]
    fn record_checks_hold_on_random_and_mutated_inputs(
        which in any::<prop::sample::Index>(),
        random in prop::collection::vec(any::<u8>(), 2..64),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        for (target, check) in TARGETS {
            if let Err(failure) = check(&random) {
                prop_assert!(false, "{target}, random {random:x?}: {failure}");
            }
        }
        let seeds = generated_seeds();
        let (target, name, mut bytes) = which.get(&seeds).clone();
        for (at, value) in flips {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        let keep = cut.index(bytes.len() + 1).max(bytes.len() / 2);
        bytes.truncate(keep);
        if let Err(failure) = checker(target)(&bytes) {
            prop_assert!(false, "{target}, mutated {name} {bytes:x?}: {failure}");
        }
    }
}
