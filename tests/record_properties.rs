//! Property tests for the save records: every state round-trips through every format that
//! can carry it (and every other format names exactly what it cannot carry), and arbitrary
//! or mutated bytes never panic a decoder; whatever decodes re-encodes to the same bytes, or,
//! for the forms only Xen's tolerance accepts (short Xen payloads, dropped bits, bytes after
//! END), to a canonical form that decodes to the same state.

mod common;

use proptest::prelude::*;
use vmce::record::hvm::HvmContext;
use vmce::record::native::{self, NativeRecord, NativeVersion};
use vmce::record::xen::{self, XenRelease};
use vmce::record::{LossPolicy, RecordError, SavedVcpu, StateFields};
use vmce::registers::{McgCap, McgExtCtl, McgStatus, MciCtl2, MciStatus};
use vmce::vcpu::GuestBank;
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
                        status_bits & vmce::emulate::writable_mcg_status(caps).bits(),
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
                    },
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
                Err(RecordError::LmceBeforeXen410) => {
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
