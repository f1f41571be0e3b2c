//! A domain's vCPUs and the delivery of a virtual #MC to them.
//!
//! # Background
//! On Intel the hardware signals a machine check to every CPU, and guest handlers (Linux's
//! monarch election, Windows') rendezvous all CPUs before acting: when Xen injected into
//! vCPU 0 only, Windows 8 guests rebooted on every error. AMD signals only the CPU that hit
//! the error, and broadcasting to AMD guests crashed them (QEMU's 2024 fix). So:
//!
//! | profile / event | who takes #MC | bank 1 and `MCG_STATUS` |
//! |---|---|---|
//! | Intel, no LMCE | every vCPU ([`DeliveryMode::Broadcast`]) | the data vCPU (the consumer of an SRAR, else vCPU 0) gets the error and the host's `MCG_STATUS` without `LMCE_S`; the others get `MCIP|RIPV` and untouched banks |
//! | Intel, host `LMCE_S` and the consumer's `MCG_EXT_CTL.LMCE_EN` | the consumer ([`DeliveryMode::Local`]) | the error and the host's `MCG_STATUS` with `LMCE_S` |
//! | AMD | the consumer, else vCPU 0 ([`DeliveryMode::Single`]) | the error and the host's `MCG_STATUS` |
//!
//! There is no "is the guest ready" check: vmce always injects. A vCPU that cannot take a
//! #MC — `MCG_STATUS.MCIP` still set, or `CR4.MCE` clear — would architecturally shut down
//! (triple fault). vmce reports that per vCPU ([`VcpuOutcome::Shutdown`]) and leaves the
//! decision to the caller (Xen crashes the domain; KVM and QEMU reset the VM); it never drops
//! it. A bank still holding a valid error gets `OVER` in the new status.
//!
//! `CMCI_P` is advertised so that guests stop polling, but no CMCI is ever delivered.

use crate::address::{GuestFrame, GuestPhysAddr};
use crate::broken::{BrokenFrameNote, BrokenFrames};
use crate::emulate::{RdmsrOutcome, RegisterFile, RegisterFileMut};
use crate::host::HostCapabilities;
use crate::profile::{ERROR_BANK, Profile, ProfileError, Vendor};
use crate::record::{RecordError, SavedDomain, SavedVcpu, check_snapshot};
use crate::reflect::{Access, GuestMce};
use crate::registers::msr::{BankRegister, IA32_MCG_EXT_CTL};
use crate::registers::{McgExtCtl, McgStatus};
use crate::vcpu::Vcpu;
use core::fmt;
use spin::mutex::SpinMutex;

/// A vCPU's index in its domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VcpuId(pub u32);

impl fmt::Display for VcpuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vCPU {}", self.0)
    }
}

/// How a virtual #MC was delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryMode {
    /// Intel: every vCPU.
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
pub enum VcpuOutcome {
    /// A #MC is now pending on the vCPU.
    Delivered {
        /// The vCPU's bank 1 holds the error (it is the data vCPU).
        with_data: bool,
        /// Bank 1 still held a valid error, so `OVER` was set.
        overflow: bool,
    },
    /// The vCPU cannot take a #MC; the caller must shut it (the domain) down. Its state
    /// was not changed.
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
            } => f.write_str("#MC pending, MCIP|RIPV only"),
            VcpuOutcome::Shutdown(reason) => write!(f, "cannot take #MC ({reason}): shut down"),
        }
    }
}

/// The guest CPU state vmce cannot see, and the hook to kick vCPUs, implemented by the
/// hypervisor.
pub trait GuestCpus {
    /// The vCPU's current `CR4.MCE`.
    fn machine_check_enabled(&self, vcpu: VcpuId) -> bool;

    /// Called once per vCPU the injection reached, after its state is updated: kick a
    /// running vCPU so it takes the pending #MC on its next VM entry, or shut down.
    fn notify(&mut self, vcpu: VcpuId, outcome: VcpuOutcome) {
        let _ = (vcpu, outcome);
    }
}

/// The summary of one injection; per-vCPU outcomes go to [`GuestCpus::notify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InjectionReport {
    /// How it was delivered.
    pub mode: DeliveryMode,
    /// The vCPU whose bank 1 carries the error.
    pub data_vcpu: VcpuId,
    /// vCPUs on which a #MC is now pending.
    pub delivered: u32,
    /// vCPUs that must shut down.
    pub shutdown: u32,
    /// The first vCPU that must shut down, and why.
    pub first_shutdown: Option<(VcpuId, ShutdownReason)>,
    /// The data vCPU's bank 1 held a valid error, so `OVER` was set.
    pub overflow: bool,
    /// What happened to the error's guest frame on the domain's broken-frame list.
    pub broken_frame: BrokenFrameNote,
}

impl InjectionReport {
    /// Whether the caller must shut the domain down (some vCPU could not take the #MC).
    pub const fn needs_shutdown(&self) -> bool {
        self.shutdown != 0
    }
}

/// Why a domain could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DomainError {
    /// The host cannot back the profile.
    Profile(ProfileError),
    /// A domain needs at least one vCPU.
    NoVcpus,
    /// More vCPUs than a [`VcpuId`] can name.
    TooManyVcpus,
    /// A vCPU was made for another vendor or with capabilities the profile does not allow.
    VcpuMismatch(VcpuId),
}

impl fmt::Display for DomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainError::Profile(error) => error.fmt(f),
            DomainError::NoVcpus => f.write_str("a domain needs at least one vCPU"),
            DomainError::TooManyVcpus => f.write_str("more vCPUs than a 32-bit id can name"),
            DomainError::VcpuMismatch(vcpu) => {
                write!(f, "{vcpu} does not match the domain's profile")
            }
        }
    }
}

impl core::error::Error for DomainError {}

/// Why an injection was refused (nothing was changed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InjectError {
    /// The consumer named is not a vCPU of the domain.
    NoSuchVcpu(VcpuId),
    /// [`Domain::inject_broken_access`] was called for a frame that is not known broken.
    FrameNotBroken(GuestFrame),
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
        }
    }
}

impl core::error::Error for InjectError {}

/// A domain's virtual MCA: its profile, its vCPUs and its broken guest frames.
///
/// `S` is any storage of [`Vcpu`]s (`Vec<Vcpu>`, `Box<[Vcpu]>`, `[Vcpu; N]`, `&[Vcpu]`): vmce
/// allocates nothing.
#[derive(Debug)]
pub struct Domain<S> {
    profile: Profile,
    vcpus: S,
    broken: SpinMutex<BrokenFrames>,
}

impl<S: AsRef<[Vcpu]>> Domain<S> {
    /// A domain of `vcpus` under `profile`, checked against the host.
    ///
    /// # Errors
    /// [`DomainError`] when the host cannot back the profile, when there are no vCPUs, or a
    /// vCPU does not belong to the profile.
    pub fn new(profile: Profile, host: &HostCapabilities, vcpus: S) -> Result<Self, DomainError> {
        profile.check_host(host).map_err(DomainError::Profile)?;
        let list = vcpus.as_ref();
        if list.is_empty() {
            return Err(DomainError::NoVcpus);
        }
        if u32::try_from(list.len()).is_err() {
            return Err(DomainError::TooManyVcpus);
        }
        for (id, vcpu) in (0u32..).zip(list) {
            let state = vcpu.state();
            if state.vendor != profile.vendor()
                || profile.check_restored_caps(state.mcg_cap).is_err()
            {
                return Err(DomainError::VcpuMismatch(VcpuId(id)));
            }
        }
        Ok(Self {
            profile,
            vcpus,
            broken: SpinMutex::new(BrokenFrames::new()),
        })
    }

    /// The domain's profile.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The vCPUs.
    pub fn vcpus(&self) -> &[Vcpu] {
        self.vcpus.as_ref()
    }

    /// One vCPU.
    pub fn vcpu(&self, id: VcpuId) -> Option<&Vcpu> {
        self.vcpus().get(usize::try_from(id.0).ok()?)
    }

    /// One vCPU's state for a save record, or `None` when `id` is not in the domain.
    pub fn save_vcpu(&self, id: VcpuId) -> Option<SavedVcpu> {
        let snapshot = self.vcpu(id)?.snapshot();
        Some(SavedVcpu { id, snapshot })
    }

    /// The domain's own state for a save record (native V2's domain record).
    pub fn save_domain(&self) -> SavedDomain {
        SavedDomain {
            profile: self.profile,
            vcpus: u32::try_from(self.vcpus().len()).unwrap_or(u32::MAX),
            broken_frames: self.broken_frames(),
        }
    }

    /// Restores vCPUs from records: every record is checked (vCPU in the domain, no vCPU
    /// twice, state valid for the profile) before any vCPU changes, so a failed restore
    /// leaves every vCPU as it was. Restored pending #MCs are re-armed.
    ///
    /// # Errors
    /// The first [`RecordError`] found.
    pub fn restore_vcpus(&self, saved: &[SavedVcpu]) -> Result<(), RecordError> {
        let count = u32::try_from(self.vcpus().len()).unwrap_or(u32::MAX);
        for (index, record) in saved.iter().enumerate() {
            if record.id.0 >= count {
                return Err(RecordError::NoSuchVcpu {
                    id: record.id.0,
                    vcpus: count,
                });
            }
            if saved
                .iter()
                .take(index)
                .any(|earlier| earlier.id == record.id)
            {
                return Err(RecordError::DuplicateVcpu { id: record.id.0 });
            }
            check_snapshot(self.profile, &record.snapshot)?;
        }
        for record in saved {
            if let Some(vcpu) = self.vcpu(record.id) {
                // Checked above; cannot fail.
                vcpu.restore(self.profile, &record.snapshot)?;
            }
        }
        Ok(())
    }

    /// Restores the domain record: the saved profile and vCPU count must be the domain's;
    /// the saved broken frames join the domain's list (the toolstack keeps them unmapped, see
    /// [`Domain::inject_broken_access`]).
    ///
    /// # Errors
    /// [`RecordError::ProfileMismatch`] or [`RecordError::VcpuCountMismatch`]; nothing
    /// changes.
    pub fn restore_domain(&self, saved: &SavedDomain) -> Result<(), RecordError> {
        if saved.profile != self.profile {
            return Err(RecordError::ProfileMismatch {
                saved: saved.profile,
                destination: self.profile,
            });
        }
        let count = u32::try_from(self.vcpus().len()).unwrap_or(u32::MAX);
        if saved.vcpus != count {
            return Err(RecordError::VcpuCountMismatch {
                saved: saved.vcpus,
                destination: count,
            });
        }
        self.restore_broken_frames(&saved.broken_frames);
        Ok(())
    }

    /// The guest frames that hold an uncorrectable error (see [`crate::broken`]).
    pub fn broken_frames(&self) -> BrokenFrames {
        self.broken.lock().clone()
    }

    /// Whether `frame` is known broken.
    pub fn is_broken(&self, frame: GuestFrame) -> bool {
        self.broken.lock().contains(frame)
    }

    /// Adds frames that broke elsewhere (a restored domain record) to the domain's list.
    pub fn restore_broken_frames(&self, frames: &BrokenFrames) {
        self.broken.lock().merge(frames);
    }

    /// Raises a fresh action-required machine check on `vcpu`, which accessed `addr` in a
    /// frame that is known broken (it broke before a migration, or on another host). The
    /// toolstack calls this from its fault path for an unmapped broken frame.
    ///
    /// # Errors
    /// [`InjectError::FrameNotBroken`] when `addr`'s frame is not on the list;
    /// [`InjectError::NoSuchVcpu`] when `vcpu` is not in the domain. Nothing changes.
    pub fn inject_broken_access(
        &self,
        addr: GuestPhysAddr,
        access: Access,
        vcpu: VcpuId,
        guest: &mut impl GuestCpus,
    ) -> Result<InjectionReport, InjectError> {
        if !self.is_broken(addr.frame()) {
            return Err(InjectError::FrameNotBroken(addr.frame()));
        }
        let error = GuestMce::broken_frame_access(self.profile.vendor(), access, addr);
        self.inject(&error, Some(vcpu), guest)
    }

    /// Delivers `error` to the domain's vCPUs as the profile and the event require (see the
    /// module table). `consumer` is the vCPU that was running when the host took the
    /// machine check, if any: it receives an action-required error, and it is the only
    /// candidate for LMCE and for AMD. The error's guest frame goes on the domain's
    /// broken-frame list.
    ///
    /// This takes each vCPU's lock (and the broken-frame list's) briefly. Call it where the
    /// CPU cannot already hold one of them: not from inside the host #MC exception if that
    /// CPU may have been interrupted in the middle of a guest MSR exit or a save (Xen, too,
    /// collects in the exception and injects from a deferred context).
    ///
    /// # Errors
    /// [`InjectError::NoSuchVcpu`] when `consumer` is not in the domain; nothing changes.
    pub fn inject(
        &self,
        error: &GuestMce,
        consumer: Option<VcpuId>,
        guest: &mut impl GuestCpus,
    ) -> Result<InjectionReport, InjectError> {
        if let Some(id) = consumer {
            self.vcpu(id).ok_or(InjectError::NoSuchVcpu(id))?;
        }
        let mode = self.delivery_mode(error, consumer);
        let data_vcpu = match (mode, consumer) {
            (DeliveryMode::Broadcast, Some(id)) if error.class.action_required() => id,
            (DeliveryMode::Broadcast, _) => VcpuId(0),
            (_, consumer) => consumer.unwrap_or(VcpuId(0)),
        };
        let broken_frame = self.broken.lock().insert(error.guest_addr.frame());
        let mut report = InjectionReport {
            mode,
            data_vcpu,
            delivered: 0,
            shutdown: 0,
            first_shutdown: None,
            overflow: false,
            broken_frame,
        };
        let data_mcg_status = data_mcg_status(error.host_mcg_status, mode);
        let mut deliver = |id: VcpuId, vcpu: &Vcpu| {
            let with_data = id == data_vcpu;
            let outcome = if guest.machine_check_enabled(id) {
                vcpu.update(|state| {
                    if with_data {
                        deliver_with_data(state, error, data_mcg_status)
                    } else {
                        deliver_signal_only(state)
                    }
                })
            } else {
                VcpuOutcome::Shutdown(ShutdownReason::MachineCheckDisabled)
            };
            report.record(id, outcome);
            guest.notify(id, outcome);
        };
        if mode == DeliveryMode::Broadcast {
            for (id, vcpu) in (0u32..).map(VcpuId).zip(self.vcpus()) {
                deliver(id, vcpu);
            }
        } else if let Some(vcpu) = self.vcpu(data_vcpu) {
            // Always present: a consumer was checked above, and vCPU 0 exists in every domain.
            deliver(data_vcpu, vcpu);
        }
        Ok(report)
    }

    fn delivery_mode(&self, error: &GuestMce, consumer: Option<VcpuId>) -> DeliveryMode {
        if self.profile.vendor() == Vendor::Amd {
            return DeliveryMode::Single;
        }
        if !error.host_mcg_status.contains(McgStatus::LMCE_S) {
            return DeliveryMode::Broadcast;
        }
        // Lock-free reads: MCG_EXT_CTL #GPs (and so is not enabled) without LMCE_P.
        let local_enabled = consumer.and_then(|id| self.vcpu(id)).is_some_and(|vcpu| {
            matches!(vcpu.rdmsr(IA32_MCG_EXT_CTL), RdmsrOutcome::Handled(ext_ctl)
                if McgExtCtl::from_bits_retain(ext_ctl).contains(McgExtCtl::LMCE_EN))
        });
        if local_enabled {
            DeliveryMode::Local
        } else {
            DeliveryMode::Broadcast
        }
    }
}

impl InjectionReport {
    fn record(&mut self, id: VcpuId, outcome: VcpuOutcome) {
        match outcome {
            VcpuOutcome::Delivered {
                with_data,
                overflow,
            } => {
                self.delivered = self.delivered.saturating_add(1);
                if with_data {
                    self.overflow = overflow;
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
    let overflow = state.log_status(bank, error.guest_status());
    state.set_bank(bank, BankRegister::Addr, error.guest_addr.0);
    state.set_bank(bank, BankRegister::Misc, error.misc.0);
    state.set_mcg_status(mcg_status);
    (
        VcpuOutcome::Delivered {
            with_data: true,
            overflow,
        },
        true,
    )
}

fn deliver_signal_only(state: &mut impl RegisterFileMut) -> (VcpuOutcome, bool) {
    if in_progress(state) {
        return (
            VcpuOutcome::Shutdown(ShutdownReason::MachineCheckInProgress),
            false,
        );
    }
    state.set_mcg_status(McgStatus::MCIP | McgStatus::RIPV);
    (
        VcpuOutcome::Delivered {
            with_data: false,
            overflow: false,
        },
        true,
    )
}
