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
//! A reflected error also needs `ADDRV`, `MISCV` and a physical address mode in `MISC`
//! (AMD: `ADDRV`; AMD's `MISC` has no address mode). An action-optional error without an
//! address stays with the host; an action-required one is fatal, because the context that
//! consumed the data cannot continue and nobody can be told which page broke.
//!
//! AMD has no `S`/`AR`: an uncorrected error without `PCC` is action-required for the context
//! that consumed it (Linux's rule with SUCCOR); a deferred error is logged by the host.

use crate::host::HostCapabilities;
use crate::profile::Vendor;
use crate::registers::{AddressMode, McgCap, McgStatus, MciMisc, MciStatus};
use core::fmt;

/// A host error class that vmce reflects into the guest owning the memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
        })
    }
}

/// Why a host error is fatal to the host context: not a guest's to handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    let has_physical_address = status.contains(MciStatus::ADDRV | MciStatus::MISCV)
        && misc.address_mode() == AddressMode::Physical;
    if !action_required {
        let class = if mcacod.is_memory_scrub() {
            ReflectClass::SraoMemoryScrub
        } else if mcacod.is_l3_writeback() {
            ReflectClass::SraoL3Writeback
        } else {
            return Disposition::HostOnly(HostOnlyReason::UnrecognizedActionOptional);
        };
        return if has_physical_address {
            Disposition::Reflect(class)
        } else {
            Disposition::HostOnly(HostOnlyReason::NoPhysicalAddress)
        };
    }
    let class = if !signalled {
        return Disposition::Fatal(FatalReason::UnrecognizedActionRequired);
    } else if mcacod.is_data_load() {
        ReflectClass::SrarDataLoad
    } else if mcacod.is_instruction_fetch() {
        ReflectClass::SrarInstructionFetch
    } else {
        return Disposition::Fatal(FatalReason::UnrecognizedActionRequired);
    };
    if has_physical_address {
        Disposition::Reflect(class)
    } else {
        Disposition::Fatal(FatalReason::ActionRequiredWithoutAddress)
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
