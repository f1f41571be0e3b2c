//! Golden fixtures: the bytes of every record format, committed under
//! `tests/fixtures/records/`, must keep decoding to the same state forever, and today's
//! encoder must keep writing the same bytes.
//!
//! The expected states are written out by hand here, not derived from the encoder. To add a
//! fixture for a new format version, add a row and run once with `VMCE_BLESS=1`: it writes
//! only files that do not exist yet; an existing fixture is never rewritten.

use std::path::PathBuf;
use vmce::record::hvm::{HvmContext, HvmHeader, HvmWriter};
use vmce::record::native::{self, NativeRecord, NativeVersion};
use vmce::record::xen::{self, XenRelease};
use vmce::record::{LossPolicy, SavedDomain, SavedVcpu};
use vmce::registers::{McgCap, McgExtCtl, McgStatus, MciCtl2, MciStatus};
use vmce::vcpu::GuestBank;
use vmce::{BrokenFrames, GuestFrame, Profile, VcpuId, VcpuMceState, VcpuSnapshot, Vendor};

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

fn vcpu(id: u32, snapshot: VcpuSnapshot) -> SavedVcpu {
    SavedVcpu {
        id: VcpuId(id),
        snapshot,
    }
}

#[allow(clippy::large_enum_variant)] // test table rows
enum Expected {
    Xen(XenRelease, Profile, SavedVcpu),
    Context(Profile, Vec<SavedVcpu>),
    NativeVcpu(NativeVersion, Profile, SavedVcpu),
    NativeDomain(NativeVersion, SavedDomain),
}

const HEADER: HvmHeader = HvmHeader {
    version: 1,
    changeset: 0x0000_0000_2f1c_95a8,
    cpuid: 0x0005_0654,
    gtsc_khz: 2_100_000,
};

fn fixtures() -> Vec<(&'static str, Expected)> {
    let in_flight = VcpuSnapshot {
        pending: true,
        ..state(
            Profile::Intel,
            0x0100_0C02,
            [0, 0x4000_0002],
            0,
            0x5,
            [0xBD00_0000_0000_00CF, 0x0012_3ABC, 0x86],
        )
    };
    vec![
        (
            "xen-4.2-pre-4.2-host-caps.bin",
            Expected::Xen(
                XenRelease::Xen4_2,
                Profile::Intel,
                vcpu(1, state(Profile::Intel, 0x0100_0806, [0, 0], 0, 0, [0; 3])),
            ),
        ),
        (
            "xen-4.3-ctl2.bin",
            Expected::Xen(
                XenRelease::Xen4_3,
                Profile::Intel,
                vcpu(
                    0,
                    state(Profile::Intel, 0x0100_0C02, [0, 0x4000_0002], 0, 0, [0; 3]),
                ),
            ),
        ),
        (
            "xen-4.10-lmce.bin",
            Expected::Xen(
                XenRelease::Xen4_10,
                Profile::IntelLmce,
                vcpu(
                    2,
                    state(
                        Profile::IntelLmce,
                        0x0900_0C02,
                        [0x4000_0001, 0x4000_0002],
                        1,
                        0,
                        [0; 3],
                    ),
                ),
            ),
        ),
        (
            "hvm-context-xen-4.10.bin",
            Expected::Context(
                Profile::Intel,
                vec![
                    vcpu(0, state(Profile::Intel, 0x0100_0C02, [0, 0], 0, 0, [0; 3])),
                    vcpu(
                        1,
                        state(Profile::Intel, 0x0100_0C02, [0, 0x4000_7FFF], 0, 0, [0; 3]),
                    ),
                ],
            ),
        ),
        (
            "native-v1-vcpu.bin",
            Expected::NativeVcpu(
                NativeVersion::V1,
                Profile::Amd,
                vcpu(3, state(Profile::Amd, 0x0000_0106, [0, 0], 0, 0, [0; 3])),
            ),
        ),
        (
            "native-v2-vcpu-in-flight.bin",
            Expected::NativeVcpu(NativeVersion::V2, Profile::Intel, vcpu(0, in_flight)),
        ),
        (
            "native-v2-domain.bin",
            Expected::NativeDomain(
                NativeVersion::V2,
                SavedDomain {
                    profile: Profile::IntelLmce,
                    vcpus: 4,
                    broken_frames: [GuestFrame(0x123), GuestFrame(0x4_5678)]
                        .into_iter()
                        .collect::<BrokenFrames>(),
                },
            ),
        ),
    ]
}

/// Today's encoding of an expected state.
fn encode(expected: &Expected) -> Vec<u8> {
    let mut out = vec![0u8; 4096];
    let len = match expected {
        Expected::Xen(release, _, saved) => {
            xen::encode(saved, *release, LossPolicy::Refuse, &mut out)
                .unwrap()
                .len
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

/// The committed bytes decoded with today's loader.
fn check_decode(name: &str, bytes: &[u8], expected: &Expected) {
    match expected {
        Expected::Xen(_, profile, saved) => {
            let (decoded, len) = xen::decode(bytes, *profile, 4, XenRelease::Xen4_10).unwrap();
            assert_eq!((decoded, len), (*saved, bytes.len()), "{name}");
        }
        Expected::Context(profile, vcpus) => {
            let context = HvmContext::parse(bytes).unwrap();
            assert_eq!(context.header(), HEADER, "{name}");
            let decoded: Vec<_> = context
                .vmce_vcpus(*profile, 4, XenRelease::Xen4_10)
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(&decoded, vcpus, "{name}");
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
            "{name}: today's encoder writes other bytes"
        );
    }
}

#[test]
fn fixtures_cover_every_format() {
    let names: Vec<_> = fixtures().into_iter().map(|(name, _)| name).collect();
    for release in XenRelease::ALL {
        assert!(
            fixtures()
                .iter()
                .any(|(_, e)| matches!(e, Expected::Xen(r, ..) if *r == release)),
            "no fixture for {release}: {names:?}"
        );
    }
    for version in NativeVersion::ALL {
        assert!(
            fixtures()
                .iter()
                .any(|(_, e)| matches!(e, Expected::NativeVcpu(v, ..) if *v == version)),
            "no vCPU fixture for {version}"
        );
    }
    assert!(
        fixtures()
            .iter()
            .any(|(_, e)| matches!(e, Expected::Context(..)))
    );
    assert!(
        fixtures()
            .iter()
            .any(|(_, e)| matches!(e, Expected::NativeDomain(..)))
    );
    assert_eq!(Vendor::Amd, Profile::Amd.vendor());
}
