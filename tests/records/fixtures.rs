//! Golden fixtures: the bytes of every record format, committed under
//! `tests/fixtures/records/`, must keep decoding to the same state forever, and today's
//! encoder must keep writing the same bytes.
//!
//! The expected states are written out by hand here, not derived from the encoder. To add a
//! fixture for a new format version, add a row and run once with `VMCE_BLESS=1`: it writes
//! only files that do not exist yet; an existing fixture is never rewritten.
//!
//! Some fixtures are forms that only Xen's tolerance makes valid, and no encoder writes:
//! short Xen payloads, bits a Xen loader drops, `LMCE_P` in an old layout, a context stream
//! with bytes after END. Their bytes are spelled out here too ([`Expected::XenTolerated`],
//! [`Expected::ContextTolerated`]); for them today's encoder must write a canonical form
//! that loads to the same state and drops nothing.

use crate::common;

use std::path::PathBuf;
use vmce::record::hvm::{HvmContext, HvmHeader, HvmWriter};
use vmce::record::native::{self, NativeRecord, NativeVersion};
use vmce::record::xen::{self, XenRelease};
use vmce::record::{LoadNotes, LossPolicy, SavedDomain, SavedVcpu};
use vmce::registers::{McgCap, McgExtCtl, McgStatus, MciCtl2, MciStatus};
use vmce::state::GuestBank;
use vmce::{GuestFrame, Profile, VcpuId, VcpuMceState, VcpuSnapshot, Vendor};

fn state(
    profile: Profile,
    caps: u64,
    ctl2: [u64; 2],
    ext_ctl: u64,
    mcg_status: u64,
    bank1: [u64; 3],
) -> VcpuSnapshot {
    VcpuSnapshot {
        state: VcpuMceState {
            vendor: profile.vendor(),
            mcg_cap: McgCap::from_bits_retain(caps),
            mcg_status: McgStatus::from_bits_retain(mcg_status),
            mcg_ext_ctl: McgExtCtl::from_bits_retain(ext_ctl),
            mci_ctl2: ctl2.map(MciCtl2::from_bits_retain),
            banks: [
                GuestBank::EMPTY,
                GuestBank {
                    status: MciStatus::from_bits_retain(bank1[0]),
                    addr: bank1[1],
                    misc: bank1[2],
                },
            ],
        },
        pending: false,
    }
}

/// vCPU `id`'s record, its state checked for the profile it belongs to: its vendor's, with
/// LMCE when its caps have it.
fn vcpu(id: u32, snapshot: VcpuSnapshot) -> SavedVcpu {
    let profile = match snapshot.state.vendor {
        Vendor::Amd => Profile::Amd,
        Vendor::Intel if snapshot.state.mcg_cap.contains(McgCap::LMCE_P) => Profile::IntelLmce,
        Vendor::Intel => Profile::Intel,
    };
    SavedVcpu {
        id: VcpuId(id),
        snapshot: snapshot.check(profile).unwrap(),
    }
}

#[allow(clippy::large_enum_variant)] // test table rows
enum Expected {
    Xen(XenRelease, Profile, SavedVcpu),
    /// A Xen record no encoder writes, spelled out byte for byte: a `loader`-release loader
    /// restores `saved` from it and drops `notes`.
    XenTolerated {
        bytes: Vec<u8>,
        loader: XenRelease,
        profile: Profile,
        saved: SavedVcpu,
        notes: LoadNotes,
    },
    Context(Profile, Vec<SavedVcpu>),
    /// A context stream no writer produces (header instance, END instance and length, bytes
    /// after END), spelled out: it walks to `vcpus`.
    ContextTolerated {
        bytes: Vec<u8>,
        profile: Profile,
        vcpus: Vec<SavedVcpu>,
    },
    NativeVcpu(NativeVersion, Profile, SavedVcpu),
    NativeDomain(NativeVersion, SavedDomain),
}

const HEADER: HvmHeader = HvmHeader {
    version: 1,
    changeset: 0x0000_0000_2f1c_95a8,
    cpuid: 0x0005_0654,
    gtsc_khz: 2_100_000,
};

/// A context stream with what Xen's loader ignores: header instance 3, END with instance 7
/// and length 16, and 16 bytes after END (a `VMCE_VCPU` record Xen never reads).
fn stream_with_bytes_after_end() -> Vec<u8> {
    let mut bytes = vec![
        0x01, 0x00, 0x03, 0x00, 0x18, 0x00, 0x00, 0x00, // header, instance 3, 24 bytes
        0x86, 0x12, 0x38, 0x54, 0x01, 0x00, 0x00, 0x00, // magic, version 1
        0xa8, 0x95, 0x1c, 0x2f, 0x00, 0x00, 0x00, 0x00, // changeset
        0x54, 0x06, 0x05, 0x00, 0x20, 0x0b, 0x20, 0x00, // CPUID, 2_100_000 kHz
        0x02, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, // CPU, 4 bytes
        0x11, 0x11, 0x11, 0x11, //
        0x12, 0x00, 0x01, 0x00, 0x20, 0x00, 0x00, 0x00, // VMCE_VCPU, vCPU 1, 32 bytes
        0x02, 0x0c, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, // caps
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // MC0_CTL2
        0xff, 0x7f, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, // MC1_CTL2
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // MCG_EXT_CTL
        0x00, 0x00, 0x07, 0x00, 0x10, 0x00, 0x00, 0x00, // END, instance 7, length 16
    ];
    bytes.extend_from_slice(&[
        0x12, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, // VMCE_VCPU after END, never read
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // caps no profile allows
    ]);
    bytes
}

/// vCPU `id` with `caps`, `MCi_CTL2` and `MCG_EXT_CTL`, nothing in flight.
fn plain(id: u32, profile: Profile, caps: u64, ctl2: [u64; 2], ext_ctl: u64) -> SavedVcpu {
    vcpu(id, state(profile, caps, ctl2, ext_ctl, 0, [0; 3]))
}

/// A Xen record no encoder writes (see [`Expected::XenTolerated`]).
fn tolerated(
    loader: XenRelease,
    profile: Profile,
    saved: SavedVcpu,
    notes: LoadNotes,
    bytes: Vec<u8>,
) -> Expected {
    Expected::XenTolerated {
        bytes,
        loader,
        profile,
        saved,
        notes,
    }
}

/// Every fixture and what it holds. Laid out by hand, a row or a few per fixture (rustfmt
/// would give each argument a line of its own).
#[rustfmt::skip]
fn fixtures() -> Vec<(&'static str, Expected)> {
    use Profile::{Amd, Intel, IntelLmce};
    use XenRelease::{Xen4_10, Xen4_2, Xen4_3};
    const SRAO_STATUS: u64 = 0xBD00_0000_0000_00CF;
    let in_flight = VcpuSnapshot {
        pending: true,
        ..state(Intel, 0x0100_0C02, [0, 0x4000_0002], 0, 0x5, [SRAO_STATUS, 0x0012_3ABC, 0x86])
    };
    let dropped = LoadNotes { mci_ctl2_dropped: [0x8000, 1 << 63], mcg_ext_ctl_dropped: 0 };
    let none = LoadNotes::NONE;
    const CMCI_2: u64 = 0x4000_0002; // MCi_CTL2: CMCI_EN, threshold 2
    let (intel, lmce) = (0x0100_0C02, 0x0900_0C02);
    vec![
        ("xen-4.2-pre-4.2-host-caps.bin",
            Expected::Xen(Xen4_2, Intel, plain(1, Intel, 0x0100_0806, [0, 0], 0))),
        ("xen-4.2-pre-4.2-40-banks.bin",
            Expected::Xen(Xen4_2, Intel, plain(0, Intel, 0x0100_0828, [0, 0], 0))),
        ("xen-4.2-pre-4.2-1-bank.bin",
            Expected::Xen(Xen4_2, Amd, plain(2, Amd, 0x0000_0101, [0, 0], 0))),
        ("xen-0-byte-payload.bin",
            tolerated(Xen4_3, Intel, plain(0, Intel, 0, [0, 0], 0), none, vec![
                0x12, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            ])),
        ("xen-12-byte-payload.bin",
            tolerated(Xen4_10, Intel, plain(1, Intel, intel, [0x4000_0002, 0], 0), none, vec![
                0x12, 0x00, 0x01, 0x00, 0x0c, 0x00, 0x00, 0x00, // vCPU 1, 12 bytes
                0x02, 0x0c, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, // caps
                0x02, 0x00, 0x00, 0x40, // MC0_CTL2, low half
            ])),
        ("xen-4.3-ctl2-reserved-bits.bin",
            tolerated(Xen4_3, Intel, plain(0, Intel, intel, [0x4000_0002, 1], 0), dropped, vec![
                0x12, 0x00, 0x00, 0x00, 0x18, 0x00, 0x00, 0x00, // vCPU 0, 24 bytes
                0x02, 0x0c, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, // caps
                0x02, 0x80, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, // MC0_CTL2, bit 15 set
                0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, // MC1_CTL2, bit 63 set
            ])),
        ("xen-8-byte-lmce.bin",
            tolerated(Xen4_10, IntelLmce, plain(2, IntelLmce, lmce, [0, 0], 0), none, vec![
                0x12, 0x00, 0x02, 0x00, 0x08, 0x00, 0x00, 0x00, // vCPU 2, 8 bytes
                0x02, 0x0c, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00, // caps with LMCE_P
            ])),
        ("xen-4.3-ctl2.bin",
            Expected::Xen(Xen4_3, Intel, plain(0, Intel, intel, [0, 0x4000_0002], 0))),
        ("xen-4.10-lmce.bin",
            Expected::Xen(Xen4_10, IntelLmce, plain(2, IntelLmce, lmce, [0x4000_0001, CMCI_2], 1))),
        ("hvm-context-xen-4.10.bin", Expected::Context(Intel, vec![
            plain(0, Intel, intel, [0, 0], 0),
            plain(1, Intel, intel, [0, 0x4000_7FFF], 0),
        ])),
        ("hvm-context-bytes-after-end.bin", Expected::ContextTolerated {
            bytes: stream_with_bytes_after_end(),
            profile: Intel,
            vcpus: vec![plain(1, Intel, intel, [0, 0x4000_7FFF], 0)],
        }),
        ("native-v1-vcpu.bin",
            Expected::NativeVcpu(NativeVersion::V1, Amd, plain(3, Amd, 0x0000_0106, [0, 0], 0))),
        ("native-v2-vcpu-in-flight.bin",
            Expected::NativeVcpu(NativeVersion::V2, Intel, vcpu(0, in_flight))),
        ("native-v2-domain.bin", Expected::NativeDomain(NativeVersion::V2, SavedDomain {
            profile: IntelLmce,
            vcpus: 4,
            broken_frames: [GuestFrame(0x123), GuestFrame(0x4_5678)].into_iter().collect(),
        })),
    ]
}

/// The fixture's bytes: today's encoding of the expected state, or the bytes spelled out for
/// a tolerated form.
fn encode(expected: &Expected) -> Vec<u8> {
    let mut out = vec![0u8; 4096];
    let len = match expected {
        Expected::Xen(release, _, saved) => {
            xen::encode(saved, *release, LossPolicy::Refuse, &mut out)
                .unwrap()
                .len
        }
        Expected::XenTolerated { bytes, .. } | Expected::ContextTolerated { bytes, .. } => {
            return bytes.clone();
        }
        Expected::Context(_, vcpus) => {
            let mut writer = HvmWriter::new(&mut out, HEADER).unwrap();
            writer.push(2, 0, &[0x11; 1024]).unwrap();
            for saved in vcpus {
                writer
                    .push_vmce(saved, XenRelease::Xen4_10, LossPolicy::Refuse)
                    .unwrap();
            }
            writer.push(5, 0, &[0x22; 8]).unwrap();
            writer.finish().unwrap().len
        }
        Expected::NativeVcpu(version, _, saved) => {
            native::encode_vcpu(saved, *version, LossPolicy::Refuse, &mut out)
                .unwrap()
                .len
        }
        Expected::NativeDomain(version, saved) => {
            native::encode_domain(saved, *version, LossPolicy::Refuse, &mut out)
                .unwrap()
                .len
        }
    };
    out.truncate(len);
    out
}

/// The `VMCE_VCPU` records of a context stream, as a 4.10 loader restores them.
fn walk(name: &str, bytes: &[u8], profile: Profile) -> Vec<SavedVcpu> {
    let context = HvmContext::parse(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(context.header(), HEADER, "{name}");
    context
        .vmce_vcpus(profile, 4, XenRelease::Xen4_10)
        .map(|record| {
            let (saved, notes) = record.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(notes.is_empty(), "{name}: {notes}");
            saved
        })
        .collect()
}

/// The committed bytes decoded with today's loader.
fn check_decode(name: &str, bytes: &[u8], expected: &Expected) {
    match expected {
        Expected::Xen(_, profile, saved) => {
            let decoded = xen::decode(bytes, *profile, 4, XenRelease::Xen4_10).unwrap();
            assert_eq!(decoded, (*saved, bytes.len(), LoadNotes::NONE), "{name}");
        }
        Expected::XenTolerated {
            loader,
            profile,
            saved,
            notes,
            ..
        } => {
            let decoded =
                xen::decode(bytes, *profile, 4, *loader).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(decoded, (*saved, bytes.len(), *notes), "{name}");
            // Today's encoder writes the loader's own layout instead, which loads to the
            // same state and drops nothing.
            let mut out = [0u8; xen::MAX_RECORD_BYTES];
            let len = xen::encode(saved, *loader, LossPolicy::Refuse, &mut out)
                .unwrap()
                .len;
            assert_ne!(&out[..len], bytes, "{name}: not a tolerated form");
            let again = xen::decode(&out[..len], *profile, 4, *loader).unwrap();
            assert_eq!(again, (*saved, len, LoadNotes::NONE), "{name}");
        }
        Expected::Context(profile, vcpus) => {
            assert_eq!(&walk(name, bytes, *profile), vcpus, "{name}");
        }
        Expected::ContextTolerated { profile, vcpus, .. } => {
            assert_eq!(&walk(name, bytes, *profile), vcpus, "{name}");
            let context = HvmContext::parse(bytes).unwrap();
            assert!(
                context.end_offset() < bytes.len(),
                "{name}: bytes after END"
            );
            // Re-written, the stream keeps its records and loses what Xen ignores.
            let out = common::rewritten(&context);
            assert_eq!(&walk(name, &out, *profile), vcpus, "{name}");
            assert_eq!(HvmContext::parse(&out).unwrap().end_offset(), out.len());
        }
        Expected::NativeVcpu(_, profile, saved) => {
            let decoded = native::decode(bytes, *profile, 4, NativeVersion::NEWEST).unwrap();
            assert_eq!(decoded, (NativeRecord::Vcpu(*saved), bytes.len()), "{name}");
        }
        Expected::NativeDomain(_, saved) => {
            let decoded = native::decode(bytes, saved.profile, 4, NativeVersion::NEWEST).unwrap();
            assert_eq!(
                decoded,
                (NativeRecord::Domain(saved.clone()), bytes.len()),
                "{name}"
            );
        }
    }
}

#[test]
fn golden_fixtures_decode_to_the_same_state_forever() {
    let directory = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/records");
    let bless = std::env::var_os("VMCE_BLESS").is_some();
    for (name, expected) in fixtures() {
        let path = directory.join(name);
        if bless && !path.exists() {
            std::fs::create_dir_all(&directory).unwrap();
            std::fs::write(&path, encode(&expected)).unwrap();
        }
        let bytes = std::fs::read(&path).unwrap_or_else(|error| {
            panic!(
                "fixture {} missing ({error}); new fixtures are written by VMCE_BLESS=1",
                path.display()
            )
        });
        check_decode(name, &bytes, &expected);
        assert_eq!(
            encode(&expected),
            bytes,
            "{name}: today's encoder (or the spelled-out bytes) gives other bytes"
        );
    }
}

#[test]
fn fixtures_cover_every_format() {
    let fixtures = fixtures();
    let names: Vec<_> = fixtures.iter().map(|(name, _)| *name).collect();
    let any = |wanted: &dyn Fn(&Expected) -> bool| fixtures.iter().any(|(_, e)| wanted(e));
    for release in XenRelease::ALL {
        let xen = |e: &Expected| matches!(e, Expected::Xen(r, ..) if *r == release);
        assert!(any(&xen), "no fixture for {release}: {names:?}");
    }
    for version in NativeVersion::ALL {
        let vcpu = |e: &Expected| matches!(e, Expected::NativeVcpu(v, ..) if *v == version);
        assert!(any(&vcpu), "no vCPU fixture for {version}");
    }
    assert!(any(&|e| matches!(e, Expected::Context(..))));
    assert!(any(&|e| matches!(e, Expected::NativeDomain(..))));
    for tolerated in [
        "xen-0-byte-payload.bin",
        "xen-12-byte-payload.bin",
        "xen-4.3-ctl2-reserved-bits.bin",
        "xen-8-byte-lmce.bin",
        "hvm-context-bytes-after-end.bin",
        "xen-4.2-pre-4.2-40-banks.bin",
        "xen-4.2-pre-4.2-1-bank.bin",
    ] {
        assert!(names.contains(&tolerated), "no fixture {tolerated}");
    }
    assert_eq!(Vendor::Amd, Profile::Amd.vendor());
}
