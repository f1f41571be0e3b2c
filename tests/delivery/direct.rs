//! A guest machine check built directly (`GuestMce::direct`, src/inject_direct.rs): what vmce
//! delivers is accepted and reaches the guest as stated; what it would never deliver is
//! refused with the reason.

use crate::common::{AllUp, domain};
use vmce::classify::{FatalReason, HostOnlyReason, ReflectClass};
use vmce::registers::{McgStatus, MciMisc, MciStatus};
use vmce::{
    Access, DirectError, DirectMce, GuestMce, GuestPhysAddr, Profile, RdmsrOutcome, VcpuId,
};

/// VAL UC EN MISCV ADDRV S, memory scrub: an Intel SRAO.
const SRAO: u64 = 0xBD00_0000_0000_00C0;
/// VAL UC EN MISCV ADDRV S AR, data load: an Intel SRAR.
const SRAR_LOAD: u64 = 0xBD80_0000_0000_0134;
/// VAL UC EN MISCV ADDRV POISON, data load: an AMD uncorrected error.
const AMD_LOAD: u64 = 0xBC00_0800_0000_0134;
/// Physical address mode, address LSB 6 (a cache line).
const MISC: u64 = 0x86;
const RIPV_EIPV: u64 = 0x3;
const RIPV: u64 = 0x1;
const LMCE_S: u64 = 0x8;

fn request(bank: u8, mcg_status: u64, status: u64, addr: u64, misc: u64) -> DirectMce {
    DirectMce {
        bank,
        mcg_status: McgStatus::from_bits_retain(mcg_status),
        status: MciStatus::from_bits_retain(status),
        addr: GuestPhysAddr(addr),
        misc: MciMisc(misc),
    }
}

fn rdmsr(value: RdmsrOutcome) -> u64 {
    match value {
        RdmsrOutcome::Handled(value) => value,
        other => panic!("not handled: {other:?}"),
    }
}

#[rustfmt::skip]
const ACCEPTED: &[(Profile, u64, u64, u64, ReflectClass)] = &[
    // profile, MCG_STATUS, MCi_STATUS, MCi_MISC, class
    (Profile::Intel,     RIPV,          SRAO,                          MISC, ReflectClass::SraoMemoryScrub),
    (Profile::Intel,     RIPV,          0xBD00_0000_0000_017A,         MISC, ReflectClass::SraoL3Writeback),
    (Profile::Intel,     RIPV_EIPV,     SRAR_LOAD,                     MISC, ReflectClass::SrarDataLoad),
    (Profile::Intel,     RIPV_EIPV,     0xBD80_0000_0000_0150,         0x8C, ReflectClass::SrarInstructionFetch),
    (Profile::Intel,     RIPV,          SRAO | 0x3F_0000_0000,         MISC, ReflectClass::SraoMemoryScrub), // bits 37:32, other information
    (Profile::IntelLmce, RIPV_EIPV | LMCE_S, SRAR_LOAD,                MISC, ReflectClass::SrarDataLoad),
    (Profile::Amd,       RIPV_EIPV,     AMD_LOAD,                      0,    ReflectClass::AmdUncorrected),
    (Profile::Amd,       RIPV_EIPV,     0xB400_0000_0000_0150,         0,    ReflectClass::AmdUncorrected), // no MISCV, no POISON
];

/// Each accepted request is the error vmce injects: its class from the profile's
/// classification, its registers as stated, in bank 1 of the vCPU that gets the data.
#[test]
fn what_vmce_delivers_is_built_and_reaches_the_guest_as_stated() {
    for &(profile, mcg_status, status, misc, class) in ACCEPTED {
        let asked = request(1, mcg_status, status, 0x0012_3ABC, misc);
        let error = GuestMce::direct(profile, &asked)
            .unwrap_or_else(|refusal| panic!("{profile:?} {status:#x}: refused: {refusal}"));
        assert_eq!(error.class, class, "{profile:?} {status:#x}");
        assert_eq!(error.guest_addr, GuestPhysAddr(0x0012_3ABC));
        assert_eq!(error.host_addr.0, 0, "no host behind a direct error");

        let guest = domain(profile, 2);
        let report = guest
            .inject(&error, Some(VcpuId(1)), &mut AllUp)
            .expect("injected");
        assert!(!report.needs_shutdown(), "{profile:?} {status:#x}");
        let data_vcpu = report.data_vcpu.expect("a vCPU gets the data");
        let data = guest.vcpu(data_vcpu).expect("in the domain");
        assert_eq!(rdmsr(data.rdmsr(0x405)), status, "{profile:?} MC1_STATUS");
        assert_eq!(
            rdmsr(data.rdmsr(0x406)),
            0x0012_3ABC,
            "{profile:?} MC1_ADDR"
        );
        assert_eq!(rdmsr(data.rdmsr(0x407)), misc, "{profile:?} MC1_MISC");
        assert!(
            data.take_pending(),
            "{profile:?}: #MC pending on the data vCPU"
        );
    }
}

/// The errors vmce synthesizes for an access to a broken frame are ones a tool may state.
#[test]
fn broken_frame_errors_are_accepted_unchanged() {
    for profile in [Profile::Intel, Profile::IntelLmce, Profile::Amd] {
        for access in [Access::DataLoad, Access::InstructionFetch] {
            let built =
                GuestMce::broken_frame_access(profile.vendor(), access, GuestPhysAddr(0x9000));
            let asked = DirectMce {
                bank: 1,
                mcg_status: built.host_mcg_status,
                status: built.host_status,
                addr: built.guest_addr,
                misc: built.misc,
            };
            assert_eq!(
                GuestMce::direct(profile, &asked),
                Ok(built),
                "{profile:?} {access:?}"
            );
        }
    }
}

#[rustfmt::skip]
const REFUSED: &[(&str, Profile, DirectMce, DirectError)] = &[
    ("bank 0 is reserved", Profile::Intel,
        DirectMce { bank: 0, ..INTEL_SRAO }, DirectError::Bank(0)),
    ("no bank 2", Profile::Amd,
        DirectMce { bank: 2, ..AMD_ERROR }, DirectError::Bank(2)),
    ("MSCOD set", Profile::Intel,
        DirectMce { status: MciStatus::from_bits_retain(SRAO | 0x0001_0000), ..INTEL_SRAO }, DirectError::MscodSet(1)),
    ("address beyond 52 bits", Profile::Intel,
        DirectMce { addr: GuestPhysAddr(1 << 52), ..INTEL_SRAO }, DirectError::AddressOutOfRange(GuestPhysAddr(1 << 52))),
    ("LMCE_S without the LMCE profile", Profile::Intel,
        DirectMce { mcg_status: McgStatus::from_bits_retain(RIPV | LMCE_S), ..INTEL_SRAO }, DirectError::McgStatusBits(LMCE_S)),
    ("LMCE_S on AMD", Profile::Amd,
        DirectMce { mcg_status: McgStatus::from_bits_retain(RIPV_EIPV | LMCE_S), ..AMD_ERROR }, DirectError::McgStatusBits(LMCE_S)),
    ("reserved MCG_STATUS bit", Profile::IntelLmce,
        DirectMce { mcg_status: McgStatus::from_bits_retain(RIPV | 0x10), ..INTEL_SRAO }, DirectError::McgStatusBits(0x10)),
    ("Intel corrected-error count", Profile::Intel,
        DirectMce { status: MciStatus::from_bits_retain(SRAO | 1 << 38), ..INTEL_SRAO }, DirectError::StatusBits(1 << 38)),
    ("Intel threshold status", Profile::Intel,
        DirectMce { status: MciStatus::from_bits_retain(SRAO | 1 << 54), ..INTEL_SRAO }, DirectError::StatusBits(1 << 54)),
    ("S and AR on AMD", Profile::Amd,
        DirectMce { status: MciStatus::from_bits_retain(AMD_LOAD | 3 << 55), ..AMD_ERROR }, DirectError::StatusBits(3 << 55)),
    ("DEFERRED on AMD", Profile::Amd,
        DirectMce { status: MciStatus::from_bits_retain(AMD_LOAD | 1 << 44), ..AMD_ERROR }, DirectError::StatusBits(1 << 44)),
    ("not valid", Profile::Intel,
        DirectMce { status: MciStatus::from_bits_retain(SRAO & !(1 << 63)), ..INTEL_SRAO }, DirectError::HostOnly(HostOnlyReason::NotValid)),
    ("corrected", Profile::Intel,
        DirectMce { status: MciStatus::from_bits_retain(0x9C00_0000_0000_00C0), ..INTEL_SRAO }, DirectError::HostOnly(HostOnlyReason::Corrected)),
    ("UCNA", Profile::Intel,
        DirectMce { status: MciStatus::from_bits_retain(SRAO & !(1 << 56)), ..INTEL_SRAO }, DirectError::HostOnly(HostOnlyReason::Ucna)),
    ("action optional, I/O MCACOD", Profile::Intel,
        DirectMce { status: MciStatus::from_bits_retain(0xBD00_0000_0000_0E0B), ..INTEL_SRAO }, DirectError::HostOnly(HostOnlyReason::UnrecognizedActionOptional)),
    ("action required, unknown MCACOD", Profile::Intel,
        DirectMce { status: MciStatus::from_bits_retain(0xBD80_0000_0000_0135), ..INTEL_SRAR }, DirectError::Fatal(FatalReason::UnrecognizedActionRequired)),
    ("PCC", Profile::Intel,
        DirectMce { status: MciStatus::from_bits_retain(SRAR_LOAD | 1 << 57), ..INTEL_SRAR }, DirectError::Fatal(FatalReason::ProcessorContextCorrupt)),
    ("neither RIPV nor EIPV", Profile::Intel,
        DirectMce { mcg_status: McgStatus::MCIP, ..INTEL_SRAR }, DirectError::Fatal(FatalReason::NoRestartIp)),
    ("address coarser than a page", Profile::Intel,
        DirectMce { misc: MciMisc(0x8D), ..INTEL_SRAO }, DirectError::HostOnly(HostOnlyReason::AddressCoarserThanPage { lsb: 13 })),
    ("AMD without an address", Profile::Amd,
        DirectMce { status: MciStatus::from_bits_retain(AMD_LOAD & !(1 << 58)), ..AMD_ERROR }, DirectError::Fatal(FatalReason::ActionRequiredWithoutAddress)),
    ("AMD I/O MCACOD", Profile::Amd,
        DirectMce { status: MciStatus::from_bits_retain(0xBC00_0800_0000_0E0B), ..AMD_ERROR }, DirectError::NotMemoryMcacod(0x0E0B)),
    ("AMD internal parity MCACOD", Profile::Amd,
        DirectMce { status: MciStatus::from_bits_retain(0xBC00_0800_0000_0005), ..AMD_ERROR }, DirectError::NotMemoryMcacod(0x0005)),
];

const INTEL_SRAO: DirectMce = DirectMce {
    bank: 1,
    mcg_status: McgStatus::RIPV,
    status: MciStatus::from_bits_retain(SRAO),
    addr: GuestPhysAddr(0x0012_3ABC),
    misc: MciMisc(MISC),
};
const INTEL_SRAR: DirectMce = DirectMce {
    mcg_status: McgStatus::from_bits_retain(RIPV_EIPV),
    status: MciStatus::from_bits_retain(SRAR_LOAD),
    ..INTEL_SRAO
};
const AMD_ERROR: DirectMce = DirectMce {
    mcg_status: McgStatus::from_bits_retain(RIPV_EIPV),
    status: MciStatus::from_bits_retain(AMD_LOAD),
    misc: MciMisc(0),
    ..INTEL_SRAO
};

/// What vmce would never deliver is refused with its reason, and the reason reads as one.
#[test]
fn what_vmce_never_delivers_is_refused_with_the_reason() {
    // The bases themselves are accepted, so each row's refusal is its own change.
    for (profile, base) in [
        (Profile::Intel, INTEL_SRAO),
        (Profile::Intel, INTEL_SRAR),
        (Profile::IntelLmce, INTEL_SRAO),
        (Profile::Amd, AMD_ERROR),
    ] {
        assert!(
            GuestMce::direct(profile, &base).is_ok(),
            "{profile:?} {base:?}"
        );
    }
    for (what, profile, asked, refusal) in REFUSED {
        assert_eq!(
            GuestMce::direct(*profile, asked),
            Err(*refusal),
            "{what} ({profile:?})"
        );
        assert!(!refusal.to_string().is_empty(), "{what}");
    }
}
