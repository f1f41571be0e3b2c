//! A domain's vCPUs and broken frames, and its save and restore.
//!
//! # Background
//! Floor: domain, on delivery, vCPU storage, state and the broken-frame list (records sit
//! above it and build on [`SavedVcpu`] and [`SavedDomain`]). A [`Domain`] is a container: its
//! profile (fixed at creation), its vCPUs and, under one spin lock (the domain lock), its
//! broken-frame list. [`Domain::inject`] runs [`crate::delivery`] under that lock.
//!
//! # Saving and restoring
//! [`Domain::save`] returns a [`DomainSave`]: the domain record and every vCPU's record,
//! read under the domain lock, so no injection lands between two of them (the toolstack
//! keeps the vCPUs paused for the final save, as for any other vCPU state). There is no
//! per-vCPU save outside one: composing a domain from per-vCPU reads taken at different
//! times could save the vCPU with the data before an error arrived and the others after it,
//! which a guest sees as a #MC with no valid bank. [`Domain::restore`] checks the domain
//! record and every vCPU record before changing anything.
//!
//! A vCPU record is a [`CheckedSnapshot`], checked once against the destination's profile
//! when it was decoded or built ([`crate::state`]); the domain checks only what is the
//! domain's: that it was checked for the domain's profile, the ids, the counts, the frames and
//! the list's capacity ([`RestoreError`]).

use crate::address::{GuestFrame, GuestPhysAddr};
use crate::broken::{BROKEN_FRAMES_DEFAULT, BrokenFrames, GUEST_FRAME_LIMIT};
use crate::delivery::{self, GuestCpus, InjectError, InjectionReport, check_guest_addr};
use crate::host::HostCapabilities;
use crate::profile::{Profile, ProfileError};
use crate::reflect::{Access, GuestMce};
use crate::state::{CheckedSnapshot, VcpuId};
use crate::sync::{Lock, LockGuard};
use crate::vcpu::Vcpu;
use core::fmt;

/// Why a domain could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
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
            if vcpu.state().check_caps(profile).is_err() {
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
    /// vCPU of the domain once and was checked for the domain's profile — and only then is
    /// anything changed, under the domain lock: all or nothing. Restored pending #MCs are
    /// re-armed; the saved broken frames join the domain's list (the toolstack keeps them
    /// unmapped, see [`Domain::inject_broken_access`]).
    ///
    /// A stream with a domain record is a whole domain (native V2 writes one record per
    /// vCPU beside it), so every vCPU must have a record: a missing one is
    /// [`RestoreError::MissingVcpu`], not a vCPU silently left as it was. Without a domain
    /// record (Xen's layouts, native V1), as in Xen, vCPUs without a record keep their
    /// state ([`Domain::restore_vcpus`]).
    ///
    /// # Errors
    /// The first [`RestoreError`] found; nothing changes.
    pub fn restore<const M: usize>(
        &self,
        domain: Option<&SavedDomain<M>>,
        vcpus: &[SavedVcpu],
    ) -> Result<(), RestoreError> {
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
                return Err(RestoreError::MissingVcpu { id: missing });
            }
            merge_frames(&mut merged, saved)?;
        }
        *broken = merged;
        for record in vcpus {
            if let Some(vcpu) = self.vcpu(record.id) {
                vcpu.restore(&record.snapshot);
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
    pub fn restore_vcpus(&self, saved: &[SavedVcpu]) -> Result<(), RestoreError> {
        self.restore::<0>(None, saved)
    }

    /// Restores the domain record alone: its broken frames join the domain's list; no vCPU
    /// changes. Prefer [`Domain::restore`] with the stream's vCPU records, which checks that
    /// every vCPU has one.
    ///
    /// # Errors
    /// [`RestoreError::ProfileMismatch`], [`RestoreError::VcpuCountMismatch`],
    /// [`RestoreError::FrameOutOfRange`] or [`RestoreError::BrokenFramesCapacity`]; nothing
    /// changes.
    pub fn restore_domain<const M: usize>(
        &self,
        saved: &SavedDomain<M>,
    ) -> Result<(), RestoreError> {
        let mut broken = self.broken.lock();
        self.check_domain_record(saved)?;
        merge_frames(&mut broken, saved)
    }

    fn check_domain_record<const M: usize>(
        &self,
        saved: &SavedDomain<M>,
    ) -> Result<(), RestoreError> {
        check_saved_domain(saved.profile, saved.vcpus, self.profile, self.vcpu_count())?;
        // `SavedDomain`'s fields are public: a frame the decoder would refuse must not get
        // onto the list, or the domain's own next save would no longer decode.
        if let Some(frame) = saved
            .broken_frames
            .iter()
            .find(|frame| frame.0 >= GUEST_FRAME_LIMIT)
        {
            return Err(RestoreError::FrameOutOfRange { frame: frame.0 });
        }
        Ok(())
    }

    fn check_vcpu_records(&self, saved: &[SavedVcpu]) -> Result<(), RestoreError> {
        let count = self.vcpu_count();
        for (index, record) in saved.iter().enumerate() {
            check_vcpu_id(record.id.0, count)?;
            if saved
                .iter()
                .take(index)
                .any(|earlier| earlier.id == record.id)
            {
                return Err(RestoreError::DuplicateVcpu { id: record.id.0 });
            }
            let checked_for = record.snapshot.profile();
            if checked_for != self.profile {
                return Err(RestoreError::CheckedForOtherProfile {
                    id: record.id.0,
                    checked_for,
                    destination: self.profile,
                });
            }
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
        let mut broken = self.broken.lock();
        let report = delivery::deliver(
            self.profile,
            self.vcpus(),
            &mut broken,
            error,
            consumer,
            guest,
        );
        drop(broken);
        report
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
        Some(self.saved_vcpu(id, self.domain.vcpu(id)?))
    }

    /// Every vCPU's record, in id order.
    pub fn vcpus(&self) -> impl Iterator<Item = SavedVcpu> + '_ {
        (0u32..)
            .map(VcpuId)
            .zip(self.domain.vcpus())
            .map(|(id, vcpu)| self.saved_vcpu(id, vcpu))
    }

    /// `vcpu`'s record: its state passes the check for the domain's profile, which
    /// [`Domain::new`] and every writer of a vCPU keep true.
    fn saved_vcpu(&self, id: VcpuId, vcpu: &Vcpu) -> SavedVcpu {
        SavedVcpu {
            id,
            snapshot: CheckedSnapshot::read_from_domain(self.domain.profile, vcpu.snapshot()),
        }
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
) -> Result<(), RestoreError> {
    list.merge(&saved.broken_frames)
        .map_err(|needed| RestoreError::BrokenFramesCapacity {
            needed,
            capacity: N,
        })
}

/// Checks that `id` names one of `vcpus` vCPUs: the one check of a record's vCPU id, for
/// the decoders and [`Domain::restore`].
///
/// # Errors
/// [`RestoreError::NoSuchVcpu`].
#[inline]
pub(crate) fn check_vcpu_id(id: u32, vcpus: u32) -> Result<VcpuId, RestoreError> {
    if id < vcpus {
        Ok(VcpuId(id))
    } else {
        Err(RestoreError::NoSuchVcpu { id, vcpus })
    }
}

/// Checks a saved domain's profile and vCPU count against the destination's: the one check
/// of both, for the native decoder and [`Domain::restore`].
///
/// # Errors
/// [`RestoreError::ProfileMismatch`], [`RestoreError::VcpuCountMismatch`].
pub(crate) fn check_saved_domain(
    saved: Profile,
    saved_vcpus: u32,
    destination: Profile,
    vcpus: u32,
) -> Result<(), RestoreError> {
    if saved != destination {
        return Err(RestoreError::ProfileMismatch { saved, destination });
    }
    if saved_vcpus != vcpus {
        return Err(RestoreError::VcpuCountMismatch {
            saved: saved_vcpus,
            destination: vcpus,
        });
    }
    Ok(())
}

/// One vCPU's saved state, as written or as read back: its id and a snapshot checked for
/// the domain's profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SavedVcpu {
    /// Which vCPU of the domain.
    pub id: VcpuId,
    /// Its registers and pending flag.
    pub snapshot: CheckedSnapshot,
}

/// A domain's saved state beyond its vCPUs (native V2 only). `N` is the broken-frame
/// capacity of the domain it came from or is decoded for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SavedDomain<const N: usize = BROKEN_FRAMES_DEFAULT> {
    /// The domain's profile, LMCE opt-in included.
    pub profile: Profile,
    /// How many vCPUs the domain has.
    pub vcpus: u32,
    /// The guest frames that broke, for the destination toolstack to keep unmapped.
    pub broken_frames: BrokenFrames<N>,
}

/// Why saved records cannot be restored into this domain. Nothing was restored when one is
/// returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RestoreError {
    /// The record names a vCPU the destination domain does not have.
    NoSuchVcpu {
        /// The vCPU named.
        id: u32,
        /// The destination's vCPU count.
        vcpus: u32,
    },
    /// Two records for the same vCPU in one restore.
    DuplicateVcpu {
        /// The vCPU named twice.
        id: u32,
    },
    /// A vCPU record whose snapshot was checked for another profile than the domain's.
    CheckedForOtherProfile {
        /// The vCPU.
        id: u32,
        /// The profile its snapshot was checked for.
        checked_for: Profile,
        /// The domain's.
        destination: Profile,
    },
    /// The saved domain's profile is not the destination's.
    ProfileMismatch {
        /// The saved profile.
        saved: Profile,
        /// The destination's.
        destination: Profile,
    },
    /// The saved domain's vCPU count is not the destination's.
    VcpuCountMismatch {
        /// The saved count.
        saved: u32,
        /// The destination's.
        destination: u32,
    },
    /// A broken frame beyond the 52-bit physical address space.
    FrameOutOfRange {
        /// The frame number.
        frame: u64,
    },
    /// The restored broken frames and those the domain already holds do not fit its list
    /// together; nothing was restored (a frame known to be bad is never forgotten).
    BrokenFramesCapacity {
        /// Distinct frames the union holds.
        needed: usize,
        /// The domain's capacity (the `N` of `Domain<S, N>`).
        capacity: usize,
    },
    /// A whole-domain restore (one with a domain record) without a record for this vCPU.
    MissingVcpu {
        /// The vCPU that has no record.
        id: u32,
    },
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::NoSuchVcpu { id, vcpus } => {
                write!(f, "record for vCPU {id}, but the domain has {vcpus}")
            }
            RestoreError::DuplicateVcpu { id } => write!(f, "two records for vCPU {id}"),
            RestoreError::CheckedForOtherProfile {
                id,
                checked_for,
                destination,
            } => write!(
                f,
                "the record of vCPU {id} was checked for profile {checked_for}, the domain's is {destination}"
            ),
            RestoreError::ProfileMismatch { saved, destination } => write!(
                f,
                "saved domain has profile {saved}, the destination {destination}"
            ),
            RestoreError::VcpuCountMismatch { saved, destination } => write!(
                f,
                "saved domain has {saved} vCPUs, the destination {destination}"
            ),
            RestoreError::FrameOutOfRange { frame } => {
                write!(
                    f,
                    "broken frame {frame:#x} is beyond the physical address space"
                )
            }
            RestoreError::BrokenFramesCapacity { needed, capacity } => write!(
                f,
                "restoring would list {needed} broken frames, the domain holds {capacity}: nothing restored"
            ),
            RestoreError::MissingVcpu { id } => write!(
                f,
                "the stream has a domain record but no record for vCPU {id}: nothing restored"
            ),
        }
    }
}

impl core::error::Error for RestoreError {}
