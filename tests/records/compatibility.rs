//! The migration compatibility matrix: every source form × every destination loader, each
//! pair with its documented outcome. The README's migration table is rendered from
//! [`MATRIX`] and checked here, so the two cannot drift (`VMCE_BLESS=1` rewrites it).
//!
//! A pair runs as a toolstack would: the source writes the newest form the destination
//! reads that it can write (source conservative: a Xen release writes only its own layout and
//! silently drops what Xen never saves; a vmce build writes any Xen layout or any native
//! version up to its own, and refuses to lose state), and the destination's loader reads it
//! (destination permissive). The outcome compares what the destination restored with what
//! the source's guest really had; a Xen loader's notes of the bits it dropped (bits Xen
//! stores unchecked, such as reserved `MCi_CTL2` bits a guest wrote under Xen) are part of
//! the outcome.

use std::path::PathBuf;
use vmce::record::native::{self, NativeRecord, NativeVersion};
use vmce::record::xen::{self, XenRelease};
use vmce::record::{LoadNotes, LossPolicy, RecordError, SavedVcpu, StateFields};
use vmce::registers::{McgCap, McgExtCtl, McgStatus, MciCtl2, MciStatus};
use vmce::state::GuestBank;
use vmce::{BrokenFrames, GuestFrame, Profile, VcpuId, VcpuMceState, VcpuSnapshot};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Format {
    Xen(XenRelease),
    Native(NativeVersion),
}

impl Format {
    fn name(self) -> String {
        match self {
            Format::Xen(release) => release.to_string(),
            Format::Native(NativeVersion::V1) => "vmce V1".into(),
            Format::Native(NativeVersion::V2) => "vmce V2".into(),
        }
    }
}

const DESTINATIONS: [Format; 5] = [
    Format::Xen(XenRelease::Xen4_2),
    Format::Xen(XenRelease::Xen4_3),
    Format::Xen(XenRelease::Xen4_10),
    Format::Native(NativeVersion::V1),
    Format::Native(NativeVersion::V2),
];

#[derive(Clone, Copy, Debug)]
enum Guest {
    /// The profile's own caps, nothing else.
    Plain,
    /// Caps a pre-4.2 Xen derived from its host.
    HostCaps(u64),
    /// `MC1_CTL2.CMCI_EN` and a threshold set by the guest.
    Cmci,
    /// `MC1_CTL2` with reserved bit 15 besides `CMCI_EN` and a threshold: Xen stores
    /// whatever a guest writes there.
    Ctl2Reserved,
    /// Intel+LMCE with `MCG_EXT_CTL.LMCE_EN`.
    Lmce,
    /// An SRAO reflected and not yet taken: `MCIP`, bank 1, pending, a broken frame.
    InFlight,
}

struct Row {
    source: &'static str,
    writer: Format,
    guest: Guest,
    /// Expected outcome per destination, in [`DESTINATIONS`] order.
    outcomes: [&'static str; 5],
}

const SAME: &str = "same";
const BAD_LENGTH: &str = "refused: BadLength";
const CTL2_BITS_DROPPED: &str = "dropped MC1_CTL2 bits 0x8000";
const IN_FLIGHT_DEFAULTS: &str = "defaults: MCG_STATUS, bank 1, the pending #MC, the broken frames";
const IN_FLIGHT_LOST: &str =
    "refused: WouldLose (MCG_STATUS, bank 1, the pending #MC, the broken frames)";

const fn row(
    source: &'static str,
    writer: Format,
    guest: Guest,
    outcomes: [&'static str; 5],
) -> Row {
    Row {
        source,
        writer,
        guest,
        outcomes,
    }
}

const XEN_4_2: Format = Format::Xen(XenRelease::Xen4_2);
const XEN_4_3: Format = Format::Xen(XenRelease::Xen4_3);
const XEN_4_10: Format = Format::Xen(XenRelease::Xen4_10);
const VMCE_V1: Format = Format::Native(NativeVersion::V1);
const VMCE_V2: Format = Format::Native(NativeVersion::V2);

/// Laid out by hand, a row or two per source form (rustfmt would give each field a line).
#[rustfmt::skip]
const MATRIX: &[Row] = &[
    row("pre-4.2 guest, host caps `0x0100_0806`", XEN_4_2, Guest::HostCaps(0x0100_0806), [SAME; 5]),
    row("pre-4.2 guest, host caps `0x0000_0106` (`CTL_P`)",
        XEN_4_2, Guest::HostCaps(0x0000_0106), [SAME; 5]),
    row("pre-4.2 guest, host caps `0x0100_0828` (40 banks)",
        XEN_4_2, Guest::HostCaps(0x0100_0828), [SAME; 5]),
    row("pre-4.2 guest, host caps `0x0000_0101` (`CTL_P`, 1 bank)",
        XEN_4_2, Guest::HostCaps(0x0000_0101), [SAME; 5]),
    row("Xen 4.2", XEN_4_2, Guest::Plain, [SAME; 5]),
    row("Xen 4.3, CMCI enabled", XEN_4_3, Guest::Cmci, [BAD_LENGTH, SAME, SAME, SAME, SAME]),
    row("Xen 4.3, guest wrote reserved `MC1_CTL2` bits", XEN_4_3, Guest::Ctl2Reserved, [
        BAD_LENGTH, CTL2_BITS_DROPPED, CTL2_BITS_DROPPED, CTL2_BITS_DROPPED, CTL2_BITS_DROPPED,
    ]),
    row("Xen 4.10, LMCE enabled", XEN_4_10, Guest::Lmce,
        [BAD_LENGTH, BAD_LENGTH, SAME, SAME, SAME]),
    row("Xen 4.10, machine check in flight", XEN_4_10, Guest::InFlight, [
        BAD_LENGTH, BAD_LENGTH, IN_FLIGHT_DEFAULTS, IN_FLIGHT_DEFAULTS, IN_FLIGHT_DEFAULTS,
    ]),
    row("vmce V1, CMCI enabled", VMCE_V1, Guest::Cmci,
        ["refused: WouldLose (MCi_CTL2)", SAME, SAME, SAME, SAME]),
    row("vmce V2, 40 banks kept from a pre-4.2 guest",
        VMCE_V2, Guest::HostCaps(0x0100_0828), [SAME; 5]),
    row("vmce V2, CMCI enabled", VMCE_V2, Guest::Cmci,
        ["refused: WouldLose (MCi_CTL2)", SAME, SAME, SAME, SAME]),
    row("vmce V2, LMCE enabled", VMCE_V2, Guest::Lmce, [
        "refused: WouldLose (MCi_CTL2, MCG_EXT_CTL)", "refused: WouldLose (MCG_EXT_CTL)",
        SAME, SAME, SAME,
    ]),
    row("vmce V2, machine check in flight", VMCE_V2, Guest::InFlight,
        [IN_FLIGHT_LOST, IN_FLIGHT_LOST, IN_FLIGHT_LOST, IN_FLIGHT_LOST, SAME]),
];

const VCPUS: u32 = 4;
const VCPU: VcpuId = VcpuId(2);

fn profile(guest: Guest) -> Profile {
    match guest {
        Guest::Lmce => Profile::IntelLmce,
        _ => Profile::Intel,
    }
}

/// The guest's real state on the source: one vCPU and the domain's broken frames.
fn source_state(guest: Guest) -> (VcpuSnapshot, BrokenFrames) {
    let mut state = VcpuMceState::new(profile(guest));
    let mut pending = false;
    let mut broken = BrokenFrames::new();
    match guest {
        Guest::Plain => {}
        Guest::HostCaps(caps) => state.mcg_cap = McgCap::from_bits_retain(caps),
        Guest::Cmci => state.mci_ctl2[1] = MciCtl2::from_bits_retain(0x4000_0002),
        Guest::Ctl2Reserved => state.mci_ctl2[1] = MciCtl2::from_bits_retain(0x4000_8002),
        Guest::Lmce => {
            state.mci_ctl2[0] = MciCtl2::from_bits_retain(0x4000_0001);
            state.mcg_ext_ctl = McgExtCtl::LMCE_EN;
        }
        Guest::InFlight => {
            state.mcg_status = McgStatus::MCIP | McgStatus::RIPV;
            state.banks[1] = GuestBank {
                status: MciStatus::from_bits_retain(0xBD00_0000_0000_00CF),
                addr: 0x0012_3ABC,
                misc: 0x86,
            };
            pending = true;
            broken.insert(GuestFrame(0x123));
        }
    }
    (VcpuSnapshot { state, pending }, broken)
}

/// The records the source writes for `destination` (vCPU record, then domain record).
fn write(row: &Row, destination: Format) -> Result<Vec<Vec<u8>>, RecordError> {
    let (snapshot, broken) = source_state(row.guest);
    let domain = vmce::record::SavedDomain {
        profile: profile(row.guest),
        vcpus: VCPUS,
        broken_frames: broken,
    };
    let mut out = vec![0u8; 1024];
    match row.writer {
        // Xen writes its own layout whatever the destination, and drops what it never saves.
        Format::Xen(release) => {
            let Ok(checked) = snapshot.check(profile(row.guest)) else {
                // A Xen guest can hold what no vmce vCPU holds (reserved `MCi_CTL2` bits):
                // Xen writes the registers as they are.
                return Ok(vec![xen_record(&snapshot, release)]);
            };
            let saved = SavedVcpu {
                id: VCPU,
                snapshot: checked,
            };
            let len = xen::encode(&saved, release, LossPolicy::Allow, &mut out)?.len;
            Ok(vec![out[..len].to_vec()])
        }
        Format::Native(newest) => {
            let saved = SavedVcpu {
                id: VCPU,
                snapshot: snapshot.check(profile(row.guest))?,
            };
            let (vcpu, domain_record) = match destination {
                Format::Xen(release) => (
                    xen::encode(&saved, release, LossPolicy::Refuse, &mut out)
                        .map(|encoding| out[..encoding.len].to_vec()),
                    encode_domain(&domain, NativeVersion::V1),
                ),
                Format::Native(loader) => {
                    let version = newest.min(loader);
                    (
                        native::encode_vcpu(&saved, version, LossPolicy::Refuse, &mut out)
                            .map(|encoding| out[..encoding.len].to_vec()),
                        encode_domain(&domain, version),
                    )
                }
            };
            match (vcpu, domain_record) {
                (Ok(vcpu), Ok(domain)) => Ok([vec![vcpu], domain].concat()),
                (
                    Err(RecordError::WouldLose { fields: a }),
                    Err(RecordError::WouldLose { fields: b }),
                ) => Err(RecordError::WouldLose { fields: a | b }),
                (Err(error), _) | (_, Err(error)) => Err(error),
            }
        }
    }
}

/// The `VMCE_VCPU` record a Xen `release` writes for `snapshot`'s registers, unchecked.
fn xen_record(snapshot: &VcpuSnapshot, release: XenRelease) -> Vec<u8> {
    let (payload, len) = xen::XenVmceVcpu::from_state(&snapshot.state).to_payload(release);
    let descriptor = xen::HvmDescriptor {
        typecode: xen::VMCE_VCPU_TYPECODE,
        instance: VCPU.0 as u16,
        length: release.payload_len(),
    };
    [&descriptor.to_bytes()[..], &payload[..len]].concat()
}

fn encode_domain(
    domain: &vmce::record::SavedDomain,
    version: NativeVersion,
) -> Result<Vec<Vec<u8>>, RecordError> {
    let mut out = vec![0u8; native::MAX_DOMAIN_RECORD_BYTES];
    let len = native::encode_domain(domain, version, LossPolicy::Refuse, &mut out)?.len;
    Ok(if len == 0 {
        vec![]
    } else {
        vec![out[..len].to_vec()]
    })
}

/// What the destination restores from `records`, and what its Xen loader dropped.
fn read(
    records: &[Vec<u8>],
    profile: Profile,
    loader: Format,
) -> Result<(SavedVcpu, BrokenFrames, LoadNotes), RecordError> {
    let mut vcpu = None;
    let mut broken = BrokenFrames::new();
    let mut notes = LoadNotes::NONE;
    for bytes in records {
        let is_xen = bytes.first() == Some(&(xen::VMCE_VCPU_TYPECODE as u8));
        let release = match loader {
            Format::Xen(release) => Some(release),
            // A vmce build reads Xen's layouts too, as the newest Xen does.
            Format::Native(_) if is_xen => Some(XenRelease::Xen4_10),
            Format::Native(_) => None,
        };
        match (release, loader) {
            (Some(release), _) => {
                let (saved, _, dropped) = xen::decode(bytes, profile, VCPUS, release)?;
                vcpu = Some(saved);
                notes = dropped;
            }
            (None, Format::Native(version)) => {
                match native::decode(bytes, profile, VCPUS, version)?.0 {
                    NativeRecord::Vcpu(saved) => vcpu = Some(saved),
                    NativeRecord::Domain(domain) => broken = domain.broken_frames,
                }
            }
            (None, Format::Xen(_)) => unreachable!("a Xen loader always has a release"),
        }
    }
    Ok((vcpu.expect("a vCPU record"), broken, notes))
}

fn outcome(row: &Row, destination: Format) -> String {
    let (real, real_broken) = source_state(row.guest);
    let result =
        write(row, destination).and_then(|records| read(&records, profile(row.guest), destination));
    match result {
        Err(RecordError::WouldLose { fields }) => format!("refused: WouldLose ({fields})"),
        Err(error) => {
            let debug = format!("{error:?}");
            // The variant of the layer's error, inside RecordError's wrapper.
            let inner = ["State(", "Restore(", "Hvm(", "Native("]
                .iter()
                .find_map(|layer| debug.strip_prefix(layer))
                .unwrap_or(&debug);
            let name = inner
                .split([' ', '(', ')', '{'])
                .next()
                .unwrap_or_default()
                .to_string();
            format!("refused: {name}")
        }
        Ok((restored, broken, notes)) => {
            assert_eq!(restored.id, VCPU);
            let mut differs = StateFields::empty();
            // Put back what the loader said it dropped: the rest must be the guest's.
            let mut with_dropped = *restored.snapshot;
            for (ctl2, bits) in with_dropped
                .state
                .mci_ctl2
                .iter_mut()
                .zip(notes.mci_ctl2_dropped)
            {
                *ctl2 = MciCtl2::from_bits_retain(ctl2.bits() | bits);
            }
            with_dropped.state.mcg_ext_ctl = McgExtCtl::from_bits_retain(
                with_dropped.state.mcg_ext_ctl.bits() | notes.mcg_ext_ctl_dropped,
            );
            let (a, b) = (&with_dropped, &real);
            assert_eq!(
                a.state.mcg_cap, b.state.mcg_cap,
                "{}: caps must never change",
                row.source
            );
            differs.set(StateFields::MCI_CTL2, a.state.mci_ctl2 != b.state.mci_ctl2);
            differs.set(
                StateFields::MCG_EXT_CTL,
                a.state.mcg_ext_ctl != b.state.mcg_ext_ctl,
            );
            differs.set(
                StateFields::MCG_STATUS,
                a.state.mcg_status != b.state.mcg_status,
            );
            differs.set(StateFields::BANK1, a.state.banks[1] != b.state.banks[1]);
            differs.set(StateFields::PENDING, a.pending != b.pending);
            differs.set(StateFields::BROKEN_FRAMES, broken != real_broken);
            match (differs.is_empty(), notes.is_empty()) {
                (true, true) => {
                    assert_eq!(a, b);
                    SAME.to_string()
                }
                (true, false) => {
                    assert_eq!(a, b);
                    notes.to_string()
                }
                (false, true) => format!("defaults: {differs}"),
                (false, false) => format!("{notes}; defaults: {differs}"),
            }
        }
    }
}

#[test]
fn every_source_and_destination_pair_has_its_documented_outcome() {
    let mut failures = Vec::new();
    for row in MATRIX {
        for (destination, expected) in DESTINATIONS.iter().zip(row.outcomes) {
            let got = outcome(row, *destination);
            if got != expected {
                failures.push(format!(
                    "{} → {}: expected {expected:?}, got {got:?}",
                    row.source,
                    destination.name()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn render() -> String {
    let mut table = String::from("| source ↓ / destination → |");
    for destination in DESTINATIONS {
        table += &format!(" {} |", destination.name());
    }
    table += "\n|---|";
    table += &"---|".repeat(DESTINATIONS.len());
    table += "\n";
    for row in MATRIX {
        table += &format!("| {} (writes {}) |", row.source, row.writer.name());
        for outcome in row.outcomes {
            table += &format!(" {outcome} |");
        }
        table += "\n";
    }
    table
}

const START: &str = "<!-- migration-matrix:start (generated by tests/records/compatibility.rs; VMCE_BLESS=1 cargo test --test records compatibility::) -->\n";
const END: &str = "<!-- migration-matrix:end -->";

#[test]
fn readme_migration_table_is_the_test_table() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let start = readme.find(START).map(|at| at + START.len());
    let end = readme.find(END);
    let (Some(start), Some(end)) = (start, end) else {
        panic!(
            "README.md lacks the migration matrix markers:\n{START}{}{END}",
            render()
        );
    };
    let table = render();
    if readme[start..end] != table {
        if std::env::var_os("VMCE_BLESS").is_some() {
            std::fs::write(
                &path,
                format!("{}{table}{}", &readme[..start], &readme[end..]),
            )
            .unwrap();
        } else {
            panic!(
                "README's migration table differs from tests/records/compatibility.rs; run VMCE_BLESS=1 cargo test --test records compatibility::\n{table}"
            );
        }
    }
}
