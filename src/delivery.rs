//! Delivery of a virtual #MC to a domain's vCPUs: who takes it, what each one's bank 1 and
//! `MCG_STATUS` get, and the report of what happened.
//!
//! # Background
//! On Intel the hardware signals a machine check to every CPU, and guest handlers (Linux's
//! monarch election, Windows') rendezvous all CPUs before acting: when Xen injected into
//! vCPU 0 only, Windows 8 guests rebooted on every error. AMD signals only the CPU that hit
//! the error, and broadcasting to AMD guests crashed them (QEMU's 2024 fix). So:
//!
//! | profile / event | who takes #MC | bank 1 and `MCG_STATUS` |
//! |---|---|---|
//! | Intel, no LMCE | every vCPU that is up ([`DeliveryMode::Broadcast`]) | the data vCPU (the consumer of an SRAR, else the lowest-numbered vCPU that is up) gets the error and the host's `MCG_STATUS` without `LMCE_S`; every other vCPU gets `MCIP\|RIPV` and bank 1 zeroed |
//! | Intel, host `LMCE_S` and the consumer's `MCG_EXT_CTL.LMCE_EN` | the consumer ([`DeliveryMode::Local`]) | the error and the host's `MCG_STATUS` with `LMCE_S` |
//! | AMD | the consumer, else the lowest-numbered vCPU that is up ([`DeliveryMode::Single`]) | the error and the host's `MCG_STATUS` |
//!
//! Rules every delivery follows (docs/behaviour.md §4, "What the guest sees"; each has a
//! test in `tests/delivery/delivery.rs`):
//! - **vCPUs that are not up are skipped.** A vCPU the guest never started, or took offline,
//!   takes no #MC and is reported [`VcpuOutcome::Skipped`]; the hypervisor says which are up
//!   ([`GuestCpus::is_up`]). Before Xen skipped them, every error crashed a guest that ran
//!   fewer vCPUs than it was given, because such a vCPU has `CR4.MCE` clear.
//! - **No "is the guest ready" check**: a vCPU that is up but cannot take a #MC —
//!   `MCG_STATUS.MCIP` still set, or `CR4.MCE` clear — would architecturally shut down
//!   (triple fault). vmce reports that per vCPU ([`VcpuOutcome::Shutdown`]) and leaves the
//!   decision to the caller (Xen crashes the domain; KVM and QEMU reset the VM); it never
//!   drops it. A bank still holding a valid error gets `OVER` in the new status.
//! - **An action-required error no vCPU of the domain consumed is reflected as
//!   action-optional** ([`DowngradeReason`]): `AR` cleared, `MCACOD` the memory-scrub code
//!   `0x00C0`, `MCG_STATUS = MCIP|RIPV`, delivered like an SRAO. As an SRAR with `EIPV` on
//!   some vCPU that did not touch the page, a Linux guest panics (kernel mode or idle) or
//!   kills an unrelated task; as action-optional it offlines the page and runs on (QEMU
//!   shapes a SIGBUS `BUS_MCEERR_AO` the same way).
//! - **Banks are filled as hardware fills them**: `ADDR` and `MISC` first, `STATUS` (with
//!   `VAL`) last, released after them, so a guest polling bank 1 never reads the new
//!   `STATUS` beside the previous error's `ADDR`/`MISC`.
//! - **One delivery is atomic with respect to a save**: [`crate::Domain::inject`] holds the domain's
//!   lock from its first vCPU to its last, and so does a [`crate::domain::DomainSave`], so a save sees a
//!   delivery wholly or not at all. Guest `rdmsr`/`wrmsr` never take that lock.
//!
//! `CMCI_P` is advertised so that guests stop polling, but no CMCI is ever delivered.
//!
//!
//! Floor: delivery, on vCPU storage, state, emulation (the register-file traits), the host
//! error's classification and translation ([`crate::reflect`], [`crate::classify`]) and the
//! broken-frame list. [`crate::domain`] runs it under the domain lock; nothing here knows of
//! save and restore.

use crate::address::{GuestFrame, GuestPhysAddr, MAX_PHYS_ADDR_BITS};
use crate::broken::{BrokenFrameNote, BrokenFrames};
use crate::classify::ReflectClass;
use crate::emulate::{RegisterFile, RegisterFileMut};
use crate::profile::{ERROR_BANK, Profile};
use crate::reflect::GuestMce;
use crate::registers::msr::BankRegister;
use crate::registers::{McgStatus, MciStatus, Vendor};
use crate::state::VcpuId;
use crate::vcpu::Vcpu;
use core::fmt;

/// How a virtual #MC was delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeliveryMode {
    /// Intel: every vCPU that is up.
    Broadcast,
    /// Intel LMCE: one vCPU, `LMCE_S` set.
    Local,
    /// AMD: one vCPU.
    Single,
}

impl fmt::Display for DeliveryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeliveryMode::Broadcast => "broadcast to every vCPU",
            DeliveryMode::Local => "local (LMCE) to one vCPU",
            DeliveryMode::Single => "single vCPU",
        })
    }
}

/// Why a vCPU cannot take a #MC: architecturally a shutdown (triple fault).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ShutdownReason {
    /// `MCG_STATUS.MCIP` is still set from the previous machine check.
    MachineCheckInProgress,
    /// The guest has `CR4.MCE` clear.
    MachineCheckDisabled,
}

impl fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ShutdownReason::MachineCheckInProgress => "MCIP still set",
            ShutdownReason::MachineCheckDisabled => "CR4.MCE clear",
        })
    }
}

/// What one vCPU got from an injection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VcpuOutcome {
    /// A #MC is now pending on the vCPU.
    Delivered {
        /// The vCPU's bank 1 holds the error (it is the data vCPU); otherwise its bank 1 was
        /// zeroed and its `MCG_STATUS` is `MCIP|RIPV`.
        with_data: bool,
        /// Bank 1 still held a valid error, so `OVER` was set.
        overflow: bool,
    },
    /// The vCPU is not up (never started, or offline: [`GuestCpus::is_up`]): it takes no
    /// #MC and its state was not changed. Not a shutdown.
    Skipped,
    /// The vCPU is up but cannot take a #MC; the caller must shut it (the domain) down. Its
    /// state was not changed.
    Shutdown(ShutdownReason),
}

impl fmt::Display for VcpuOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VcpuOutcome::Delivered {
                with_data: true,
                overflow: false,
            } => f.write_str("#MC pending, bank 1 holds the error"),
            VcpuOutcome::Delivered {
                with_data: true,
                overflow: true,
            } => f.write_str(
                "#MC pending, bank 1 holds the error (OVER: the previous one was still there)",
            ),
            VcpuOutcome::Delivered {
                with_data: false, ..
            } => f.write_str("#MC pending, MCIP|RIPV only, bank 1 empty"),
            VcpuOutcome::Skipped => f.write_str("not up: skipped"),
            VcpuOutcome::Shutdown(reason) => write!(f, "cannot take #MC ({reason}): shut down"),
        }
    }
}

/// The guest CPU state vmce cannot see, and the hook to kick vCPUs, implemented by the
/// hypervisor.
///
/// # Invariants
/// Answers describe the vCPU at the time of the call and must not block: they are asked
/// while the domain's lock is held. `notify` must not call back into the same [`crate::Domain`]'s
/// `inject`, `save` or `restore` (that would wait for the lock it is called under).
pub trait GuestCpus {
    /// Whether the guest has brought the vCPU up: started (INIT-SIPI-SIPI or the boot
    /// vCPU) and not taken offline. A vCPU that is not up is skipped by every delivery.
    /// Xen answers this with its "vCPU initialised" flag, KVM with the vCPU's MP state.
    fn is_up(&self, vcpu: VcpuId) -> bool;

    /// The vCPU's current `CR4.MCE` (asked only for vCPUs that are up).
    fn machine_check_enabled(&self, vcpu: VcpuId) -> bool;

    /// Called once per vCPU the injection considered, after its state is updated: kick a
    /// running vCPU so it takes the pending #MC on its next VM entry, or shut down.
    fn notify(&mut self, vcpu: VcpuId, outcome: VcpuOutcome) {
        let _ = (vcpu, outcome);
    }
}

/// Why an action-required error was reflected as action-optional.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DowngradeReason {
    /// No vCPU of the domain was named as the consumer: the hypervisor, another domain or a
    /// host context touched the poison.
    NoConsumer,
    /// The consumer named is not up, so it cannot have consumed the data.
    ConsumerNotUp(VcpuId),
}

impl fmt::Display for DowngradeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DowngradeReason::NoConsumer => f.write_str(
                "action-required error consumed by no vCPU of the domain: reflected as action-optional",
            ),
            DowngradeReason::ConsumerNotUp(vcpu) => write!(
                f,
                "action-required error named {vcpu} as consumer, which is not up: reflected as action-optional"
            ),
        }
    }
}

/// The summary of one injection; per-vCPU outcomes go to [`GuestCpus::notify`].
///
/// Exhaustive, with public fields, unlike the enums of this module: reference models (the
/// crate's own tests among them) build the report they expect field by field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InjectionReport {
    /// How it was delivered.
    pub mode: DeliveryMode,
    /// The vCPU whose bank 1 carries the error; `None` when no vCPU that should have had it
    /// is up (every one was skipped: the error is on the broken-frame list only).
    pub data_vcpu: Option<VcpuId>,
    /// vCPUs on which a #MC is now pending.
    pub delivered: u32,
    /// vCPUs that were not up and were skipped.
    pub skipped: u32,
    /// vCPUs that must shut down.
    pub shutdown: u32,
    /// The first vCPU that must shut down, and why.
    pub first_shutdown: Option<(VcpuId, ShutdownReason)>,
    /// The data vCPU's bank 1 held a valid error, so `OVER` was set.
    pub overflow: bool,
    /// Set when an action-required error was delivered as action-optional, and why.
    pub downgraded: Option<DowngradeReason>,
    /// What happened to the error's guest frame on the domain's broken-frame list.
    pub broken_frame: BrokenFrameNote,
}

impl fmt::Display for InjectionReport {
    /// One line: mode, data vCPU, counts, and the downgrade if any.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, data on ", self.mode)?;
        match self.data_vcpu {
            Some(vcpu) => write!(f, "{vcpu}")?,
            None => f.write_str("no vCPU (none up)")?,
        }
        write!(
            f,
            ", {} delivered, {} skipped, {} to shut down",
            self.delivered, self.skipped, self.shutdown
        )?;
        if self.overflow {
            f.write_str(", OVER")?;
        }
        if let Some(reason) = self.downgraded {
            write!(f, "; {reason}")?;
        }
        Ok(())
    }
}

impl InjectionReport {
    /// Whether the caller must shut the domain down (some vCPU that is up could not take
    /// the #MC). Skipped vCPUs never count.
    pub const fn needs_shutdown(&self) -> bool {
        self.shutdown != 0
    }
}

/// Why an injection was refused (nothing was changed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InjectError {
    /// The consumer named is not a vCPU of the domain.
    NoSuchVcpu(VcpuId),
    /// [`crate::Domain::inject_broken_access`] was called for a frame that is not known broken.
    FrameNotBroken(GuestFrame),
    /// The guest address is beyond the 52-bit physical address space: no guest can hold it,
    /// and no save record could carry its frame.
    AddressOutOfRange(GuestPhysAddr),
}

impl fmt::Display for InjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InjectError::NoSuchVcpu(vcpu) => write!(f, "{vcpu} is not in the domain"),
            InjectError::FrameNotBroken(frame) => {
                write!(
                    f,
                    "guest frame {:#x} is not on the broken-frame list",
                    frame.0
                )
            }
            InjectError::AddressOutOfRange(addr) => write!(
                f,
                "{addr} is beyond the {MAX_PHYS_ADDR_BITS}-bit physical address space"
            ),
        }
    }
}

impl core::error::Error for InjectError {}

/// Delivers `error` to `vcpus` (the domain's, under `profile`) as the profile and the event
/// require (see the module docs), and puts its guest frame on `broken`. The caller holds the
/// domain lock, under which `broken` lives.
///
/// # Errors
/// [`InjectError::NoSuchVcpu`] when `consumer` is not one of `vcpus`;
/// [`InjectError::AddressOutOfRange`] when the error's guest address is beyond 52 bits.
/// Nothing changes.
pub(crate) fn deliver<const N: usize>(
    profile: Profile,
    vcpus: &[Vcpu],
    broken: &mut BrokenFrames<N>,
    error: &GuestMce,
    consumer: Option<VcpuId>,
    guest: &mut impl GuestCpus,
) -> Result<InjectionReport, InjectError> {
    let delivery = Delivery { profile, vcpus };
    if let Some(id) = consumer {
        delivery.vcpu(id).ok_or(InjectError::NoSuchVcpu(id))?;
    }
    check_guest_addr(error.guest_addr)?;
    // A consumer that is not up cannot have consumed anything.
    let (consumer, downgraded) = match consumer {
        Some(id) if !guest.is_up(id) => (None, Some(DowngradeReason::ConsumerNotUp(id))),
        Some(id) => (Some(id), None),
        None => (None, Some(DowngradeReason::NoConsumer)),
    };
    let downgraded = downgraded.filter(|_| error.class.intel_action_required());
    let error = if downgraded.is_some() {
        error.as_action_optional()
    } else {
        *error
    };
    let mode = delivery.mode(&error, consumer);
    let data_vcpu = match mode {
        // Local delivery needs the consumer (`mode` checked it).
        DeliveryMode::Local => consumer,
        DeliveryMode::Single => consumer.or_else(|| delivery.first_up(guest)),
        DeliveryMode::Broadcast => consumer
            .filter(|_| error.class.action_required())
            .or_else(|| delivery.first_up(guest)),
    };
    let broken_frame = broken.insert(error.guest_addr.frame());
    let mut report = InjectionReport {
        mode,
        data_vcpu,
        delivered: 0,
        skipped: 0,
        shutdown: 0,
        first_shutdown: None,
        overflow: false,
        downgraded,
        broken_frame,
    };
    let data_mcg_status = data_mcg_status(error.host_mcg_status, mode);
    let mut deliver = |id: VcpuId, vcpu: &Vcpu| {
        let with_data = Some(id) == data_vcpu;
        let outcome = if !guest.is_up(id) {
            VcpuOutcome::Skipped
        } else if guest.machine_check_enabled(id) {
            vcpu.update(|state| {
                if with_data {
                    deliver_with_data(state, &error, data_mcg_status)
                } else {
                    deliver_signal_only(state)
                }
            })
        } else {
            VcpuOutcome::Shutdown(ShutdownReason::MachineCheckDisabled)
        };
        report.record(id, with_data, outcome);
        guest.notify(id, outcome);
    };
    if mode == DeliveryMode::Broadcast {
        for (id, vcpu) in (0u32..).map(VcpuId).zip(vcpus) {
            deliver(id, vcpu);
        }
    } else if let Some(id) = data_vcpu
        && let Some(vcpu) = delivery.vcpu(id)
    {
        deliver(id, vcpu);
    }
    Ok(report)
}

/// A domain's profile and vCPUs, as a delivery sees them.
struct Delivery<'a> {
    profile: Profile,
    vcpus: &'a [Vcpu],
}

impl Delivery<'_> {
    fn vcpu(&self, id: VcpuId) -> Option<&Vcpu> {
        self.vcpus.get(usize::try_from(id.0).ok()?)
    }

    /// The lowest-numbered vCPU that is up.
    fn first_up(&self, guest: &impl GuestCpus) -> Option<VcpuId> {
        (0u32..)
            .map(VcpuId)
            .take(self.vcpus.len())
            .find(|&id| guest.is_up(id))
    }

    fn mode(&self, error: &GuestMce, consumer: Option<VcpuId>) -> DeliveryMode {
        if self.profile.vendor() == Vendor::Amd {
            return DeliveryMode::Single;
        }
        if !error.host_mcg_status.contains(McgStatus::LMCE_S) {
            return DeliveryMode::Broadcast;
        }
        // The consumer's opt-in, read from its register file (one lock-free load of
        // MCG_EXT_CTL, 0 without LMCE_P).
        let local_enabled = consumer
            .and_then(|id| self.vcpu(id))
            .is_some_and(Vcpu::lmce_enabled);
        if local_enabled {
            DeliveryMode::Local
        } else {
            DeliveryMode::Broadcast
        }
    }
}

/// Refuses a guest address beyond the 52-bit physical address space.
pub(crate) fn check_guest_addr(addr: GuestPhysAddr) -> Result<(), InjectError> {
    if addr.0 >> MAX_PHYS_ADDR_BITS != 0 {
        return Err(InjectError::AddressOutOfRange(addr));
    }
    Ok(())
}

impl InjectionReport {
    fn record(&mut self, id: VcpuId, with_data: bool, outcome: VcpuOutcome) {
        match outcome {
            VcpuOutcome::Delivered { overflow, .. } => {
                self.delivered = self.delivered.saturating_add(1);
                if with_data {
                    self.overflow = overflow;
                }
            }
            VcpuOutcome::Skipped => {
                self.skipped = self.skipped.saturating_add(1);
                if with_data {
                    self.data_vcpu = None;
                }
            }
            VcpuOutcome::Shutdown(reason) => {
                self.shutdown = self.shutdown.saturating_add(1);
                if self.first_shutdown.is_none() {
                    self.first_shutdown = Some((id, reason));
                }
            }
        }
    }
}

impl ReflectClass {
    /// Intel's action-required classes (the `AR` bit): the ones that become action-optional
    /// when no vCPU of the domain consumed the data.
    const fn intel_action_required(self) -> bool {
        matches!(
            self,
            ReflectClass::SrarDataLoad | ReflectClass::SrarInstructionFetch
        )
    }
}

/// The memory-scrub `MCACOD` a downgraded error carries: a memory-controller scrub error
/// (`0x00C0`; docs/behaviour.md §4, delivery row 3), which every guest handler treats as
/// action-optional.
const SCRUB_MCACOD: u64 = 0x00C0;

impl GuestMce {
    /// The error as action-optional: `AR` cleared, `MCACOD` the memory-scrub code,
    /// `MCG_STATUS = MCIP|RIPV` (no `EIPV`); the rest of `STATUS`, the address and `MISC`
    /// unchanged.
    fn as_action_optional(&self) -> GuestMce {
        let status = (self.host_status.bits() & !MciStatus::MCACOD_MASK & !MciStatus::AR.bits())
            | SCRUB_MCACOD;
        GuestMce {
            class: ReflectClass::SraoMemoryScrub,
            host_mcg_status: McgStatus::MCIP | McgStatus::RIPV,
            host_status: MciStatus::from_bits_retain(status),
            ..*self
        }
    }
}

/// The data vCPU's `MCG_STATUS`: the host's architectural bits, `MCIP` always, `LMCE_S`
/// only for a local delivery.
fn data_mcg_status(host: McgStatus, mode: DeliveryMode) -> McgStatus {
    let status = McgStatus::from_bits_truncate(host.bits()) | McgStatus::MCIP;
    if mode == DeliveryMode::Local {
        status | McgStatus::LMCE_S
    } else {
        status.difference(McgStatus::LMCE_S)
    }
}

fn in_progress(state: &impl RegisterFile) -> bool {
    state.mcg_status().contains(McgStatus::MCIP)
}

/// Fills bank 1 as hardware does — `ADDR`, `MISC`, then `STATUS` (released after them) —
/// and then `MCG_STATUS`.
fn deliver_with_data(
    state: &mut impl RegisterFileMut,
    error: &GuestMce,
    mcg_status: McgStatus,
) -> (VcpuOutcome, bool) {
    if in_progress(state) {
        return (
            VcpuOutcome::Shutdown(ShutdownReason::MachineCheckInProgress),
            false,
        );
    }
    let bank = usize::from(ERROR_BANK);
    state.set_bank(bank, BankRegister::Addr, error.guest_addr.0);
    state.set_bank(bank, BankRegister::Misc, error.misc.0);
    let overflow = state.log_status(bank, error.guest_status());
    state.set_mcg_status(mcg_status);
    (
        VcpuOutcome::Delivered {
            with_data: true,
            overflow,
        },
        true,
    )
}

/// `MCIP|RIPV` and an empty bank 1 (`STATUS` first, so no valid `STATUS` is ever left
/// beside a cleared `ADDR`).
fn deliver_signal_only(state: &mut impl RegisterFileMut) -> (VcpuOutcome, bool) {
    if in_progress(state) {
        return (
            VcpuOutcome::Shutdown(ShutdownReason::MachineCheckInProgress),
            false,
        );
    }
    let bank = usize::from(ERROR_BANK);
    state.set_bank(bank, BankRegister::Status, 0);
    state.set_bank(bank, BankRegister::Addr, 0);
    state.set_bank(bank, BankRegister::Misc, 0);
    state.set_mcg_status(McgStatus::MCIP | McgStatus::RIPV);
    (
        VcpuOutcome::Delivered {
            with_data: false,
            overflow: false,
        },
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::HostPhysAddr;
    use crate::profile::GUEST_BANKS;
    use crate::profile::Profile;
    use crate::registers::{McgCap, McgExtCtl, MciCtl2, MciMisc};
    use crate::state::{GuestBank, VcpuMceState};

    /// Records the order of register stores.
    struct StoreLog {
        registers: VcpuMceState,
        stores: std::vec::Vec<&'static str>,
    }

    impl RegisterFile for StoreLog {
        fn vendor(&self) -> Vendor {
            self.registers.vendor
        }
        fn mcg_cap(&self) -> McgCap {
            self.registers.mcg_cap
        }
        fn mcg_status(&self) -> McgStatus {
            self.registers.mcg_status
        }
        fn mcg_ext_ctl(&self) -> McgExtCtl {
            self.registers.mcg_ext_ctl
        }
        fn mci_ctl2(&self, slot: usize) -> MciCtl2 {
            self.registers.mci_ctl2(slot)
        }
        fn bank(&self, slot: usize, register: BankRegister) -> u64 {
            self.registers.bank(slot, register)
        }
    }

    impl RegisterFileMut for StoreLog {
        fn set_mcg_status(&mut self, value: McgStatus) {
            self.stores.push("MCG_STATUS");
            self.registers.set_mcg_status(value);
        }
        fn set_mcg_ext_ctl(&mut self, value: McgExtCtl) {
            self.stores.push("MCG_EXT_CTL");
            self.registers.set_mcg_ext_ctl(value);
        }
        fn set_bank(&mut self, slot: usize, register: BankRegister, value: u64) {
            self.stores.push(match register {
                BankRegister::Status => "STATUS",
                BankRegister::Addr => "ADDR",
                BankRegister::Misc => "MISC",
                BankRegister::Ctl => "CTL",
            });
            self.registers.set_bank(slot, register, value);
        }
        fn log_status(&mut self, slot: usize, status: MciStatus) -> bool {
            self.stores.push("STATUS");
            self.registers.log_status(slot, status)
        }
    }

    fn srao() -> GuestMce {
        GuestMce {
            class: ReflectClass::SraoMemoryScrub,
            host_mcg_status: McgStatus::MCIP | McgStatus::RIPV,
            host_status: MciStatus::from_bits_retain(0xBD00_0000_0000_00C0),
            host_addr: HostPhysAddr(0x0412_3040),
            guest_addr: GuestPhysAddr(0x0012_3040),
            misc: MciMisc(0x86),
        }
    }

    /// docs/behaviour.md §4, delivery row 5: bank 1 is written as hardware fills it,
    /// `STATUS` (with `VAL`) last.
    #[test]
    fn data_bank_is_filled_addr_misc_then_status() {
        let mut log = StoreLog {
            registers: VcpuMceState::new(Profile::Intel),
            stores: std::vec::Vec::new(),
        };
        let (outcome, pend) = deliver_with_data(&mut log, &srao(), McgStatus::MCIP);
        assert!(pend);
        assert!(matches!(
            outcome,
            VcpuOutcome::Delivered {
                with_data: true,
                ..
            }
        ));
        assert_eq!(log.stores, ["ADDR", "MISC", "STATUS", "MCG_STATUS"]);
    }

    /// docs/behaviour.md §4, delivery row 2: a vCPU without the data gets an empty bank 1,
    /// `STATUS` cleared first.
    #[test]
    fn signal_only_bank_is_emptied_status_first() {
        let mut registers = VcpuMceState::new(Profile::Intel);
        registers.banks[usize::from(ERROR_BANK)] = GuestBank {
            status: MciStatus::from_bits_retain(0xBD00_0000_0000_00C0),
            addr: 0x1000,
            misc: 0x86,
        };
        let mut log = StoreLog {
            registers,
            stores: std::vec::Vec::new(),
        };
        deliver_signal_only(&mut log);
        assert_eq!(log.stores, ["STATUS", "ADDR", "MISC", "MCG_STATUS"]);
        assert_eq!(
            log.registers.banks,
            [GuestBank::EMPTY; GUEST_BANKS as usize]
        );
        assert_eq!(log.registers.mcg_status, McgStatus::MCIP | McgStatus::RIPV);
    }

    #[test]
    fn downgrade_keeps_everything_but_ar_mcacod_and_eipv() {
        let srar = GuestMce {
            class: ReflectClass::SrarDataLoad,
            host_mcg_status: McgStatus::MCIP | McgStatus::RIPV | McgStatus::EIPV,
            host_status: MciStatus::from_bits_retain(0xBD80_1234_0000_0134),
            ..srao()
        };
        let ao = srar.as_action_optional();
        assert_eq!(ao.class, ReflectClass::SraoMemoryScrub);
        assert_eq!(ao.host_status.bits(), 0xBD00_1234_0000_00C0);
        assert_eq!(ao.host_mcg_status, McgStatus::MCIP | McgStatus::RIPV);
        assert_eq!((ao.guest_addr, ao.misc), (srar.guest_addr, srar.misc));
    }
}
