//! docs/behaviour.md §4's classification, against real vectors from QEMU, KVM and Xen's
//! injector.

use crate::common;

use vmce::Vendor;
use vmce::classify::{Disposition, FatalReason, HostOnlyReason, ReflectClass, classify};
use vmce::host::HostCapabilities;
use vmce::registers::{McgCap, McgStatus, MciMisc, MciStatus};

use Disposition::{Fatal, HostOnly, Reflect};
use FatalReason as F;
use HostOnlyReason as H;
use ReflectClass as R;

/// Physical address mode, LSB 6 (QEMU's and Linux's usual MISC for memory errors).
const PHYS: u64 = 0x86;
/// Linear address mode.
const LINEAR: u64 = 0x46;

fn classify_raw(host: &HostCapabilities, mcg_status: u64, status: u64, misc: u64) -> Disposition {
    classify(
        host,
        McgStatus::from_bits_retain(mcg_status),
        MciStatus::from_bits_retain(status),
        MciMisc(misc),
    )
}

const AO_NO_ADDRESS: Disposition = HostOnly(H::NoPhysicalAddress);
const AO_UNKNOWN: Disposition = HostOnly(H::UnrecognizedActionOptional);
const AR_NO_ADDRESS: Disposition = Fatal(F::ActionRequiredWithoutAddress);
const AR_UNKNOWN: Disposition = Fatal(F::UnrecognizedActionRequired);

/// A vector: source, `MCi_STATUS`, `MCG_STATUS`, `MCi_MISC`, the disposition expected.
type Vector = (&'static str, u64, u64, u64, Disposition);

const fn v(source: &'static str, status: u64, mcg: u64, misc: u64, then: Disposition) -> Vector {
    (source, status, mcg, misc, then)
}

/// One vector a row (rustfmt would give each field a line of its own).
#[rustfmt::skip]
const INTEL_VECTORS: &[Vector] = &[
    v("QEMU SRAR data load", 0xBD80_0000_0000_0134, 0x7, PHYS, Reflect(R::SrarDataLoad)),
    v("QEMU SRAO memory scrub", 0xBD00_0000_0000_00C0, 0x5, PHYS, Reflect(R::SraoMemoryScrub)),
    v("KVM UCNA", 0xBC00_0000_0001_0090, 0x0, PHYS, HostOnly(H::Ucna)),
    v("Xen SRAO L3 write-back", 0xBD20_0000_8000_017A, 0x5, PHYS, Reflect(R::SraoL3Writeback)),
    v("Xen patrol scrub", 0xBD00_0000_0040_00CF, 0x5, PHYS, Reflect(R::SraoMemoryScrub)),
    v("Xen UCNA", 0xBC20_0000_8000_0136, 0x0, PHYS, HostOnly(H::Ucna)),
    v("Xen fatal PCC", 0xBF20_0000_8000_017A, 0x5, PHYS, Fatal(F::ProcessorContextCorrupt)),
    v("SRAR instruction fetch", 0xBD80_0000_0000_0150, 0x7, PHYS, Reflect(R::SrarInstructionFetch)),
    v("SRAR data load, filter bit", 0xBD80_0000_0000_1134, 0x7, PHYS, Reflect(R::SrarDataLoad)),
    v("corrected memory read", 0x9C00_0000_0000_0090, 0x0, PHYS, HostOnly(H::Corrected)),
    v("corrected, despite S/AR", 0x9D80_0000_0000_0134, 0x7, PHYS, HostOnly(H::Corrected)),
    v("not valid", 0x3D80_0000_0000_0134, 0x7, PHYS, HostOnly(H::NotValid)),
    v("SRAR overflow", 0xFD80_0000_0000_0134, 0x7, PHYS, Fatal(F::Overflow)),
    v("SRAO overflow: reflected", 0xFD00_0000_0000_00C0, 0x5, PHYS, Reflect(R::SraoMemoryScrub)),
    v("SRAO, neither RIPV nor EIPV", 0xBD00_0000_0000_00C0, 0x4, PHYS, Fatal(F::NoRestartIp)),
    v("SRAR, neither RIPV nor EIPV", 0xBD80_0000_0000_0134, 0x4, PHYS, Fatal(F::NoRestartIp)),
    v("SRAR, EIPV only", 0xBD80_0000_0000_0134, 0x6, PHYS, Reflect(R::SrarDataLoad)),
    v("SRAR without ADDRV", 0xB980_0000_0000_0134, 0x7, PHYS, AR_NO_ADDRESS),
    v("SRAR, linear address mode", 0xBD80_0000_0000_0134, 0x7, LINEAR, AR_NO_ADDRESS),
    v("SRAO without MISCV", 0xB500_0000_0000_00C0, 0x5, PHYS, AO_NO_ADDRESS),
    v("SRAO, linear address mode", 0xBD00_0000_0000_00C0, 0x5, LINEAR, AO_NO_ADDRESS),
    v("SRAO of another kind", 0xBD00_0000_0000_0136, 0x5, PHYS, AO_UNKNOWN),
    v("SRAR of another kind", 0xBD80_0000_0000_0136, 0x7, PHYS, AR_UNKNOWN),
    v("AR without S", 0xBC80_0000_0000_0134, 0x7, PHYS, AR_UNKNOWN),
    v("QEMU broadcast filler (VAL|UC)", 0xA000_0000_0000_0000, 0x5, 0, HostOnly(H::Ucna)),
];

/// A Skylake-SP-like host and QEMU's TCG host classify every vector alike.
#[test]
fn intel_vectors_with_ser_p() {
    for (name, host) in [
        ("Intel", common::intel_host()),
        ("QEMU TCG", common::qemu_host()),
    ] {
        for &(source, status, mcg_status, misc, expected) in INTEL_VECTORS {
            let got = classify_raw(&host, mcg_status, status, misc);
            assert_eq!(got, expected, "{name} host, {source}: {status:#x}");
        }
    }
}

#[test]
fn intel_host_without_ser_p_reflects_nothing() {
    let host = HostCapabilities::new(Vendor::Intel, McgCap::from_bits_retain(0x0000_0C09));
    for &(source, status, mcg_status, misc, _) in INTEL_VECTORS {
        let got = classify_raw(&host, mcg_status, status, misc);
        assert!(!matches!(got, Reflect(_)), "{source}: {got:?}");
        let status = MciStatus::from_bits_retain(status);
        if status.contains(MciStatus::VAL | MciStatus::UC) && !status.contains(MciStatus::PCC) {
            let no_recovery = Fatal(FatalReason::NoRecoveryArchitecture);
            assert_eq!(got, no_recovery, "{source}");
        }
    }
}

#[test]
fn amd_vectors() {
    const VAL_UC_EN_ADDRV: u64 = (1 << 63) | (1 << 61) | (1 << 60) | (1 << 58);
    const POISON: u64 = 1 << 43;
    const DEFERRED: u64 = 1 << 44;
    #[rustfmt::skip]
    let rows: &[(&str, u64, u64, Disposition)] = &[
        ("poison consumed, data read", VAL_UC_EN_ADDRV | POISON | 0x0136, 0x7,
            Reflect(R::AmdUncorrected)),
        ("uncorrected DRAM ECC", VAL_UC_EN_ADDRV | 0x009F, 0x5, Reflect(R::AmdUncorrected)),
        ("deferred", (1 << 63) | (1 << 58) | DEFERRED | 0x009F, 0x0, HostOnly(H::Deferred)),
        ("corrected", (1 << 63) | (1 << 60) | (1 << 58) | 0x009F, 0x0, HostOnly(H::Corrected)),
        ("PCC", VAL_UC_EN_ADDRV | (1 << 57) | 0x0136, 0x5, Fatal(F::ProcessorContextCorrupt)),
        ("overflow", VAL_UC_EN_ADDRV | (1 << 62) | 0x0136, 0x7, Fatal(F::Overflow)),
        ("no address", (1 << 63) | (1 << 61) | 0x0136, 0x7, Fatal(F::ActionRequiredWithoutAddress)),
        ("no restart IP", VAL_UC_EN_ADDRV | 0x0136, 0x4, Fatal(F::NoRestartIp)),
        ("not valid", VAL_UC_EN_ADDRV & !(1 << 63), 0x7, HostOnly(H::NotValid)),
    ];
    let host = common::amd_host();
    for &(source, status, mcg_status, expected) in rows {
        let got = classify_raw(&host, mcg_status, status, 0);
        assert_eq!(got, expected, "AMD {source}");
    }
}

#[test]
fn dispositions_read_well_in_a_log() {
    assert_eq!(
        Reflect(ReflectClass::SrarDataLoad).to_string(),
        "reflect: SRAR data load (action required)"
    );
    assert_eq!(
        Fatal(FatalReason::ProcessorContextCorrupt).to_string(),
        "fatal: processor context corrupt (PCC)"
    );
    assert_eq!(
        HostOnly(HostOnlyReason::Ucna).to_string(),
        "host only: UCNA (uncorrected, no action required)"
    );
}

/// `MCi_MISC` with a physical address mode (bits 8:6 = 2) and the given address LSB.
const fn physical_misc(lsb: u8) -> u64 {
    (2 << 6) | lsb as u64
}

const SRAO_SCRUB: u64 = 0xBD00_0000_0000_00C0;
const SRAO_L3_WRITEBACK: u64 = 0xBD20_0000_8000_017A;
const SRAR_DATA_LOAD: u64 = 0xBD80_0000_0000_0134;
const SRAR_INSTRUCTION_FETCH: u64 = 0xBD80_0000_0000_0150;

/// The four reflectable Intel kinds: name, `MCG_STATUS`, `MCi_STATUS`, class, and whether
/// it is action-required.
const KINDS: [(&str, u64, u64, ReflectClass, bool); 4] = [
    ("SRAO", 0x5, SRAO_SCRUB, R::SraoMemoryScrub, false),
    (
        "SRAO write-back",
        0x5,
        SRAO_L3_WRITEBACK,
        R::SraoL3Writeback,
        false,
    ),
    ("SRAR", 0x7, SRAR_DATA_LOAD, R::SrarDataLoad, true),
    (
        "SRAR fetch",
        0x7,
        SRAR_INSTRUCTION_FETCH,
        R::SrarInstructionFetch,
        true,
    ),
];

#[test]
fn intel_address_within_a_page_is_reflected() {
    for host in [common::intel_host(), common::qemu_host()] {
        for lsb in [0, 6, 12] {
            for (kind, mcg_status, status, class, _) in KINDS {
                let got = classify_raw(&host, mcg_status, status, physical_misc(lsb));
                assert_eq!(got, Reflect(class), "{kind}, LSB {lsb}");
            }
        }
    }
}

#[test]
fn intel_address_coarser_than_a_page_is_not_reflected() {
    for host in [common::intel_host(), common::qemu_host()] {
        for lsb in [13, 21, 30, 63] {
            for (kind, mcg_status, status, _, action_required) in KINDS {
                let got = classify_raw(&host, mcg_status, status, physical_misc(lsb));
                let expected = if action_required {
                    Fatal(F::ActionRequiredAddressCoarserThanPage { lsb })
                } else {
                    HostOnly(H::AddressCoarserThanPage { lsb })
                };
                assert_eq!(got, expected, "{kind}, LSB {lsb}");
            }
        }
    }
}

#[test]
fn a_coarse_address_ranks_with_a_missing_one() {
    let host = common::intel_host();
    let coarse = physical_misc(21);
    // Host-only like an SRAO without an address; fatal like an SRAR without one.
    assert_eq!(
        classify_raw(&host, 0x5, SRAO_SCRUB, coarse).severity(),
        HostOnly(HostOnlyReason::NoPhysicalAddress).severity()
    );
    assert_eq!(
        classify_raw(&host, 0x7, SRAR_DATA_LOAD, coarse).severity(),
        Fatal(FatalReason::ActionRequiredWithoutAddress).severity()
    );
    // Without a physical address at all, the LSB is not looked at.
    let linear_coarse = (1 << 6) | 21;
    assert_eq!(
        classify_raw(&host, 0x5, SRAO_SCRUB, linear_coarse),
        HostOnly(HostOnlyReason::NoPhysicalAddress)
    );
    assert_eq!(
        classify_raw(&host, 0x7, SRAR_DATA_LOAD, linear_coarse),
        Fatal(FatalReason::ActionRequiredWithoutAddress)
    );
    const MISCV: u64 = 1 << 59;
    assert_eq!(
        classify_raw(&host, 0x7, SRAR_DATA_LOAD & !MISCV, coarse),
        Fatal(FatalReason::ActionRequiredWithoutAddress)
    );
}

#[test]
fn amd_misc_low_bits_are_not_an_address_lsb() {
    // VAL UC EN MISCV ADDRV POISON, data read: reflected whatever MISC bits 5:0 hold.
    const STATUS: u64 = (1 << 63) | (1 << 61) | (1 << 60) | (1 << 59) | (1 << 58) | (1 << 43);
    let host = common::amd_host();
    for misc in [
        0,
        13,
        21,
        30,
        0x3F,
        physical_misc(21),
        0xC000_0000_0100_003F,
    ] {
        assert_eq!(
            classify_raw(&host, 0x7, STATUS | 0x0136, misc),
            Reflect(ReflectClass::AmdUncorrected),
            "AMD, MISC {misc:#x}"
        );
    }
}

#[test]
fn coarse_address_reasons_say_what_the_host_must_do() {
    assert_eq!(
        HostOnly(HostOnlyReason::AddressCoarserThanPage { lsb: 21 }).to_string(),
        "host only: action-optional error in a 2^21-byte region (MCi_MISC address LSB 21 > 12): \
         larger than a 4 KiB page, so it cannot be confined to one page of one guest; the host \
         must handle the whole region itself"
    );
    assert_eq!(
        Fatal(FatalReason::ActionRequiredAddressCoarserThanPage { lsb: 30 }).to_string(),
        "fatal: action-required error in a 2^30-byte region (MCi_MISC address LSB 30 > 12): \
         larger than a 4 KiB page, so no guest can recover it; the host must treat the \
         consuming context as lost"
    );
}
