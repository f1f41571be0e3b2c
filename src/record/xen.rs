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
//! A loader of release R takes those lengths up to R's own, zero-filling what an older
//! record lacks, and refuses a longer one. Its caps rule tolerates any bank count and
//! `CTL_P` (guests created before 4.2 carried their host's values) and refuses every other
//! bit outside the destination profile. vmce's loader is the 4.10 one unless told otherwise
//! ([`decode`]'s `loader`), and also refuses `MCi_CTL2` reserved bits and `MCG_EXT_CTL`
//! without `LMCE_P` (see [`crate::Profile::check_restored_caps`] for the caps rule).
//!
//! Xen carries no `MCG_STATUS`, bank contents or pending #MC: saving a vCPU that holds any
//! of them in this layout is refused unless the caller accepts the loss
//! ([`super::LossPolicy`]).

use super::{
    LossPolicy, RecordError, SavedVcpu, StateFields, check_snapshot, check_vcpu_id, dropped_fields,
    write_out,
};
use crate::domain::VcpuId;
use crate::profile::Profile;
use crate::registers::{McgCap, McgExtCtl, McgStatus, MciCtl2};
use crate::vcpu::{GuestBank, VcpuMceState, VcpuSnapshot};
use core::fmt;

/// The HVM save typecode of `VMCE_VCPU`.
pub const VMCE_VCPU_TYPECODE: u16 = 18;

/// Bytes in an HVM save descriptor.
pub const DESCRIPTOR_BYTES: usize = 8;

/// The longest `VMCE_VCPU` record (descriptor and Xen 4.10 payload).
pub const MAX_RECORD_BYTES: usize = DESCRIPTOR_BYTES + XenRelease::Xen4_10.payload_len() as usize;

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
    /// 4.2: caps only (8 bytes).
    Xen4_2,
    /// 4.3: adds `MCi_CTL2` of banks 0 and 1 (24 bytes).
    Xen4_3,
    /// 4.10: adds `MCG_EXT_CTL` (32 bytes).
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

    /// Reads a payload; a loader of `loader`'s release takes 8, 24 or 32 bytes up to its own
    /// length and zero-fills the rest.
    ///
    /// # Errors
    /// [`RecordError::BadLength`] for any other length.
    #[inline]
    pub fn from_payload(payload: &[u8], loader: XenRelease) -> Result<XenVmceVcpu, RecordError> {
        Self::from_payload_with_layout(payload, loader).map(|(fields, _)| fields)
    }

    /// [`XenVmceVcpu::from_payload`], also naming the release whose layout the payload has.
    #[inline]
    fn from_payload_with_layout(
        payload: &[u8],
        loader: XenRelease,
    ) -> Result<(XenVmceVcpu, XenRelease), RecordError> {
        let length = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let bad = RecordError::BadLength {
            length,
            accepted: loader.payload_len(),
        };
        let release = XenRelease::from_payload_len(length).ok_or(bad)?;
        if release > loader {
            return Err(bad);
        }
        let mut words = payload
            .chunks_exact(8)
            .map(|chunk| chunk.try_into().map_or(0, u64::from_le_bytes));
        let mut next = || words.next().unwrap_or(0);
        let fields = XenVmceVcpu {
            caps: next(),
            mci_ctl2_bank0: next(),
            mci_ctl2_bank1: next(),
            mcg_ext_ctl: next(),
        };
        Ok((fields, release))
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

    /// The vCPU state these fields restore under `profile`, with vmce's defaults for what
    /// Xen does not carry (`MCG_STATUS` 0, empty banks, nothing pending), checked as
    /// [`super::check_snapshot`] does. `layout` is the release whose layout the fields came
    /// in (or the loader's, if older): `LMCE_P` in a layout before 4.10 is refused, since no
    /// release before 4.10 knew it.
    ///
    /// # Errors
    /// A [`RecordError`] naming the first field that cannot be restored.
    #[inline]
    pub fn restore(
        &self,
        profile: Profile,
        layout: XenRelease,
    ) -> Result<VcpuSnapshot, RecordError> {
        let caps = McgCap::from_bits_retain(self.caps);
        if layout < XenRelease::Xen4_10 && caps.contains(McgCap::LMCE_P) {
            return Err(RecordError::LmceBeforeXen410);
        }
        let snapshot = VcpuSnapshot {
            state: VcpuMceState {
                vendor: profile.vendor(),
                mcg_cap: caps,
                mcg_status: McgStatus::empty(),
                mcg_ext_ctl: McgExtCtl::from_bits_retain(self.mcg_ext_ctl),
                mci_ctl2: [
                    MciCtl2::from_bits_retain(self.mci_ctl2_bank0),
                    MciCtl2::from_bits_retain(self.mci_ctl2_bank1),
                ],
                banks: [GuestBank::EMPTY; 2],
            },
            pending: false,
        };
        check_snapshot(profile, &snapshot)?;
        Ok(snapshot)
    }
}

/// Writes `saved` as a `VMCE_VCPU` record (descriptor and payload) in the layout `release`'s
/// loader accepts.
///
/// # Errors
/// [`RecordError::WouldLose`] when the vCPU holds state the layout cannot carry (`MCi_CTL2`
/// for 4.2, `LMCE_EN` for 4.2 and 4.3, and always `MCG_STATUS`, bank 1 and a pending #MC)
/// under [`LossPolicy::Refuse`]; [`RecordError::LmceBeforeXen410`] for LMCE caps going to a
/// release without LMCE; [`RecordError::VcpuIdTooLarge`]; [`RecordError::BufferTooSmall`].
pub fn encode(
    saved: &SavedVcpu,
    release: XenRelease,
    policy: LossPolicy,
    out: &mut [u8],
) -> Result<super::Encoding, RecordError> {
    let instance =
        u16::try_from(saved.id.0).map_err(|_| RecordError::VcpuIdTooLarge { id: saved.id.0 })?;
    let dropped = dropped_fields(&saved.snapshot, release.carries(), policy)?;
    // Even a lossy save cannot strip LMCE_P: the guest would see a capability vanish and its
    // MCG_EXT_CTL accesses start to fault.
    if release < XenRelease::Xen4_10 && saved.snapshot.state.mcg_cap.contains(McgCap::LMCE_P) {
        return Err(RecordError::LmceBeforeXen410);
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
    Ok(super::Encoding { len, dropped })
}

/// Reads one `VMCE_VCPU` record from the start of `bytes` for a destination domain of
/// `vcpus` vCPUs under `profile`, as a `loader`-release loader would. Returns the restored
/// vCPU and the number of bytes the record took.
///
/// # Errors
/// A [`RecordError`]: truncated, wrong typecode, a length no release wrote or longer than
/// the loader's, a vCPU the domain does not have, or a field the profile cannot restore.
#[inline]
pub fn decode(
    bytes: &[u8],
    profile: Profile,
    vcpus: u32,
    loader: XenRelease,
) -> Result<(SavedVcpu, usize), RecordError> {
    let (descriptor, rest) = HvmDescriptor::parse(bytes)?;
    if descriptor.typecode != VMCE_VCPU_TYPECODE {
        return Err(RecordError::WrongTypecode {
            found: descriptor.typecode,
        });
    }
    let payload = payload_of(&descriptor, rest)?;
    let saved = decode_payload(descriptor.instance, payload, profile, vcpus, loader)?;
    Ok((saved, DESCRIPTOR_BYTES + payload.len()))
}

/// Restores the payload of a `VMCE_VCPU` record for vCPU `instance`.
#[inline]
pub(crate) fn decode_payload(
    instance: u16,
    payload: &[u8],
    profile: Profile,
    vcpus: u32,
    loader: XenRelease,
) -> Result<SavedVcpu, RecordError> {
    let id: VcpuId = check_vcpu_id(u32::from(instance), vcpus)?;
    let (fields, layout) = XenVmceVcpu::from_payload_with_layout(payload, loader)?;
    let snapshot = fields.restore(profile, layout)?;
    Ok(SavedVcpu { id, snapshot })
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
