//! Save and restore records for live migration: Xen's exact HVM layout and vmce's own
//! versioned records.
//!
//! # Background
//! A guest that migrates must keep seeing the same machine-check architecture. Xen saves
//! one `VMCE_VCPU` record per vCPU (typecode 18) that grew over three releases (caps; then
//! the two `MCi_CTL2`; then `MCG_EXT_CTL`), and it saves neither `MCG_STATUS`, nor the bank
//! contents, nor a pending #MC: an error reflected while the guest migrates is lost. vmce
//! reads and writes Xen's layout exactly ([`xen`], [`hvm`]) and adds native records
//! ([`native`]) whose version 2 carries what Xen drops.
//!
//! Two rules govern every format (seeds 001 and 003 of the project's history):
//! - **Source conservative, destination permissive.** Going back, write the oldest form the
//!   destination understands, and refuse ([`RecordError::WouldLose`]) when that form cannot
//!   carry the state, unless the caller asks for a lossy save ([`LossPolicy::Allow`]), which
//!   then reports exactly what it dropped ([`Encoding::dropped`]). Coming forward, read every
//!   older form and fill what it lacks with the documented defaults: `MCG_STATUS` 0, bank 1
//!   empty, no pending #MC, no broken frames, `MCi_CTL2` and `MCG_EXT_CTL` 0.
//! - **Records are untrusted input.** Every decoder checks every field against the
//!   destination's profile and vCPU count and returns a typed [`RecordError`]; restoring is
//!   all or nothing ([`crate::Vcpu::restore`], [`crate::Domain::restore_vcpus`]).
//!
//! Within that, Xen's formats load as Xen loads them, no stricter and no looser:
//! - what a Xen loader of the same release takes, vmce takes: any `VMCE_VCPU` payload
//!   length up to the loader's own, zero-extended ([`xen`]); header, records and END of a
//!   context stream framed as Xen frames them, bytes after END ignored ([`hvm`]);
//! - bits Xen stores without checking (`MCi_CTL2` reserved bits, `MCG_EXT_CTL` beyond
//!   `LMCE_EN`) are dropped, not refused, and the decoder reports them in a [`LoadNotes`];
//! - what Xen refuses, vmce refuses: a longer payload, a header of another length, magic or
//!   version, capability bits outside the profile, `LMCE_P` for a loader before 4.10.
//!
//! vmce's own records stay strict: its writer never produces such bits, so a native record
//! that carries them is refused. The capability rule is shared by every format
//! ([`crate::Profile::check_restored_caps`]): any bank count from 0 to 255 and `CTL_P` are
//! tolerated, every other bit outside the profile is refused.
//!
//! | what | Xen 4.2 | Xen 4.3 | Xen 4.10 | native V1 | native V2 |
//! |---|---|---|---|---|---|
//! | `MCG_CAP` | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | `MCi_CTL2`, banks 0 and 1 | | ✓ | ✓ | ✓ | ✓ |
//! | `MCG_EXT_CTL` | | | ✓ | ✓ | ✓ |
//! | `MCG_STATUS`, bank 1, pending #MC | | | | | ✓ |
//! | profile, LMCE opt-in, broken frames (domain record) | | | | | ✓ |

pub mod hvm;
pub mod native;
pub mod xen;

use crate::broken::{BROKEN_FRAMES_DEFAULT, BrokenFrames};
use crate::domain::VcpuId;
use crate::emulate::writable_mcg_status;
use crate::profile::{CapsError, GUEST_BANKS, Profile};
use crate::registers::Vendor;
use crate::registers::{McgCap, McgExtCtl, MciCtl2};
use crate::vcpu::{GuestBank, VcpuSnapshot};
use core::fmt;

bitflags::bitflags! {
    /// Groups of per-vCPU and per-domain state a record format may or may not carry.
    ///
    /// | flag | state |
    /// |---|---|
    /// | `MCI_CTL2` | `MCi_CTL2` of bank 0 or 1 (Intel `CMCI_EN` and threshold) |
    /// | `MCG_EXT_CTL` | `MCG_EXT_CTL.LMCE_EN` |
    /// | `MCG_STATUS` | `MCG_STATUS` (`MCIP` of a machine check in progress) |
    /// | `BANK1` | bank 1's `STATUS`, `ADDR`, `MISC` |
    /// | `PENDING` | a virtual #MC injected and not yet taken |
    /// | `BANK0` | bank 0, which vmce never fills and no format carries |
    /// | `BROKEN_FRAMES` | the domain's broken guest frames |
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct StateFields: u16 {
        /// `MCi_CTL2` of bank 0 or 1.
        const MCI_CTL2 = 1 << 0;
        /// `MCG_EXT_CTL`.
        const MCG_EXT_CTL = 1 << 1;
        /// `MCG_STATUS`.
        const MCG_STATUS = 1 << 2;
        /// Bank 1's registers.
        const BANK1 = 1 << 3;
        /// The pending #MC.
        const PENDING = 1 << 4;
        /// Bank 0's registers.
        const BANK0 = 1 << 5;
        /// The broken-frame list.
        const BROKEN_FRAMES = 1 << 6;
    }
}

impl StateFields {
    /// The groups of `snapshot` that hold something other than their default.
    #[inline]
    pub fn present_in(snapshot: &VcpuSnapshot) -> StateFields {
        let state = &snapshot.state;
        let [bank0, bank1] = state.banks;
        let mut present = StateFields::empty();
        present.set(
            StateFields::MCI_CTL2,
            state.mci_ctl2.iter().any(|ctl2| !ctl2.is_empty()),
        );
        present.set(StateFields::MCG_EXT_CTL, !state.mcg_ext_ctl.is_empty());
        present.set(StateFields::MCG_STATUS, !state.mcg_status.is_empty());
        present.set(StateFields::BANK1, bank1 != GuestBank::EMPTY);
        present.set(StateFields::PENDING, snapshot.pending);
        present.set(StateFields::BANK0, bank0 != GuestBank::EMPTY);
        present
    }
}

impl fmt::Display for StateFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (StateFields::MCI_CTL2, "MCi_CTL2"),
            (StateFields::MCG_EXT_CTL, "MCG_EXT_CTL"),
            (StateFields::MCG_STATUS, "MCG_STATUS"),
            (StateFields::BANK1, "bank 1"),
            (StateFields::PENDING, "the pending #MC"),
            (StateFields::BANK0, "bank 0"),
            (StateFields::BROKEN_FRAMES, "the broken frames"),
        ];
        let mut first = true;
        for (flag, name) in names {
            if self.contains(flag) {
                if !first {
                    f.write_str(", ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("nothing")?;
        }
        Ok(())
    }
}

/// What an encoder does with state the chosen format cannot carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LossPolicy {
    /// Refuse with [`RecordError::WouldLose`] (the default a toolstack should use).
    Refuse,
    /// Drop it and report what was dropped in [`Encoding::dropped`].
    Allow,
}

/// A record written into the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Encoding {
    /// Bytes written at the start of the buffer.
    pub len: usize,
    /// State the format could not carry and that was dropped ([`LossPolicy::Allow`] only;
    /// always empty under [`LossPolicy::Refuse`]).
    pub dropped: StateFields,
}

/// What a Xen loader dropped from a record it accepted: bits that Xen stores without
/// checking and that no vCPU of the destination profile can hold. [`xen::decode`] and
/// [`hvm::HvmContext::vmce_vcpus`] return one beside every restored vCPU.
///
/// | field | bits dropped |
/// |---|---|
/// | `mci_ctl2_dropped[bank]` | Intel: all but `CMCI_EN` and the threshold (14:0); AMD: all |
/// | `mcg_ext_ctl_dropped` | all but `LMCE_EN`; `LMCE_EN` too when the `MCG_CAP` has no `LMCE_P` |
///
/// A guest under Xen can leave reserved bits in `MC0_CTL2`/`MC1_CTL2`, because Xen stores
/// whatever the guest writes there, so real Xen records carry them. Xen's own `MCG_EXT_CTL`
/// write refuses such bits, so a record that has them was not written by Xen from a running
/// guest; Xen's loader takes it all the same, and so does vmce's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LoadNotes {
    /// Bits dropped from `MC0_CTL2` (index 0) and `MC1_CTL2` (index 1).
    pub mci_ctl2_dropped: [u64; GUEST_BANKS as usize],
    /// Bits dropped from `MCG_EXT_CTL`.
    pub mcg_ext_ctl_dropped: u64,
}

impl LoadNotes {
    /// Nothing dropped.
    pub const NONE: LoadNotes = LoadNotes {
        mci_ctl2_dropped: [0; GUEST_BANKS as usize],
        mcg_ext_ctl_dropped: 0,
    };

    /// Whether nothing was dropped.
    pub const fn is_empty(&self) -> bool {
        let [bank0, bank1] = self.mci_ctl2_dropped;
        bank0 == 0 && bank1 == 0 && self.mcg_ext_ctl_dropped == 0
    }
}

impl fmt::Display for LoadNotes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("nothing dropped");
        }
        f.write_str("dropped")?;
        let mut separator = " ";
        for (bank, bits) in (0u8..).zip(self.mci_ctl2_dropped) {
            if bits != 0 {
                write!(f, "{separator}MC{bank}_CTL2 bits {bits:#x}")?;
                separator = ", ";
            }
        }
        if self.mcg_ext_ctl_dropped != 0 {
            write!(
                f,
                "{separator}MCG_EXT_CTL bits {:#x}",
                self.mcg_ext_ctl_dropped
            )?;
        }
        Ok(())
    }
}

/// One vCPU's saved state, as written or as read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SavedVcpu {
    /// Which vCPU of the domain.
    pub id: VcpuId,
    /// Its registers and pending flag.
    pub snapshot: VcpuSnapshot,
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

/// Why a record cannot be written or read. Nothing was restored when one is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordError {
    /// The bytes end before the record does.
    Truncated {
        /// Bytes the record needs.
        needed: usize,
        /// Bytes there are.
        available: usize,
    },
    /// The output buffer is too small.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
    /// A Xen record of another type where `VMCE_VCPU` (18) was expected.
    WrongTypecode {
        /// The typecode found.
        found: u16,
    },
    /// A Xen `VMCE_VCPU` payload length the loading release does not take: longer than its
    /// own layout, or, for the 4.2 loader (which loads the record at its exact length), any
    /// length but 8. Also an [`hvm::HvmWriter`] payload beyond 4 GiB.
    BadLength {
        /// The length found.
        length: u32,
        /// The loader's own payload length: the longest it takes.
        accepted: u32,
    },
    /// Bytes follow a record (or the END record) that belong to nothing.
    TrailingBytes {
        /// How many.
        extra: usize,
    },
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
    /// A vCPU id the Xen descriptor's 16-bit instance cannot hold.
    VcpuIdTooLarge {
        /// The vCPU id.
        id: u32,
    },
    /// The saved `MCG_CAP` cannot be restored under the destination profile.
    Caps(CapsError),
    /// `MCG_CAP.LMCE_P` read by a Xen loader older than 4.10 (which does not allow it), or
    /// written for such a release.
    LmceBeforeXen410,
    /// Reserved bits set in a saved `MCi_CTL2` (on AMD every bit is reserved). Native records
    /// and [`crate::Vcpu::restore`] refuse them; Xen records have them dropped instead
    /// ([`LoadNotes`]).
    Ctl2Reserved {
        /// Bank 0 or 1.
        bank: u8,
        /// The reserved bits.
        bits: u64,
    },
    /// Bits other than `LMCE_EN` in a saved `MCG_EXT_CTL` (native records; Xen records have
    /// them dropped instead, [`LoadNotes`]).
    ExtCtlReserved {
        /// The reserved bits.
        bits: u64,
    },
    /// `MCG_EXT_CTL.LMCE_EN` saved for a vCPU whose `MCG_CAP` has no `LMCE_P` (native
    /// records; Xen records have it dropped instead, [`LoadNotes`]).
    ExtCtlWithoutLmce,
    /// `MCG_STATUS` bits a guest of these capabilities can never hold.
    McgStatusReserved {
        /// The reserved bits.
        bits: u64,
    },
    /// A saved bank 1 `STATUS` with a model-specific error code, which guests never see.
    MscodInRecord {
        /// The `MSCOD` bits.
        bits: u64,
    },
    /// A saved state made for the other vendor's dialect.
    VendorMismatch {
        /// The destination's profile.
        destination: Profile,
    },
    /// The format cannot carry this state; under [`LossPolicy::Refuse`] nothing was
    /// written.
    WouldLose {
        /// What would be lost.
        fields: StateFields,
    },
    /// The domain's broken-frame list overflowed: a frame broke that no record can carry.
    BrokenFramesOverflowed,
    /// A native record of a kind this loader does not know.
    UnknownKind {
        /// The kind byte.
        kind: u8,
    },
    /// A native record of another kind than the one asked for.
    WrongKind {
        /// The kind expected.
        expected: native::RecordKind,
        /// The kind found.
        found: native::RecordKind,
    },
    /// A native record version this loader does not read (newer than it, or 0).
    UnsupportedVersion {
        /// The record's kind.
        kind: native::RecordKind,
        /// The version found.
        version: u8,
        /// The newest version the loader reads.
        newest: u8,
    },
    /// A native record that cannot be written in the version asked for (the domain record
    /// exists from V2 on).
    NoSuchVersion {
        /// The record's kind.
        kind: native::RecordKind,
        /// The version asked for.
        version: u8,
    },
    /// A native payload that does not decode as its kind and version say.
    MalformedPayload,
    /// A vendor code other than 0 (Intel) or 1 (AMD) in a domain record.
    UnknownVendor {
        /// The code found.
        code: u8,
    },
    /// A domain record with the LMCE opt-in on an AMD profile.
    LmceOnAmd,
    /// A saved bank 0 that is not empty (vmce never fills bank 0).
    Bank0NotEmpty,
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
    /// A broken-frame list longer than the reader's capacity (see
    /// [`native::decode_with_capacity`]).
    TooManyBrokenFrames {
        /// The length found.
        count: u64,
        /// The most the reader holds.
        capacity: usize,
    },
    /// A broken frame beyond the 52-bit physical address space.
    FrameOutOfRange {
        /// The frame number.
        frame: u64,
    },
    /// An HVM context stream that does not start with a header record.
    MissingHeader {
        /// The typecode of the first record.
        found: u16,
    },
    /// An HVM context header whose magic is not Xen's.
    BadMagic {
        /// The magic found.
        found: u32,
    },
    /// An HVM context header record whose length is not the header's 24 bytes (Xen loads
    /// the header at its exact length).
    BadHeaderLength {
        /// The length found.
        length: u32,
    },
    /// An HVM context header whose format version is not the one Xen loads
    /// ([`hvm::HVM_FILE_VERSION`]).
    BadHeaderVersion {
        /// The version found.
        found: u32,
    },
    /// An HVM context stream that runs out before an END record (fewer than a descriptor's
    /// 8 bytes left where the next record should start).
    MissingEnd,
    /// A guest frame listed twice in a domain record's broken frames.
    DuplicateBrokenFrame {
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
    /// A record too large for the native envelope's 16-bit payload length.
    RecordTooLarge {
        /// The payload's size.
        bytes: usize,
    },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Truncated { needed, available } => {
                write!(
                    f,
                    "record truncated: needs {needed} bytes, {available} left"
                )
            }
            RecordError::BufferTooSmall { needed } => {
                write!(f, "output buffer too small: {needed} bytes needed")
            }
            RecordError::WrongTypecode { found } => {
                write!(f, "HVM record typecode {found}, expected VMCE_VCPU (18)")
            }
            RecordError::BadLength { length, accepted } => write!(
                f,
                "VMCE_VCPU payload of {length} bytes: this loader's own layout is {accepted} bytes (Xen 4.3 and later take any shorter length, 4.2 only its own)"
            ),
            RecordError::TrailingBytes { extra } => {
                write!(f, "{extra} bytes after the end of the record")
            }
            RecordError::NoSuchVcpu { id, vcpus } => {
                write!(f, "record for vCPU {id}, but the domain has {vcpus}")
            }
            RecordError::DuplicateVcpu { id } => write!(f, "two records for vCPU {id}"),
            RecordError::VcpuIdTooLarge { id } => {
                write!(
                    f,
                    "vCPU {id} does not fit a Xen descriptor's 16-bit instance"
                )
            }
            RecordError::Caps(error) => error.fmt(f),
            RecordError::LmceBeforeXen410 => {
                f.write_str("MCG_CAP has LMCE_P, which Xen before 4.10 does not allow")
            }
            RecordError::Ctl2Reserved { bank, bits } => {
                write!(f, "saved MC{bank}_CTL2 has reserved bits {bits:#x}")
            }
            RecordError::ExtCtlReserved { bits } => {
                write!(f, "saved MCG_EXT_CTL has reserved bits {bits:#x}")
            }
            RecordError::ExtCtlWithoutLmce => {
                f.write_str("saved MCG_EXT_CTL.LMCE_EN, but the saved MCG_CAP has no LMCE_P")
            }
            RecordError::McgStatusReserved { bits } => {
                write!(f, "saved MCG_STATUS has reserved bits {bits:#x}")
            }
            RecordError::MscodInRecord { bits } => {
                write!(f, "saved bank 1 STATUS carries a host MSCOD ({bits:#x})")
            }
            RecordError::VendorMismatch { destination } => {
                write!(f, "saved state is not for profile {destination}'s vendor")
            }
            RecordError::WouldLose { fields } => write!(
                f,
                "the destination format cannot carry {fields}: save refused (LossPolicy::Allow would drop and report it)"
            ),
            RecordError::BrokenFramesOverflowed => f.write_str(
                "more guest frames broke than the domain's list holds: no record can carry them all",
            ),
            RecordError::UnknownKind { kind } => write!(f, "unknown native record kind {kind}"),
            RecordError::WrongKind { expected, found } => {
                write!(f, "native record of kind {found}, expected {expected}")
            }
            RecordError::UnsupportedVersion {
                kind,
                version,
                newest,
            } => write!(
                f,
                "{kind} record version {version}; this loader reads versions 1 to {newest}"
            ),
            RecordError::NoSuchVersion { kind, version } => {
                write!(f, "there is no {kind} record version {version}")
            }
            RecordError::MalformedPayload => {
                f.write_str("native record payload does not decode as its kind and version")
            }
            RecordError::UnknownVendor { code } => write!(f, "unknown vendor code {code}"),
            RecordError::LmceOnAmd => f.write_str("domain record opts an AMD profile into LMCE"),
            RecordError::Bank0NotEmpty => f.write_str("saved bank 0 is not empty"),
            RecordError::ProfileMismatch { saved, destination } => write!(
                f,
                "saved domain has profile {saved}, the destination {destination}"
            ),
            RecordError::VcpuCountMismatch { saved, destination } => write!(
                f,
                "saved domain has {saved} vCPUs, the destination {destination}"
            ),
            RecordError::TooManyBrokenFrames { count, capacity } => write!(
                f,
                "{count} broken frames in the record; this destination holds at most {capacity}"
            ),
            RecordError::FrameOutOfRange { frame } => {
                write!(
                    f,
                    "broken frame {frame:#x} is beyond the physical address space"
                )
            }
            RecordError::MissingHeader { found } => {
                write!(
                    f,
                    "HVM context starts with typecode {found}, not the header (1)"
                )
            }
            RecordError::BadMagic { found } => {
                write!(
                    f,
                    "HVM context magic {found:#x}, expected {:#x}",
                    hvm::HVM_MAGIC
                )
            }
            RecordError::BadHeaderLength { length } => write!(
                f,
                "HVM header record of {length} bytes, expected {}",
                hvm::HEADER_PAYLOAD_BYTES
            ),
            RecordError::BadHeaderVersion { found } => write!(
                f,
                "HVM context format version {found}, expected {}",
                hvm::HVM_FILE_VERSION
            ),
            RecordError::MissingEnd => f.write_str("HVM context ends without an END record"),
            RecordError::DuplicateBrokenFrame { frame } => {
                write!(f, "broken frame {frame:#x} listed twice")
            }
            RecordError::BrokenFramesCapacity { needed, capacity } => write!(
                f,
                "restoring would list {needed} broken frames, the domain holds {capacity}: nothing restored"
            ),
            RecordError::MissingVcpu { id } => write!(
                f,
                "the stream has a domain record but no record for vCPU {id}: nothing restored"
            ),
            RecordError::RecordTooLarge { bytes } => write!(
                f,
                "record payload of {bytes} bytes exceeds the native envelope's 65535"
            ),
        }
    }
}

impl core::error::Error for RecordError {}

/// Checks a snapshot read from a record against the destination profile: everything a
/// restore would load must be state a vCPU of that profile can hold.
///
/// # Errors
/// The first field that is out of range, as a [`RecordError`].
#[inline]
pub fn check_snapshot(profile: Profile, snapshot: &VcpuSnapshot) -> Result<(), RecordError> {
    let state = &snapshot.state;
    if state.vendor != profile.vendor() {
        return Err(RecordError::VendorMismatch {
            destination: profile,
        });
    }
    profile
        .check_restored_caps(state.mcg_cap)
        .map_err(RecordError::Caps)?;
    for (bank, ctl2) in (0u8..).zip(state.mci_ctl2) {
        let reserved = match state.vendor {
            Vendor::Intel => ctl2.bits() & !MciCtl2::WRITABLE,
            Vendor::Amd => ctl2.bits(),
        };
        if reserved != 0 {
            return Err(RecordError::Ctl2Reserved {
                bank,
                bits: reserved,
            });
        }
    }
    let ext_reserved = state.mcg_ext_ctl.bits() & !McgExtCtl::LMCE_EN.bits();
    if ext_reserved != 0 {
        return Err(RecordError::ExtCtlReserved { bits: ext_reserved });
    }
    if !state.mcg_ext_ctl.is_empty() && !state.mcg_cap.contains(McgCap::LMCE_P) {
        return Err(RecordError::ExtCtlWithoutLmce);
    }
    let status_reserved = state.mcg_status.bits() & !writable_mcg_status(state.mcg_cap).bits();
    if status_reserved != 0 {
        return Err(RecordError::McgStatusReserved {
            bits: status_reserved,
        });
    }
    let [bank0, bank1] = state.banks;
    if bank0 != GuestBank::EMPTY {
        return Err(RecordError::Bank0NotEmpty);
    }
    let mscod = bank1.status.mscod().0;
    if mscod != 0 {
        return Err(RecordError::MscodInRecord {
            bits: u64::from(mscod) << 16,
        });
    }
    Ok(())
}

/// What `snapshot` holds beyond `carried`, or an error when that is not empty under
/// [`LossPolicy::Refuse`].
#[inline]
pub(crate) fn dropped_fields(
    snapshot: &VcpuSnapshot,
    carried: StateFields,
    policy: LossPolicy,
) -> Result<StateFields, RecordError> {
    let lost = StateFields::present_in(snapshot).difference(carried);
    match policy {
        LossPolicy::Refuse if !lost.is_empty() => Err(RecordError::WouldLose { fields: lost }),
        _ => Ok(lost),
    }
}

/// Checks that `id` names one of `vcpus` vCPUs.
#[inline]
pub(crate) fn check_vcpu_id(id: u32, vcpus: u32) -> Result<VcpuId, RecordError> {
    if id < vcpus {
        Ok(VcpuId(id))
    } else {
        Err(RecordError::NoSuchVcpu { id, vcpus })
    }
}

/// Copies `record` to the start of `out`.
#[inline]
pub(crate) fn write_out(out: &mut [u8], record: &[u8]) -> Result<usize, RecordError> {
    let target = out
        .get_mut(..record.len())
        .ok_or(RecordError::BufferTooSmall {
            needed: record.len(),
        })?;
    target.copy_from_slice(record);
    Ok(record.len())
}
