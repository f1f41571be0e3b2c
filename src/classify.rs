//! Which host machine checks a guest should see.
//!
//! # Background
//! Only an error the hypervisor can confine to one guest's memory is reflected (SDM vol. 3B
//! §15.6 and §15.9.3 for the Intel classes; AMD APM vol. 2 §9.3 for AMD):
//!
//! | class (Intel, `SER_P`) | `MCi_STATUS` pattern | verdict |
//! |---|---|---|
//! | SRAO memory scrub | `UC S !AR !PCC`, MCACOD & 0xEFF0 = 0x00C0 | [`ReflectClass::SraoMemoryScrub`] |
//! | SRAO L3 explicit write-back | `UC S !AR !PCC`, MCACOD & 0xEFFF = 0x017A | [`ReflectClass::SraoL3Writeback`] |
//! | SRAR data load | `UC S AR !PCC`, MCACOD & 0xEFFF = 0x0134 | [`ReflectClass::SrarDataLoad`] |
//! | SRAR instruction fetch | `UC S AR !PCC`, MCACOD & 0xEFFF = 0x0150 | [`ReflectClass::SrarInstructionFetch`] |
//! | UCNA | `UC !S !AR` | [`HostOnlyReason::Ucna`] |
//! | corrected | `!UC` | [`HostOnlyReason::Corrected`] (never a CMCI) |
//! | fatal | `PCC`, or `OVER` with `UC AR`, or neither `RIPV` nor `EIPV` | [`FatalReason`] |
//!
//! A reflected error also needs a usable address: `ADDRV`, `MISCV`, a physical address mode
//! in `MISC` (bits 8:6) and an address LSB in `MISC` (bits 5:0) of at most 12
//! ([`COARSEST_REFLECTED_ADDRESS_LSB`]). Without one:
//!
//! | Intel class | address | verdict |
//! |---|---|---|
//! | SRAO | no `ADDRV` or no `MISCV`, or a mode other than physical | [`HostOnlyReason::NoPhysicalAddress`] |
//! | SRAO | physical, LSB > 12 | [`HostOnlyReason::AddressCoarserThanPage`] |
//! | SRAR | no `ADDRV` or no `MISCV`, or a mode other than physical | [`FatalReason::ActionRequiredWithoutAddress`] |
//! | SRAR | physical, LSB > 12 | [`FatalReason::ActionRequiredAddressCoarserThanPage`] |
//!
//! An action-optional error without a usable address stays with the host; an action-required
//! one is fatal, because the context that consumed the data cannot continue and nobody can be
//! told which page broke.
//!
//! # Address granularity
//! The LSB is the lowest valid bit of `MCi_ADDR`: the error lies somewhere in the aligned
//! 2^LSB-byte region around the address. vmce translates one 4 KiB host frame into one guest
//! frame ([`crate::address::translate`]). A region of 8 KiB or more (LSB 13 and up; 21 is a
//! 2 MiB region, 30 a 1 GiB one) spans several host frames, which may sit at scattered guest
//! frames or belong to other domains, so no single guest address names it and it is not
//! reflected: the host handles the region itself. Linux makes the same cut for its own
//! memory: on Intel it treats an address whose LSB is above `PAGE_SHIFT` as not usable, and
//! offlines no page for it (Linux 6.1: `mce_usable_address` in
//! `arch/x86/kernel/cpu/mce/core.c`; since 6.7 the Intel checks sit in
//! `intel_mce_usable_address`). An LSB of 12 or less (6 is a cache line) is reflected
//! unchanged: `MISC` passes through and the page offset is kept, so the guest applies the LSB
//! itself.
//!
//! AMD's `MCi_MISC` has no address mode and no address LSB in bits 5:0, so vmce never reads
//! them as one: an AMD error needs only `ADDRV`, whatever its `MISC` holds.
//! Newer AMD parts (SMCA) report the LSB in `MCA_ADDR` bits 61:56 instead; vmce does not
//! interpret that field yet, and passes the address to the translation as read.
//!
//! AMD has no `S`/`AR`: an uncorrected error without `PCC` is action-required for the context
//! that consumed it (Linux's rule with SUCCOR); a deferred error is logged by the host.

use crate::address::PAGE_SHIFT;
use crate::host::HostCapabilities;
use crate::registers::Vendor;
use crate::registers::{AddressMode, McgCap, McgStatus, MciMisc, MciStatus};
use core::fmt;

/// The coarsest Intel address LSB (`MCi_MISC` bits 5:0) vmce reflects: 12, one 4 KiB page.
///
/// An error whose LSB is above it names a region larger than the page that translation
/// works in (see the module docs).
pub const COARSEST_REFLECTED_ADDRESS_LSB: u8 = PAGE_SHIFT as u8;

/// A host error class that vmce reflects into the guest owning the memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReflectClass {
    /// Intel SRAO: the patrol scrubber found an uncorrectable error.
    SraoMemoryScrub,
    /// Intel SRAO: an L3 explicit write-back found an uncorrectable error.
    SraoL3Writeback,
    /// Intel SRAR: a data load consumed poisoned memory.
    SrarDataLoad,
    /// Intel SRAR: an instruction fetch consumed poisoned memory.
    SrarInstructionFetch,
    /// AMD: an uncorrected, context-recoverable error at a known address, consumed by the
    /// current context.
    AmdUncorrected,
}

impl ReflectClass {
    /// Whether the context that consumed the data must act before it runs on (SRAR, AMD).
    pub const fn action_required(self) -> bool {
        !matches!(
            self,
            ReflectClass::SraoMemoryScrub | ReflectClass::SraoL3Writeback
        )
    }
}

impl fmt::Display for ReflectClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReflectClass::SraoMemoryScrub => "SRAO memory scrub (action optional)",
            ReflectClass::SraoL3Writeback => "SRAO L3 explicit write-back (action optional)",
            ReflectClass::SrarDataLoad => "SRAR data load (action required)",
            ReflectClass::SrarInstructionFetch => "SRAR instruction fetch (action required)",
            ReflectClass::AmdUncorrected => "AMD uncorrected memory error (action required)",
        })
    }
}

/// Why a valid host error stays with the host (it logs it; the guest sees nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HostOnlyReason {
    /// `MCi_STATUS.VAL` is clear.
    NotValid,
    /// A corrected error: logged by the host, never a CMCI to a guest.
    Corrected,
    /// Intel UCNA: uncorrected, no action required, not signalled.
    Ucna,
    /// AMD deferred error: not yet consumed.
    Deferred,
    /// An action-optional error whose MCACOD vmce does not reflect.
    UnrecognizedActionOptional,
    /// An action-optional error without a usable physical address.
    NoPhysicalAddress,
    /// An Intel action-optional error whose address LSB (`MCi_MISC` bits 5:0) is above 12:
    /// it names a region larger than a 4 KiB page, which vmce cannot map to one guest
    /// address. The host handles the whole region (for instance by offlining its pages).
    AddressCoarserThanPage {
        /// The lowest valid address bit, as read from `MCi_MISC`.
        lsb: u8,
    },
}

impl fmt::Display for HostOnlyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostOnlyReason::NotValid => "bank not valid",
            HostOnlyReason::Corrected => "corrected error",
            HostOnlyReason::Ucna => "UCNA (uncorrected, no action required)",
            HostOnlyReason::Deferred => "deferred error",
            HostOnlyReason::UnrecognizedActionOptional => {
                "action-optional error of an unreflected kind"
            }
            HostOnlyReason::NoPhysicalAddress => "action-optional error without a physical address",
            HostOnlyReason::AddressCoarserThanPage { lsb } => {
                return write_coarser_than_page(
                    f,
                    "action-optional",
                    *lsb,
                    "it cannot be confined to one page of one guest; the host must handle the \
                     whole region itself",
                );
            }
        })
    }
}

/// The message for an Intel error whose address LSB names a region larger than a page.
fn write_coarser_than_page(
    f: &mut fmt::Formatter<'_>,
    kind: &str,
    lsb: u8,
    consequence: &str,
) -> fmt::Result {
    write!(
        f,
        "{kind} error in a 2^{lsb}-byte region (MCi_MISC address LSB {lsb} > 12): larger than \
         a 4 KiB page, so {consequence}"
    )
}

/// Why a host error is fatal to the host context: not a guest's to handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FatalReason {
    /// `MCi_STATUS.PCC`: processor context corrupt.
    ProcessorContextCorrupt,
    /// `OVER` with an action-required (or, on AMD, any uncorrected) error: an error was lost.
    Overflow,
    /// Neither `MCG_STATUS.RIPV` nor `EIPV`: nothing can resume.
    NoRestartIp,
    /// An uncorrected error on an Intel host without `SER_P`.
    NoRecoveryArchitecture,
    /// An action-required error vmce cannot attribute: unknown MCACOD, or `AR` without `S`.
    UnrecognizedActionRequired,
    /// An action-required error without a usable physical address.
    ActionRequiredWithoutAddress,
    /// An Intel action-required error whose address LSB (`MCi_MISC` bits 5:0) is above 12:
    /// it names a region larger than a 4 KiB page, so no guest can be told which page to
    /// drop and no guest can recover the context that consumed it.
    ActionRequiredAddressCoarserThanPage {
        /// The lowest valid address bit, as read from `MCi_MISC`.
        lsb: u8,
    },
}

impl fmt::Display for FatalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FatalReason::ProcessorContextCorrupt => "processor context corrupt (PCC)",
            FatalReason::Overflow => "overflow of an action-required error",
            FatalReason::NoRestartIp => "neither RIPV nor EIPV: no context can resume",
            FatalReason::NoRecoveryArchitecture => "uncorrected error on a host without SER_P",
            FatalReason::UnrecognizedActionRequired => "action-required error of an unknown kind",
            FatalReason::ActionRequiredWithoutAddress => {
                "action-required error without a physical address"
            }
            FatalReason::ActionRequiredAddressCoarserThanPage { lsb } => {
                return write_coarser_than_page(
                    f,
                    "action-required",
                    *lsb,
                    "no guest can recover it; the host must treat the consuming context as lost",
                );
            }
        })
    }
}

/// The verdict on one host bank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Disposition {
    /// Reflect into the guest that owns the address.
    Reflect(ReflectClass),
    /// The host logs it; no guest sees it.
    HostOnly(HostOnlyReason),
    /// The host cannot continue the affected context; no guest sees it.
    Fatal(FatalReason),
}

impl Disposition {
    /// Severity rank for choosing among the banks of one event: fatal, then action
    /// required, then action optional, then host-only.
    pub const fn severity(self) -> u8 {
        match self {
            Disposition::Fatal(_) => 3,
            Disposition::Reflect(class) if class.action_required() => 2,
            Disposition::Reflect(_) => 1,
            Disposition::HostOnly(_) => 0,
        }
    }
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disposition::Reflect(class) => write!(f, "reflect: {class}"),
            Disposition::HostOnly(reason) => write!(f, "host only: {reason}"),
            Disposition::Fatal(reason) => write!(f, "fatal: {reason}"),
        }
    }
}

/// Classifies one host bank, given the host's `MCG_STATUS` for the same event.
///
/// `misc` is read on Intel only (address mode and LSB); on AMD it is ignored.
pub fn classify(
    host: &HostCapabilities,
    mcg_status: McgStatus,
    status: MciStatus,
    misc: MciMisc,
) -> Disposition {
    if !status.contains(MciStatus::VAL) {
        return Disposition::HostOnly(HostOnlyReason::NotValid);
    }
    match host.vendor() {
        Vendor::Intel => classify_intel(host.mcg_cap(), mcg_status, status, misc),
        Vendor::Amd => classify_amd(mcg_status, status),
    }
}

fn no_restart_ip(mcg_status: McgStatus) -> bool {
    !mcg_status.intersects(McgStatus::RIPV | McgStatus::EIPV)
}

fn classify_intel(
    cap: McgCap,
    mcg_status: McgStatus,
    status: MciStatus,
    misc: MciMisc,
) -> Disposition {
    if !status.contains(MciStatus::UC) {
        return Disposition::HostOnly(HostOnlyReason::Corrected);
    }
    if status.contains(MciStatus::PCC) {
        return Disposition::Fatal(FatalReason::ProcessorContextCorrupt);
    }
    if !cap.contains(McgCap::SER_P) {
        return Disposition::Fatal(FatalReason::NoRecoveryArchitecture);
    }
    let signalled = status.contains(MciStatus::S);
    let action_required = status.contains(MciStatus::AR);
    if !signalled && !action_required {
        return Disposition::HostOnly(HostOnlyReason::Ucna);
    }
    if action_required && status.contains(MciStatus::OVER) {
        return Disposition::Fatal(FatalReason::Overflow);
    }
    if no_restart_ip(mcg_status) {
        return Disposition::Fatal(FatalReason::NoRestartIp);
    }
    let mcacod = status.mcacod();
    // Here `S` or `AR` is set; without `AR`, `S` is.
    let class = match (action_required, signalled) {
        (false, _) if mcacod.is_memory_scrub() => ReflectClass::SraoMemoryScrub,
        (false, _) if mcacod.is_l3_writeback() => ReflectClass::SraoL3Writeback,
        (false, _) => return Disposition::HostOnly(HostOnlyReason::UnrecognizedActionOptional),
        (true, true) if mcacod.is_data_load() => ReflectClass::SrarDataLoad,
        (true, true) if mcacod.is_instruction_fetch() => ReflectClass::SrarInstructionFetch,
        (true, _) => return Disposition::Fatal(FatalReason::UnrecognizedActionRequired),
    };
    with_intel_address(class, intel_address(status, misc))
}

/// The verdict on an Intel error of a reflected class, given its address (the module docs'
/// second table): reflected when the address lies within one page; otherwise an
/// action-optional error stays with the host and an action-required one is fatal.
fn with_intel_address(class: ReflectClass, address: IntelAddress) -> Disposition {
    match (address, class.action_required()) {
        (IntelAddress::WithinPage, _) => Disposition::Reflect(class),
        (IntelAddress::Missing, false) => Disposition::HostOnly(HostOnlyReason::NoPhysicalAddress),
        (IntelAddress::Missing, true) => {
            Disposition::Fatal(FatalReason::ActionRequiredWithoutAddress)
        }
        (IntelAddress::CoarserThanPage { lsb }, false) => {
            Disposition::HostOnly(HostOnlyReason::AddressCoarserThanPage { lsb })
        }
        (IntelAddress::CoarserThanPage { lsb }, true) => {
            Disposition::Fatal(FatalReason::ActionRequiredAddressCoarserThanPage { lsb })
        }
    }
}

/// What an Intel bank says about its error address.
enum IntelAddress {
    /// A physical address valid down to a bit no higher than 12: within one 4 KiB page.
    WithinPage,
    /// No usable address: `ADDRV` or `MISCV` clear, or an address mode other than physical.
    Missing,
    /// A physical address valid only from bit `lsb` (above 12): a region of several pages.
    CoarserThanPage { lsb: u8 },
}

/// Reads `ADDRV`, `MISCV` and `MCi_MISC`'s address mode and LSB. Intel only: AMD's
/// `MCi_MISC` has neither field.
fn intel_address(status: MciStatus, misc: MciMisc) -> IntelAddress {
    if !status.contains(MciStatus::ADDRV | MciStatus::MISCV)
        || misc.address_mode() != AddressMode::Physical
    {
        return IntelAddress::Missing;
    }
    let lsb = misc.address_lsb();
    if lsb > COARSEST_REFLECTED_ADDRESS_LSB {
        IntelAddress::CoarserThanPage { lsb }
    } else {
        IntelAddress::WithinPage
    }
}

fn classify_amd(mcg_status: McgStatus, status: MciStatus) -> Disposition {
    if !status.contains(MciStatus::UC) {
        return Disposition::HostOnly(if status.contains(MciStatus::DEFERRED) {
            HostOnlyReason::Deferred
        } else {
            HostOnlyReason::Corrected
        });
    }
    if status.contains(MciStatus::PCC) {
        return Disposition::Fatal(FatalReason::ProcessorContextCorrupt);
    }
    if status.contains(MciStatus::OVER) {
        return Disposition::Fatal(FatalReason::Overflow);
    }
    if no_restart_ip(mcg_status) {
        return Disposition::Fatal(FatalReason::NoRestartIp);
    }
    if status.contains(MciStatus::ADDRV) {
        Disposition::Reflect(ReflectClass::AmdUncorrected)
    } else {
        Disposition::Fatal(FatalReason::ActionRequiredWithoutAddress)
    }
}
