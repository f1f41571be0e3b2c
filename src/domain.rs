//! A domain's vCPUs, the delivery of a virtual #MC to them, and the domain's save and
//! restore.
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
//! Rules every delivery follows (each has a test in `tests/delivery.rs`):
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
//! - **One delivery is atomic with respect to a save**: [`Domain::inject`] holds the domain's
//!   lock from its first vCPU to its last, and so does a [`DomainSave`], so a save sees a
//!   delivery wholly or not at all. Guest `rdmsr`/`wrmsr` never take that lock.
//!
//! `CMCI_P` is advertised so that guests stop polling, but no CMCI is ever delivered.
//!
//! # Saving and restoring
//! [`Domain::save`] returns a [`DomainSave`]: the domain record and every vCPU's record,
//! read under the domain lock, so no injection lands between two of them (the toolstack
//! keeps the vCPUs paused for the final save, as for any other vCPU state). There is no
//! per-vCPU save outside one: composing a domain from per-vCPU reads taken at different
//! times could save the vCPU with the data before an error arrived and the others after it,
//! which a guest sees as a #MC with no valid bank. [`Domain::restore`] checks the domain
//! record and every vCPU record before changing anything.

use crate::address::{GuestFrame, GuestPhysAddr, MAX_PHYS_ADDR_BITS};
use crate::broken::{BROKEN_FRAMES_DEFAULT, BrokenFrameNote, BrokenFrames, GUEST_FRAME_LIMIT};
use crate::classify::ReflectClass;
use crate::emulate::{RegisterFile, RegisterFileMut};
use crate::host::HostCapabilities;
use crate::profile::{ERROR_BANK, Profile, ProfileError};
use crate::record::{RecordError, SavedDomain, SavedVcpu, check_snapshot};
use crate::reflect::{Access, GuestMce};
use crate::registers::Vendor;
use crate::registers::msr::BankRegister;
use crate::registers::{McgStatus, MciStatus};
use crate::sync::{Lock, LockGuard};
use crate::vcpu::Vcpu;
use core::fmt;

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
/// while the domain's lock is held. `notify` must not call back into the same [`Domain`]'s
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

/// A domain's virtual MCA: its profile, its vCPUs and its broken guest frames.
///
/// `S` is any storage of [`Vcpu`]s (`Vec<Vcpu>`, `Box<[Vcpu]>`, `[Vcpu; N]`, `&[Vcpu]`): vmce
/// allocates nothing. `N` is how many broken guest frames the domain can track (8 bytes
/// each; see [`crate::broken`]).
///
/// One spin lock (the domain lock) serializes deliveries, saves and restores; the
/// broken-frame list lives under it. Guest `rdmsr`/`wrmsr` and [`Vcpu::take_pending`] never
/// take it.
#[derive(Debug)]
pub struct Domain<S, const N: usize = BROKEN_FRAMES_DEFAULT> {
    profile: Profile,
    vcpus: S,
    broken: Lock<BrokenFrames<N>>,
}

impl<S: AsRef<[Vcpu]>> Domain<S> {
    /// A domain of `vcpus` under `profile`, checked against the host, tracking up to
    /// [`BROKEN_FRAMES_DEFAULT`] broken frames (see
    /// [`Domain::with_broken_frames_capacity`] for another bound).
    ///
    /// # Errors
    /// [`DomainError`] when the host cannot back the profile, when there are no vCPUs, or a
    /// vCPU does not belong to the profile.
    pub fn new(profile: Profile, host: &HostCapabilities, vcpus: S) -> Result<Self, DomainError> {
        Self::with_broken_frames_capacity(profile, host, vcpus)
    }
}

impl<S: AsRef<[Vcpu]>, const N: usize> Domain<S, N> {
    /// [`Domain::new`] for a domain that tracks up to `N` broken frames (8 bytes each):
    /// `let domain: Domain<_, 512> = Domain::with_broken_frames_capacity(profile, &host, vcpus)?;`
    ///
    /// # Errors
    /// As [`Domain::new`].
    pub fn with_broken_frames_capacity(
        profile: Profile,
        host: &HostCapabilities,
        vcpus: S,
    ) -> Result<Self, DomainError> {
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
            broken: Lock::new(BrokenFrames::new()),
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

    fn vcpu_count(&self) -> u32 {
        u32::try_from(self.vcpus().len()).unwrap_or(u32::MAX)
    }

    /// Starts a save: the returned [`DomainSave`] holds the domain lock until it is dropped,
    /// so the domain record and every vCPU record read through it form one consistent cut
    /// (no delivery is half in it). Encode the records into memory while holding it and
    /// drop it before any I/O: injections wait for it.
    ///
    /// Do not call [`Domain::inject`], [`Domain::restore`] or another `save` on this domain
    /// from the same CPU while it is held.
    pub fn save(&self) -> DomainSave<'_, S, N> {
        DomainSave {
            domain: self,
            broken: self.broken.lock(),
        }
    }

    /// Restores a whole domain: the domain record (if the stream had one; a stream without
    /// one restores with the destination's own profile and no broken frames) and vCPU
    /// records. Everything is checked first — the saved profile and vCPU count are the
    /// domain's, the broken frames fit beside those it holds, every vCPU record names a
    /// vCPU of the domain once and holds a state the profile allows — and only then is
    /// anything changed, under the domain lock: all or nothing. Restored pending #MCs are
    /// re-armed; the saved broken frames join the domain's list (the toolstack keeps them
    /// unmapped, see [`Domain::inject_broken_access`]).
    ///
    /// A stream with a domain record is a whole domain (native V2 writes one record per
    /// vCPU beside it), so every vCPU must have a record: a missing one is
    /// [`RecordError::MissingVcpu`], not a vCPU silently left as it was. Without a domain
    /// record (Xen's layouts, native V1), as in Xen, vCPUs without a record keep their
    /// state ([`Domain::restore_vcpus`]).
    ///
    /// # Errors
    /// The first [`RecordError`] found; nothing changes.
    pub fn restore<const M: usize>(
        &self,
        domain: Option<&SavedDomain<M>>,
        vcpus: &[SavedVcpu],
    ) -> Result<(), RecordError> {
        let mut broken = self.broken.lock();
        let mut merged = broken.clone();
        self.check_vcpu_records(vcpus)?;
        if let Some(saved) = domain {
            self.check_domain_record(saved)?;
            // The records name distinct vCPUs of the domain (checked above), so only fewer
            // records than vCPUs can leave one out: search for it only then.
            if vcpus.len() < self.vcpus().len()
                && let Some(missing) =
                    (0..self.vcpu_count()).find(|&id| !vcpus.iter().any(|record| record.id.0 == id))
            {
                return Err(RecordError::MissingVcpu { id: missing });
            }
            merge_frames(&mut merged, saved)?;
        }
        *broken = merged;
        for record in vcpus {
            if let Some(vcpu) = self.vcpu(record.id) {
                vcpu.restore_checked(&record.snapshot);
            }
        }
        drop(broken);
        Ok(())
    }

    /// Restores vCPU records alone ([`Domain::restore`] without a domain record): vCPUs
    /// without a record keep their state.
    ///
    /// # Errors
    /// As [`Domain::restore`]; nothing changes.
    pub fn restore_vcpus(&self, saved: &[SavedVcpu]) -> Result<(), RecordError> {
        self.restore::<0>(None, saved)
    }

    /// Restores the domain record alone: its broken frames join the domain's list; no vCPU
    /// changes. Prefer [`Domain::restore`] with the stream's vCPU records, which checks that
    /// every vCPU has one.
    ///
    /// # Errors
    /// [`RecordError::ProfileMismatch`], [`RecordError::VcpuCountMismatch`] or
    /// [`RecordError::BrokenFramesCapacity`]; nothing changes.
    pub fn restore_domain<const M: usize>(
        &self,
        saved: &SavedDomain<M>,
    ) -> Result<(), RecordError> {
        let mut broken = self.broken.lock();
        self.check_domain_record(saved)?;
        merge_frames(&mut broken, saved)
    }

    fn check_domain_record<const M: usize>(
        &self,
        saved: &SavedDomain<M>,
    ) -> Result<(), RecordError> {
        if saved.profile != self.profile {
            return Err(RecordError::ProfileMismatch {
                saved: saved.profile,
                destination: self.profile,
            });
        }
        let count = self.vcpu_count();
        if saved.vcpus != count {
            return Err(RecordError::VcpuCountMismatch {
                saved: saved.vcpus,
                destination: count,
            });
        }
        // `SavedDomain`'s fields are public: a frame the decoder would refuse must not get
        // onto the list, or the domain's own next save would no longer decode.
        if let Some(frame) = saved
            .broken_frames
            .iter()
            .find(|frame| frame.0 >= GUEST_FRAME_LIMIT)
        {
            return Err(RecordError::FrameOutOfRange { frame: frame.0 });
        }
        Ok(())
    }

    fn check_vcpu_records(&self, saved: &[SavedVcpu]) -> Result<(), RecordError> {
        let count = self.vcpu_count();
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
        Ok(())
    }

    /// The guest frames that hold an uncorrectable error (see [`crate::broken`]).
    pub fn broken_frames(&self) -> BrokenFrames<N> {
        self.broken.lock().clone()
    }

    /// Whether `frame` is known broken.
    pub fn is_broken(&self, frame: GuestFrame) -> bool {
        self.broken.lock().contains(frame)
    }

    /// Raises a fresh action-required machine check on `vcpu`, which accessed `addr` in a
    /// frame that is known broken (it broke before a migration, or on another host). The
    /// toolstack calls this from its fault path for an unmapped broken frame.
    ///
    /// # Errors
    /// [`InjectError::AddressOutOfRange`] for an address beyond 52 bits;
    /// [`InjectError::FrameNotBroken`] when `addr`'s frame is not on the list;
    /// [`InjectError::NoSuchVcpu`] when `vcpu` is not in the domain. Nothing changes.
    pub fn inject_broken_access(
        &self,
        addr: GuestPhysAddr,
        access: Access,
        vcpu: VcpuId,
        guest: &mut impl GuestCpus,
    ) -> Result<InjectionReport, InjectError> {
        check_guest_addr(addr)?;
        if !self.is_broken(addr.frame()) {
            return Err(InjectError::FrameNotBroken(addr.frame()));
        }
        let error = GuestMce::broken_frame_access(self.profile.vendor(), access, addr);
        self.inject(&error, Some(vcpu), guest)
    }

    /// Delivers `error` to the domain's vCPUs as the profile and the event require (see the
    /// module docs). `consumer` is the vCPU that was running when the host took the
    /// machine check, if any: it receives an action-required error, and it is the only
    /// candidate for LMCE and for AMD. The error's guest frame goes on the domain's
    /// broken-frame list.
    ///
    /// This holds the domain lock for the whole delivery (and each vCPU's writer lock
    /// briefly). Call it where the CPU cannot already hold one of them: not from inside the
    /// host #MC exception if that CPU may have been interrupted in the middle of a guest MSR
    /// exit or a save (Xen, too, collects in the exception and injects from a deferred
    /// context).
    ///
    /// # Errors
    /// [`InjectError::NoSuchVcpu`] when `consumer` is not in the domain;
    /// [`InjectError::AddressOutOfRange`] when the error's guest address is beyond 52 bits.
    /// Nothing changes.
    pub fn inject(
        &self,
        error: &GuestMce,
        consumer: Option<VcpuId>,
        guest: &mut impl GuestCpus,
    ) -> Result<InjectionReport, InjectError> {
        if let Some(id) = consumer {
            self.vcpu(id).ok_or(InjectError::NoSuchVcpu(id))?;
        }
        check_guest_addr(error.guest_addr)?;
        let mut broken = self.broken.lock();
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
        let mode = self.delivery_mode(&error, consumer);
        let data_vcpu = match mode {
            // Local delivery needs the consumer (delivery_mode checked it).
            DeliveryMode::Local => consumer,
            DeliveryMode::Single => consumer.or_else(|| self.first_up(guest)),
            DeliveryMode::Broadcast => consumer
                .filter(|_| error.class.action_required())
                .or_else(|| self.first_up(guest)),
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
            for (id, vcpu) in (0u32..).map(VcpuId).zip(self.vcpus()) {
                deliver(id, vcpu);
            }
        } else if let Some(id) = data_vcpu
            && let Some(vcpu) = self.vcpu(id)
        {
            deliver(id, vcpu);
        }
        drop(broken);
        Ok(report)
    }

    /// The lowest-numbered vCPU that is up.
    fn first_up(&self, guest: &impl GuestCpus) -> Option<VcpuId> {
        (0..self.vcpu_count())
            .map(VcpuId)
            .find(|&id| guest.is_up(id))
    }

    fn delivery_mode(&self, error: &GuestMce, consumer: Option<VcpuId>) -> DeliveryMode {
        if self.profile.vendor() == Vendor::Amd {
            return DeliveryMode::Single;
        }
        if !error.host_mcg_status.contains(McgStatus::LMCE_S) {
            return DeliveryMode::Broadcast;
        }
        // A lock-free read of the consumer's MCG_EXT_CTL: 0 (not enabled) without LMCE_P.
        let local_enabled = consumer
            .and_then(|id| self.vcpu(id))
            .is_some_and(|vcpu| vcpu.lmce_enabled());
        if local_enabled {
            DeliveryMode::Local
        } else {
            DeliveryMode::Broadcast
        }
    }
}

/// A save in progress: the domain lock is held from [`Domain::save`] until this is dropped,
/// so everything read through it is one consistent cut of the domain (see the module docs).
pub struct DomainSave<'a, S, const N: usize = BROKEN_FRAMES_DEFAULT> {
    domain: &'a Domain<S, N>,
    broken: LockGuard<'a, BrokenFrames<N>>,
}

impl<S: AsRef<[Vcpu]>, const N: usize> DomainSave<'_, S, N> {
    /// The domain record: profile, vCPU count, broken frames.
    pub fn domain(&self) -> SavedDomain<N> {
        SavedDomain {
            profile: self.domain.profile,
            vcpus: self.domain.vcpu_count(),
            broken_frames: self.broken.clone(),
        }
    }

    /// One vCPU's record, or `None` when `id` is not in the domain.
    pub fn vcpu(&self, id: VcpuId) -> Option<SavedVcpu> {
        let snapshot = self.domain.vcpu(id)?.snapshot();
        Some(SavedVcpu { id, snapshot })
    }

    /// Every vCPU's record, in id order.
    pub fn vcpus(&self) -> impl Iterator<Item = SavedVcpu> + '_ {
        (0u32..)
            .zip(self.domain.vcpus())
            .map(|(id, vcpu)| SavedVcpu {
                id: VcpuId(id),
                snapshot: vcpu.snapshot(),
            })
    }
}

impl<S, const N: usize> fmt::Debug for DomainSave<'_, S, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DomainSave")
            .field("profile", &self.domain.profile)
            .field("broken_frames", &*self.broken)
            .finish_non_exhaustive()
    }
}

/// Adds `saved`'s broken frames to `list`, or changes nothing when they do not all fit.
fn merge_frames<const N: usize, const M: usize>(
    list: &mut BrokenFrames<N>,
    saved: &SavedDomain<M>,
) -> Result<(), RecordError> {
    list.merge(&saved.broken_frames)
        .map_err(|needed| RecordError::BrokenFramesCapacity {
            needed,
            capacity: N,
        })
}

fn check_guest_addr(addr: GuestPhysAddr) -> Result<(), InjectError> {
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
/// (`0x00C0`; SPEC §4), which every guest handler treats as action-optional.
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
    use crate::registers::{McgCap, McgExtCtl, MciCtl2, MciMisc};

    /// Records the order of register stores.
    struct StoreLog {
        registers: crate::vcpu::VcpuMceState,
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
        fn set_mci_ctl2(&mut self, slot: usize, value: MciCtl2) {
            self.stores.push("CTL2");
            self.registers.set_mci_ctl2(slot, value);
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

    /// SPEC §4: bank 1 is written as hardware fills it, `STATUS` (with `VAL`) last.
    #[test]
    fn data_bank_is_filled_addr_misc_then_status() {
        let mut log = StoreLog {
            registers: crate::vcpu::VcpuMceState::new(Profile::Intel),
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

    /// SPEC §4: a vCPU without the data gets an empty bank 1, `STATUS` cleared first.
    #[test]
    fn signal_only_bank_is_emptied_status_first() {
        let mut registers = crate::vcpu::VcpuMceState::new(Profile::Intel);
        registers.banks[usize::from(ERROR_BANK)] = crate::vcpu::GuestBank {
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
            [crate::vcpu::GuestBank::EMPTY; GUEST_BANKS as usize]
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
