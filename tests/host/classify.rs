//! docs/behaviour.md §4's classification, against real vectors from QEMU, KVM and Xen's
//! injector.

use crate::common;

use vmce::Vendor;
use vmce::classify::{Disposition, FatalReason, HostOnlyReason, ReflectClass, classify};
use vmce::host::HostCapabilities;
use vmce::registers::{McgCap, McgStatus, MciMisc, MciStatus};

use Disposition::{Fatal, HostOnly, Reflect};

/// Physical address mode, LSB 6 (QEMU's and Linux's usual MISC for memory errors).
const MISC_PHYS: u64 = 0x86;
/// Linear address mode.
const MISC_LINEAR: u64 = 0x46;

struct Vector {
    source: &'static str,
    status: u64,
    mcg_status: u64,
    misc: u64,
    expected: Disposition,
}

const fn v(
    source: &'static str,
    status: u64,
    mcg_status: u64,
    misc: u64,
    expected: Disposition,
) -> Vector {
    Vector {
        source,
        status,
        mcg_status,
        misc,
        expected,
    }
}

const INTEL_VECTORS: &[Vector] = &[
    v(
        "QEMU SRAR data load",
        0xBD80_0000_0000_0134,
        0x7,
        MISC_PHYS,
        Reflect(ReflectClass::SrarDataLoad),
    ),
    v(
        "QEMU SRAO memory scrub",
        0xBD00_0000_0000_00C0,
        0x5,
        MISC_PHYS,
        Reflect(ReflectClass::SraoMemoryScrub),
    ),
    v(
        "KVM UCNA",
        0xBC00_0000_0001_0090,
        0x0,
        MISC_PHYS,
        HostOnly(HostOnlyReason::Ucna),
    ),
    v(
        "Xen SRAO L3 write-back",
        0xBD20_0000_8000_017A,
        0x5,
        MISC_PHYS,
        Reflect(ReflectClass::SraoL3Writeback),
    ),
    v(
        "Xen patrol scrub",
        0xBD00_0000_0040_00CF,
        0x5,
        MISC_PHYS,
        Reflect(ReflectClass::SraoMemoryScrub),
    ),
    v(
        "Xen UCNA",
        0xBC20_0000_8000_0136,
        0x0,
        MISC_PHYS,
        HostOnly(HostOnlyReason::Ucna),
    ),
    v(
        "Xen fatal PCC",
        0xBF20_0000_8000_017A,
        0x5,
        MISC_PHYS,
        Fatal(FatalReason::ProcessorContextCorrupt),
    ),
    v(
        "SRAR instruction fetch",
        0xBD80_0000_0000_0150,
        0x7,
        MISC_PHYS,
        Reflect(ReflectClass::SrarInstructionFetch),
    ),
    v(
        "SRAR data load, filter bit",
        0xBD80_0000_0000_1134,
        0x7,
        MISC_PHYS,
        Reflect(ReflectClass::SrarDataLoad),
    ),
    v(
        "corrected memory read",
        0x9C00_0000_0000_0090,
        0x0,
        MISC_PHYS,
        HostOnly(HostOnlyReason::Corrected),
    ),
    v(
        "corrected, even with S/AR pattern",
        0x9D80_0000_0000_0134,
        0x7,
        MISC_PHYS,
        HostOnly(HostOnlyReason::Corrected),
    ),
    v(
        "not valid",
        0x3D80_0000_0000_0134,
        0x7,
        MISC_PHYS,
        HostOnly(HostOnlyReason::NotValid),
    ),
    v(
        "SRAR overflow",
        0xFD80_0000_0000_0134,
        0x7,
        MISC_PHYS,
        Fatal(FatalReason::Overflow),
    ),
    v(
        "SRAO overflow passes through",
        0xFD00_0000_0000_00C0,
        0x5,
        MISC_PHYS,
        Reflect(ReflectClass::SraoMemoryScrub),
    ),
    v(
        "SRAO, neither RIPV nor EIPV",
        0xBD00_0000_0000_00C0,
        0x4,
        MISC_PHYS,
        Fatal(FatalReason::NoRestartIp),
    ),
    v(
        "SRAR, neither RIPV nor EIPV",
        0xBD80_0000_0000_0134,
        0x4,
        MISC_PHYS,
        Fatal(FatalReason::NoRestartIp),
    ),
    v(
        "SRAR, EIPV only",
        0xBD80_0000_0000_0134,
        0x6,
        MISC_PHYS,
        Reflect(ReflectClass::SrarDataLoad),
    ),
    v(
        "SRAR without ADDRV",
        0xB980_0000_0000_0134,
        0x7,
        MISC_PHYS,
        Fatal(FatalReason::ActionRequiredWithoutAddress),
    ),
    v(
        "SRAR, linear address mode",
        0xBD80_0000_0000_0134,
        0x7,
        MISC_LINEAR,
        Fatal(FatalReason::ActionRequiredWithoutAddress),
    ),
    v(
        "SRAO without MISCV",
        0xB500_0000_0000_00C0,
        0x5,
        MISC_PHYS,
        HostOnly(HostOnlyReason::NoPhysicalAddress),
    ),
    v(
        "SRAO, linear address mode",
        0xBD00_0000_0000_00C0,
        0x5,
        MISC_LINEAR,
        HostOnly(HostOnlyReason::NoPhysicalAddress),
    ),
    v(
        "SRAO of another kind",
        0xBD00_0000_0000_0136,
        0x5,
        MISC_PHYS,
        HostOnly(HostOnlyReason::UnrecognizedActionOptional),
    ),
    v(
        "SRAR of another kind",
        0xBD80_0000_0000_0136,
        0x7,
        MISC_PHYS,
        Fatal(FatalReason::UnrecognizedActionRequired),
    ),
    v(
        "AR without S",
        0xBC80_0000_0000_0134,
        0x7,
        MISC_PHYS,
        Fatal(FatalReason::UnrecognizedActionRequired),
    ),
    v(
        "QEMU broadcast filler (VAL|UC)",
        0xA000_0000_0000_0000,
        0x5,
        0,
        HostOnly(HostOnlyReason::Ucna),
    ),
];

#[test]
fn intel_vectors_with_ser_p() {
    let host = common::intel_host();
    for vector in INTEL_VECTORS {
        let got = classify(
            &host,
            McgStatus::from_bits_retain(vector.mcg_status),
            MciStatus::from_bits_retain(vector.status),
            MciMisc(vector.misc),
        );
        assert_eq!(
            got, vector.expected,
            "{}: {:#x}",
            vector.source, vector.status
        );
    }
}

#[test]
fn qemu_tcg_host_classifies_the_same() {
    let host = common::qemu_host();
    for vector in INTEL_VECTORS {
        let got = classify(
            &host,
            McgStatus::from_bits_retain(vector.mcg_status),
            MciStatus::from_bits_retain(vector.status),
            MciMisc(vector.misc),
        );
        assert_eq!(got, vector.expected, "{}", vector.source);
    }
}

#[test]
fn intel_host_without_ser_p_reflects_nothing() {
    let host = HostCapabilities::new(Vendor::Intel, McgCap::from_bits_retain(0x0000_0C09));
    for vector in INTEL_VECTORS {
        let got = classify(
            &host,
            McgStatus::from_bits_retain(vector.mcg_status),
            MciStatus::from_bits_retain(vector.status),
            MciMisc(vector.misc),
        );
        assert!(!matches!(got, Reflect(_)), "{}: {got:?}", vector.source);
        let status = MciStatus::from_bits_retain(vector.status);
        if status.contains(MciStatus::VAL | MciStatus::UC) && !status.contains(MciStatus::PCC) {
            assert_eq!(
                got,
                Fatal(FatalReason::NoRecoveryArchitecture),
                "{}",
                vector.source
            );
        }
    }
}

#[test]
fn amd_vectors() {
    const VAL_UC_EN_ADDRV: u64 = (1 << 63) | (1 << 61) | (1 << 60) | (1 << 58);
    const POISON: u64 = 1 << 43;
    const DEFERRED: u64 = 1 << 44;
    let rows: &[(&str, u64, u64, Disposition)] = &[
        (
            "poison consumed, data read",
            VAL_UC_EN_ADDRV | POISON | 0x0136,
            0x7,
            Reflect(ReflectClass::AmdUncorrected),
        ),
        (
            "uncorrected DRAM ECC",
            VAL_UC_EN_ADDRV | 0x009F,
            0x5,
            Reflect(ReflectClass::AmdUncorrected),
        ),
        (
            "deferred",
            (1 << 63) | (1 << 58) | DEFERRED | 0x009F,
            0x0,
            HostOnly(HostOnlyReason::Deferred),
        ),
        (
            "corrected",
            (1 << 63) | (1 << 60) | (1 << 58) | 0x009F,
            0x0,
            HostOnly(HostOnlyReason::Corrected),
        ),
        (
            "PCC",
            VAL_UC_EN_ADDRV | (1 << 57) | 0x0136,
            0x5,
            Fatal(FatalReason::ProcessorContextCorrupt),
        ),
        (
            "overflow",
            VAL_UC_EN_ADDRV | (1 << 62) | 0x0136,
            0x7,
            Fatal(FatalReason::Overflow),
        ),
        (
            "no address",
            (1 << 63) | (1 << 61) | 0x0136,
            0x7,
            Fatal(FatalReason::ActionRequiredWithoutAddress),
        ),
        (
            "no restart IP",
            VAL_UC_EN_ADDRV | 0x0136,
            0x4,
            Fatal(FatalReason::NoRestartIp),
        ),
        (
            "not valid",
            VAL_UC_EN_ADDRV & !(1 << 63),
            0x7,
            HostOnly(HostOnlyReason::NotValid),
        ),
    ];
    let host = common::amd_host();
    for &(source, status, mcg_status, expected) in rows {
        let got = classify(
            &host,
            McgStatus::from_bits_retain(mcg_status),
            MciStatus::from_bits_retain(status),
            MciMisc(0),
        );
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

fn classify_raw(host: &HostCapabilities, mcg_status: u64, status: u64, misc: u64) -> Disposition {
    classify(
        host,
        McgStatus::from_bits_retain(mcg_status),
        MciStatus::from_bits_retain(status),
        MciMisc(misc),
    )
}

#[test]
fn intel_address_within_a_page_is_reflected() {
    for host in [common::intel_host(), common::qemu_host()] {
        for lsb in [0, 6, 12] {
            let misc = physical_misc(lsb);
            assert_eq!(
                classify_raw(&host, 0x5, SRAO_SCRUB, misc),
                Reflect(ReflectClass::SraoMemoryScrub),
                "SRAO, LSB {lsb}"
            );
            assert_eq!(
                classify_raw(&host, 0x5, SRAO_L3_WRITEBACK, misc),
                Reflect(ReflectClass::SraoL3Writeback),
                "SRAO write-back, LSB {lsb}"
            );
            assert_eq!(
                classify_raw(&host, 0x7, SRAR_DATA_LOAD, misc),
                Reflect(ReflectClass::SrarDataLoad),
                "SRAR, LSB {lsb}"
            );
            assert_eq!(
                classify_raw(&host, 0x7, SRAR_INSTRUCTION_FETCH, misc),
                Reflect(ReflectClass::SrarInstructionFetch),
                "SRAR fetch, LSB {lsb}"
            );
        }
    }
}

#[test]
fn intel_address_coarser_than_a_page_is_not_reflected() {
    for host in [common::intel_host(), common::qemu_host()] {
        for lsb in [13, 21, 30, 63] {
            let misc = physical_misc(lsb);
            let host_only = HostOnly(HostOnlyReason::AddressCoarserThanPage { lsb });
            let fatal = Fatal(FatalReason::ActionRequiredAddressCoarserThanPage { lsb });
            assert_eq!(
                classify_raw(&host, 0x5, SRAO_SCRUB, misc),
                host_only,
                "SRAO, LSB {lsb}"
            );
            assert_eq!(
                classify_raw(&host, 0x5, SRAO_L3_WRITEBACK, misc),
                host_only,
                "SRAO write-back, LSB {lsb}"
            );
            assert_eq!(
                classify_raw(&host, 0x7, SRAR_DATA_LOAD, misc),
                fatal,
                "SRAR, LSB {lsb}"
            );
            assert_eq!(
                classify_raw(&host, 0x7, SRAR_INSTRUCTION_FETCH, misc),
                fatal,
                "SRAR fetch, LSB {lsb}"
            );
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
