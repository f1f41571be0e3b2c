//! Xen's `VMCE_VCPU` HVM save record (typecode 18), byte for byte.
//!
//! # Background
//! Every HVM save record starts with an 8-byte descriptor, little-endian and unpadded:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | typecode (18 for `VMCE_VCPU`) |
//! | 2 | 2 | instance (the vCPU id) |
//! | 4 | 4 | length of the payload that follows |
//!
//! The `VMCE_VCPU` payload is little-endian `u64`s and grew with Xen releases:
//!
//! | release | length | fields |
//! |---|---|---|
//! | 4.2 | 8 | caps |
//! | 4.3 | 24 | caps, `MC0_CTL2`, `MC1_CTL2` |
//! | 4.10 | 32 | caps, `MC0_CTL2`, `MC1_CTL2`, `MCG_EXT_CTL` |
//!
//! # Loading as Xen loads
//! vmce's loader behaves as Xen's `VMCE_VCPU` loader of the same release (the facts below
//! were read in Xen's sources; the behaviour is reproduced, not the code):
//!
//! | loader | payload lengths taken | `MCG_CAP.LMCE_P` |
//! |---|---|---|
//! | [`XenRelease::Xen4_2`] | exactly 8 | refused |
//! | [`XenRelease::Xen4_3`] (4.3 to 4.9) | 0 to 24 | refused |
//! | [`XenRelease::Xen4_10`] (4.10 on) | 0 to 32 | allowed under [`Profile::IntelLmce`] |
//!
//! - **Length.** Xen 4.2 loads the record at its exact length; from 4.3 on,
//!   `vmce_load_vcpu_ctxt` uses the zero-extending entry load, whose length check
//!   (`_hvm_check_entry`, non-strict) takes any length up to the loader's own structure,
//!   0 and lengths that are not a multiple of 8 included, and whose copy (`_hvm_read_entry`)
//!   zero-fills the rest. A partial word thus keeps its low bytes (little-endian) and has
//!   its high bytes zeroed. A longer payload is refused: [`HvmError::BadLength`].
//! - **Capabilities.** `vmce_restore_vcpu` refuses the bits outside the guest capabilities,
//!   the bank-count field (7:0) and `CTL_P`, and tolerates every bank count. `LMCE_P` joined
//!   the Intel guest capabilities in 4.10, so whether it is refused depends on the loader's
//!   release, not on the record's length: a 4.10 loader takes an 8-byte record carrying
//!   it. vmce applies the same rule against the destination's profile
//!   ([`Profile::check_restored_caps`]); [`HvmError::LmceBeforeXen410`] for a loader
//!   before 4.10.
//! - **Controls stored unchecked.** `vmce_restore_vcpu` stores both `MCi_CTL2` and
//!   `MCG_EXT_CTL` as they come. vmce's registers hold only what a guest can write, so it
//!   drops the other bits and reports them ([`LoadNotes`]): `MCi_CTL2` bits other than
//!   `CMCI_EN` and the threshold (every bit on AMD), `MCG_EXT_CTL` bits other than
//!   `LMCE_EN`, and `LMCE_EN` of a vCPU without `LMCE_P` (where the guest can never read
//!   it).
//! - **Instance.** A vCPU the destination does not have is refused
//!   ([`crate::domain::RestoreError::NoSuchVcpu`]), as `vmce_load_vcpu_ctxt` does.
//!
//! Two Xen behaviours are not reproduced: Xen checks capabilities against the host's
//! vendor and, from 4.10 on, allows `LMCE_P` to every Intel guest, where vmce checks against
//! the domain's profile (so `LMCE_P` needs the LMCE opt-in); and the loaders of 4.3 to 4.9
//! also refuse a short record when fewer than its full 24-byte structure's bytes are left in
//! the stream, a bounds-check quirk fixed in 4.10 that vmce does not imitate.
//!
//! Writing is conservative: [`encode`] writes exactly the layout of the release asked for,
//! and refuses `LMCE_P` for a release before 4.10 even when a loss is allowed.
//!
//! Xen carries no `MCG_STATUS`, bank contents or pending #MC: saving a vCPU that holds any
//! of them in this layout is refused unless the caller accepts the loss
//! ([`LossPolicy`]).
//!
//! Floor: records, on the record leaves (`encode`, `error`, `fields`), the domain (the vCPU
//! id check, [`SavedVcpu`]) and the state (the one snapshot check).

use super::encode::{Encoding, LossPolicy, dropped_fields, write_out};
use super::error::{HvmError, RecordError};
use super::fields::StateFields;
use crate::domain::{SavedVcpu, check_vcpu_id};
use crate::profile::{GUEST_BANKS, Profile};
use crate::registers::{McgCap, McgExtCtl, McgStatus, MciCtl2, Vendor};
use crate::state::{CheckedSnapshot, GuestBank, VcpuMceState, VcpuSnapshot};
use core::fmt;

/// The HVM save typecode of `VMCE_VCPU`.
pub const VMCE_VCPU_TYPECODE: u16 = 18;

/// Bytes in an HVM save descriptor.
pub const DESCRIPTOR_BYTES: usize = 8;

/// The longest `VMCE_VCPU` payload (Xen 4.10's).
pub const MAX_PAYLOAD_BYTES: usize = XenRelease::Xen4_10.payload_len() as usize;

/// The longest `VMCE_VCPU` record (descriptor and Xen 4.10 payload).
pub const MAX_RECORD_BYTES: usize = DESCRIPTOR_BYTES + MAX_PAYLOAD_BYTES;

/// An HVM save record descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HvmDescriptor {
    /// The record type.
    pub typecode: u16,
    /// The instance (vCPU id for per-vCPU records).
    pub instance: u16,
    /// Payload bytes after the descriptor.
    pub length: u32,
}

impl HvmDescriptor {
    /// Reads a descriptor from the start of `bytes`; returns it and the bytes after it.
    ///
    /// # Errors
    /// [`RecordError::Truncated`] when fewer than 8 bytes are left.
    #[inline]
    pub fn parse(bytes: &[u8]) -> Result<(HvmDescriptor, &[u8]), RecordError> {
        let truncated = RecordError::Truncated {
            needed: DESCRIPTOR_BYTES,
            available: bytes.len(),
        };
        let (head, rest) = bytes
            .split_first_chunk::<DESCRIPTOR_BYTES>()
            .ok_or(truncated)?;
        let [t0, t1, i0, i1, l0, l1, l2, l3] = *head;
        Ok((
            HvmDescriptor {
                typecode: u16::from_le_bytes([t0, t1]),
                instance: u16::from_le_bytes([i0, i1]),
                length: u32::from_le_bytes([l0, l1, l2, l3]),
            },
            rest,
        ))
    }

    /// The descriptor's 8 bytes.
    pub fn to_bytes(self) -> [u8; DESCRIPTOR_BYTES] {
        let [t0, t1] = self.typecode.to_le_bytes();
        let [i0, i1] = self.instance.to_le_bytes();
        let [l0, l1, l2, l3] = self.length.to_le_bytes();
        [t0, t1, i0, i1, l0, l1, l2, l3]
    }
}

/// A Xen release whose `VMCE_VCPU` layout vmce reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum XenRelease {
    /// 4.2: caps only (8 bytes); its loader takes exactly 8.
    Xen4_2,
    /// 4.3 (to 4.9, which keep its layout): adds `MCi_CTL2` of banks 0 and 1 (24 bytes);
    /// its loader takes 0 to 24.
    Xen4_3,
    /// 4.10 and later: adds `MCG_EXT_CTL` (32 bytes); its loader takes 0 to 32 and allows
    /// `LMCE_P`.
    Xen4_10,
}

impl XenRelease {
    /// Every release, oldest first.
    pub const ALL: [XenRelease; 3] = [XenRelease::Xen4_2, XenRelease::Xen4_3, XenRelease::Xen4_10];

    /// The payload length the release writes (and the longest its loader takes).
    pub const fn payload_len(self) -> u32 {
        match self {
            XenRelease::Xen4_2 => 8,
            XenRelease::Xen4_3 => 24,
            XenRelease::Xen4_10 => 32,
        }
    }

    /// The release that wrote a payload of `length` bytes.
    pub const fn from_payload_len(length: u32) -> Option<XenRelease> {
        match length {
            8 => Some(XenRelease::Xen4_2),
            24 => Some(XenRelease::Xen4_3),
            32 => Some(XenRelease::Xen4_10),
            _ => None,
        }
    }

    /// Whether the release's loader takes a payload of `length` bytes: 4.2 loads the record
    /// at exactly its own length (8), 4.3 and later zero-extend any length up to their own.
    pub const fn loads_payload_len(self, length: u32) -> bool {
        match self {
            XenRelease::Xen4_2 => length == self.payload_len(),
            XenRelease::Xen4_3 | XenRelease::Xen4_10 => length <= self.payload_len(),
        }
    }

    /// Whether the release's loader allows `MCG_CAP.LMCE_P` (4.10 on), whatever the
    /// record's length.
    pub const fn allows_lmce(self) -> bool {
        matches!(self, XenRelease::Xen4_10)
    }

    /// The state groups the release's record carries (caps always).
    pub const fn carries(self) -> StateFields {
        match self {
            XenRelease::Xen4_2 => StateFields::empty(),
            XenRelease::Xen4_3 => StateFields::MCI_CTL2,
            XenRelease::Xen4_10 => StateFields::MCI_CTL2.union(StateFields::MCG_EXT_CTL),
        }
    }
}

impl fmt::Display for XenRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XenRelease::Xen4_2 => "Xen 4.2",
            XenRelease::Xen4_3 => "Xen 4.3",
            XenRelease::Xen4_10 => "Xen 4.10",
        })
    }
}

/// What a Xen loader dropped from a record it accepted: bits that Xen stores without
/// checking and that no vCPU of the destination profile can hold. [`decode`] and
/// [`super::hvm::HvmContext::vmce_vcpus`] return one beside every restored vCPU.
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

/// The `VMCE_VCPU` payload fields, as plain numbers (absent fields are 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct XenVmceVcpu {
    /// `MCG_CAP`.
    pub caps: u64,
    /// `MC0_CTL2` (4.3 on).
    pub mci_ctl2_bank0: u64,
    /// `MC1_CTL2` (4.3 on).
    pub mci_ctl2_bank1: u64,
    /// `MCG_EXT_CTL` (4.10 on).
    pub mcg_ext_ctl: u64,
}

impl XenVmceVcpu {
    /// The fields of `state` (everything Xen 4.10 holds).
    pub fn from_state(state: &VcpuMceState) -> XenVmceVcpu {
        let [ctl2_0, ctl2_1] = state.mci_ctl2;
        XenVmceVcpu {
            caps: state.mcg_cap.bits(),
            mci_ctl2_bank0: ctl2_0.bits(),
            mci_ctl2_bank1: ctl2_1.bits(),
            mcg_ext_ctl: state.mcg_ext_ctl.bits(),
        }
    }

    /// Reads a payload as a `loader`-release loader does: 4.2 takes exactly 8 bytes, 4.3
    /// and later any length up to their own, zero-filling the rest (a partial word keeps its
    /// low bytes).
    ///
    /// # Errors
    /// [`HvmError::BadLength`] for a length the loader does not take.
    #[inline]
    pub fn from_payload(payload: &[u8], loader: XenRelease) -> Result<XenVmceVcpu, RecordError> {
        let length = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let bad = RecordError::Hvm(HvmError::BadLength {
            length,
            accepted: loader.payload_len(),
        });
        if !loader.loads_payload_len(length) {
            return Err(bad);
        }
        let mut bytes = [0u8; MAX_PAYLOAD_BYTES];
        bytes
            .get_mut(..payload.len())
            .ok_or(bad)?
            .copy_from_slice(payload);
        let mut words = bytes
            .chunks_exact(8)
            .map(|chunk| chunk.try_into().map_or(0, u64::from_le_bytes));
        let mut next = || words.next().unwrap_or(0);
        Ok(XenVmceVcpu {
            caps: next(),
            mci_ctl2_bank0: next(),
            mci_ctl2_bank1: next(),
            mcg_ext_ctl: next(),
        })
    }

    /// The payload as `release` writes it: the first `release.payload_len()` bytes.
    pub fn to_payload(&self, release: XenRelease) -> ([u8; 32], usize) {
        let mut payload = [0u8; 32];
        let words = [
            self.caps,
            self.mci_ctl2_bank0,
            self.mci_ctl2_bank1,
            self.mcg_ext_ctl,
        ];
        for (chunk, word) in payload.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        (payload, release.payload_len() as usize)
    }

    /// The vCPU state these fields restore under `profile` when a `loader`-release loader
    /// reads them, with vmce's defaults for what Xen does not carry (`MCG_STATUS` 0, empty
    /// banks, nothing pending), and the bits it dropped: `MCi_CTL2` and `MCG_EXT_CTL` bits no
    /// vCPU of the profile can hold, which Xen stores unchecked. The result is then checked
    /// ([`VcpuSnapshot::check`]).
    ///
    /// # Errors
    /// [`HvmError::LmceBeforeXen410`] for `LMCE_P` and a loader before 4.10; otherwise a
    /// [`RecordError`] naming the first field that cannot be restored (capability bits
    /// outside the profile).
    #[inline]
    pub fn restore(
        &self,
        profile: Profile,
        loader: XenRelease,
    ) -> Result<(CheckedSnapshot, LoadNotes), RecordError> {
        let caps = McgCap::from_bits_retain(self.caps);
        if !loader.allows_lmce() && caps.contains(McgCap::LMCE_P) {
            return Err(RecordError::Hvm(HvmError::LmceBeforeXen410));
        }
        let ctl2_kept = match profile.vendor() {
            Vendor::Intel => MciCtl2::WRITABLE,
            Vendor::Amd => 0,
        };
        let ext_ctl_kept = if caps.contains(McgCap::LMCE_P) {
            McgExtCtl::LMCE_EN.bits()
        } else {
            0
        };
        let ctl2 = [self.mci_ctl2_bank0, self.mci_ctl2_bank1];
        let notes = LoadNotes {
            mci_ctl2_dropped: ctl2.map(|bits| bits & !ctl2_kept),
            mcg_ext_ctl_dropped: self.mcg_ext_ctl & !ext_ctl_kept,
        };
        let snapshot = VcpuSnapshot {
            state: VcpuMceState {
                vendor: profile.vendor(),
                mcg_cap: caps,
                mcg_status: McgStatus::empty(),
                mcg_ext_ctl: McgExtCtl::from_bits_retain(self.mcg_ext_ctl & ext_ctl_kept),
                mci_ctl2: ctl2.map(|bits| MciCtl2::from_bits_retain(bits & ctl2_kept)),
                banks: [GuestBank::EMPTY; GUEST_BANKS as usize],
            },
            pending: false,
        };
        Ok((snapshot.check(profile)?, notes))
    }
}

/// Writes `saved` as a `VMCE_VCPU` record (descriptor and payload) in the layout `release`'s
/// loader accepts.
///
/// # Errors
/// [`RecordError::WouldLose`] when the vCPU holds state the layout cannot carry (`MCi_CTL2`
/// for 4.2, `LMCE_EN` for 4.2 and 4.3, and always `MCG_STATUS`, bank 1 and a pending #MC)
/// under [`LossPolicy::Refuse`]; [`HvmError::LmceBeforeXen410`] for LMCE caps going to a
/// release without LMCE; [`HvmError::VcpuIdTooLarge`]; [`RecordError::BufferTooSmall`].
pub fn encode(
    saved: &SavedVcpu,
    release: XenRelease,
    policy: LossPolicy,
    out: &mut [u8],
) -> Result<Encoding, RecordError> {
    let instance = u16::try_from(saved.id.0)
        .map_err(|_| RecordError::Hvm(HvmError::VcpuIdTooLarge { id: saved.id.0 }))?;
    let dropped = dropped_fields(&saved.snapshot, release.carries(), policy)?;
    // Even a lossy save cannot strip LMCE_P: the guest would see a capability vanish and its
    // MCG_EXT_CTL accesses start to fault.
    if !release.allows_lmce() && saved.snapshot.state.mcg_cap.contains(McgCap::LMCE_P) {
        return Err(RecordError::Hvm(HvmError::LmceBeforeXen410));
    }
    let (payload, len) = XenVmceVcpu::from_state(&saved.snapshot.state).to_payload(release);
    let descriptor = HvmDescriptor {
        typecode: VMCE_VCPU_TYPECODE,
        instance,
        length: release.payload_len(),
    };
    let mut record = [0u8; MAX_RECORD_BYTES];
    let (head, body) = record.split_at_mut(DESCRIPTOR_BYTES);
    head.copy_from_slice(&descriptor.to_bytes());
    body.copy_from_slice(&payload);
    let total = DESCRIPTOR_BYTES + len;
    let len = write_out(out, record.get(..total).unwrap_or(&[]))?;
    Ok(Encoding { len, dropped })
}

/// Reads one `VMCE_VCPU` record from the start of `bytes` for a destination domain of
/// `vcpus` vCPUs under `profile`, as a `loader`-release loader would (see the module
/// documentation). Returns the restored vCPU, the number of bytes the record took, and what
/// was dropped from it ([`LoadNotes`], empty for a record of architectural values).
///
/// # Errors
/// A [`RecordError`]: truncated, wrong typecode, a vCPU the domain does not have, a length
/// the loader does not take, `LMCE_P` for a loader before 4.10, or capability bits outside
/// the profile.
#[inline]
pub fn decode(
    bytes: &[u8],
    profile: Profile,
    vcpus: u32,
    loader: XenRelease,
) -> Result<(SavedVcpu, usize, LoadNotes), RecordError> {
    let (descriptor, rest) = HvmDescriptor::parse(bytes)?;
    if descriptor.typecode != VMCE_VCPU_TYPECODE {
        return Err(RecordError::Hvm(HvmError::WrongTypecode {
            found: descriptor.typecode,
        }));
    }
    let payload = payload_of(&descriptor, rest)?;
    let (saved, notes) = decode_payload(descriptor.instance, payload, profile, vcpus, loader)?;
    Ok((saved, DESCRIPTOR_BYTES + payload.len(), notes))
}

/// Restores the payload of a `VMCE_VCPU` record for vCPU `instance`.
#[inline]
pub(crate) fn decode_payload(
    instance: u16,
    payload: &[u8],
    profile: Profile,
    vcpus: u32,
    loader: XenRelease,
) -> Result<(SavedVcpu, LoadNotes), RecordError> {
    let id = check_vcpu_id(u32::from(instance), vcpus)?;
    let fields = XenVmceVcpu::from_payload(payload, loader)?;
    let (snapshot, notes) = fields.restore(profile, loader)?;
    Ok((SavedVcpu { id, snapshot }, notes))
}

/// The `descriptor.length` bytes of `rest`.
#[inline]
pub(crate) fn payload_of<'a>(
    descriptor: &HvmDescriptor,
    rest: &'a [u8],
) -> Result<&'a [u8], RecordError> {
    let length = usize::try_from(descriptor.length).unwrap_or(usize::MAX);
    rest.get(..length).ok_or(RecordError::Truncated {
        needed: DESCRIPTOR_BYTES.saturating_add(length),
        available: DESCRIPTOR_BYTES.saturating_add(rest.len()),
    })
}
