//! vmce's own versioned records (postcard payloads).
//!
//! # Background
//! Every native record is a 4-byte envelope and a payload:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | kind: 1 = vCPU ([`RecordKind::Vcpu`]), 2 = domain ([`RecordKind::Domain`]) |
//! | 1 | 1 | format version (1, 2) |
//! | 2 | 2 | payload length, little-endian |
//! | 4 | length | the payload struct for that kind and version, postcard-encoded |
//!
//! Payload structs are frozen once released: [`VcpuRecordV1`] holds what Xen 4.10 holds;
//! [`VcpuRecordV2`] adds `MCG_STATUS`, bank 1 and the pending #MC; [`DomainRecordV2`] (there
//! is no domain record before V2) holds the profile, the LMCE opt-in, the vCPU count and the
//! broken guest frames. A new field means a new version and a new struct, never an edit.
//!
//! Loading is strict: an unknown kind, a version newer than the loader (or 0), a payload that
//! does not decode exactly (trailing bytes, non-canonical encodings) and every field out of
//! range are typed errors. A V2 loader reads V1 records with the defaults of
//! [`super`]'s module documentation; a stream without a domain record restores with the
//! destination's own profile and no broken frames. Writing V1 (backward migration) refuses
//! whenever V1 cannot carry the state.
//!
//! Floor: records, on the record leaves, the domain (the vCPU id and domain checks,
//! [`SavedVcpu`], [`SavedDomain`]), the state (the one snapshot check) and the broken-frame
//! list.

pub use super::wire::RecordKind;

use super::encode::{Encoding, LossPolicy, dropped_fields, write_out};
use super::error::{NativeError, RecordError};
use super::fields::StateFields;
use crate::address::GuestFrame;
use crate::broken::{BROKEN_FRAMES_DEFAULT, BrokenFrameNote, BrokenFrames, GUEST_FRAME_LIMIT};
use crate::domain::{RestoreError, SavedDomain, SavedVcpu, check_saved_domain, check_vcpu_id};
use crate::profile::Profile;
use crate::registers::{McgCap, McgExtCtl, McgStatus, MciCtl2, MciStatus, Vendor};
use crate::state::{GuestBank, VcpuMceState, VcpuSnapshot};
use core::fmt;
use serde::{Deserialize, Serialize};

/// Bytes of the envelope ahead of the payload.
pub const HEADER_BYTES: usize = 4;

/// Longest postcard encoding of a `u64` / `u32` (LEB128).
const U64_MAX_BYTES: usize = 10;
const U32_MAX_BYTES: usize = 5;

/// The longest vCPU record of any version.
pub const MAX_VCPU_RECORD_BYTES: usize = HEADER_BYTES + U32_MAX_BYTES + 8 * U64_MAX_BYTES + 1;

/// The longest domain record of any version carrying at most `frames` broken frames (its
/// payload must also fit the envelope's 16-bit length, which at the 52-bit frame limit is
/// about 8,000 frames: [`encode_domain`] refuses a longer one with
/// [`NativeError::RecordTooLarge`]).
pub const fn max_domain_record_bytes(frames: usize) -> usize {
    HEADER_BYTES + 2 + U32_MAX_BYTES + U64_MAX_BYTES + frames * U64_MAX_BYTES
}

/// The longest domain record of a domain with the default broken-frame capacity
/// ([`BROKEN_FRAMES_DEFAULT`]).
pub const MAX_DOMAIN_RECORD_BYTES: usize = max_domain_record_bytes(BROKEN_FRAMES_DEFAULT);

/// A native format version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NativeVersion {
    /// What Xen 4.10 holds.
    V1 = 1,
    /// Adds the in-flight machine check and the domain record.
    V2 = 2,
}

impl NativeVersion {
    /// Every version, oldest first.
    pub const ALL: [NativeVersion; 2] = [NativeVersion::V1, NativeVersion::V2];
    /// The newest version this build writes and reads.
    pub const NEWEST: NativeVersion = NativeVersion::V2;

    /// The state groups a vCPU record of this version carries (caps always).
    pub const fn carries(self) -> StateFields {
        let v1 = StateFields::MCI_CTL2.union(StateFields::MCG_EXT_CTL);
        match self {
            NativeVersion::V1 => v1,
            NativeVersion::V2 => v1
                .union(StateFields::MCG_STATUS)
                .union(StateFields::BANK1)
                .union(StateFields::PENDING),
        }
    }
}

impl fmt::Display for NativeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "native V{}", *self as u8)
    }
}

/// vCPU record, version 1: what Xen 4.10's `VMCE_VCPU` holds. Frozen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VcpuRecordV1 {
    /// The vCPU's id in its domain.
    pub vcpu: u32,
    /// `MCG_CAP`.
    pub mcg_cap: u64,
    /// `MC0_CTL2`.
    pub mci_ctl2_bank0: u64,
    /// `MC1_CTL2`.
    pub mci_ctl2_bank1: u64,
    /// `MCG_EXT_CTL`.
    pub mcg_ext_ctl: u64,
}

/// vCPU record, version 2: V1 plus the machine check in flight. Frozen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VcpuRecordV2 {
    /// The vCPU's id in its domain.
    pub vcpu: u32,
    /// `MCG_CAP`.
    pub mcg_cap: u64,
    /// `MC0_CTL2`.
    pub mci_ctl2_bank0: u64,
    /// `MC1_CTL2`.
    pub mci_ctl2_bank1: u64,
    /// `MCG_EXT_CTL`.
    pub mcg_ext_ctl: u64,
    /// `MCG_STATUS`.
    pub mcg_status: u64,
    /// `MC1_STATUS`.
    pub bank1_status: u64,
    /// `MC1_ADDR`.
    pub bank1_addr: u64,
    /// `MC1_MISC`.
    pub bank1_misc: u64,
    /// A virtual #MC injected and not yet taken.
    pub pending: bool,
}

/// Domain record, version 2 (the first). Frozen: `N` is the reader's capacity, not part of
/// the bytes (the frames are a length-prefixed sequence).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DomainRecordV2<const N: usize = BROKEN_FRAMES_DEFAULT> {
    /// 0 = Intel, 1 = AMD.
    pub vendor: u8,
    /// The LMCE opt-in (Intel only).
    pub lmce: bool,
    /// The domain's vCPU count.
    pub vcpus: u32,
    /// Broken guest frame numbers, in the order they broke.
    pub broken_frames: heapless::Vec<u64, N>,
}

/// A decoded native record.
// Unboxed on purpose: vmce allocates nothing, and a domain record is decoded once per restore.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NativeRecord<const N: usize = BROKEN_FRAMES_DEFAULT> {
    /// A vCPU record.
    Vcpu(SavedVcpu),
    /// A domain record.
    Domain(SavedDomain<N>),
}

/// Writes `saved` as a vCPU record of `version`.
///
/// # Errors
/// [`RecordError::WouldLose`] when `version` cannot carry the vCPU's state under
/// [`LossPolicy::Refuse`]; [`RecordError::BufferTooSmall`].
pub fn encode_vcpu(
    saved: &SavedVcpu,
    version: NativeVersion,
    policy: LossPolicy,
    out: &mut [u8],
) -> Result<Encoding, RecordError> {
    let dropped = dropped_fields(&saved.snapshot, version.carries(), policy)?;
    let state = &saved.snapshot.state;
    let [ctl2_0, ctl2_1] = state.mci_ctl2;
    let [_, bank1] = state.banks;
    let mut payload = [0u8; MAX_VCPU_RECORD_BYTES];
    let written = match version {
        NativeVersion::V1 => serialize(
            &VcpuRecordV1 {
                vcpu: saved.id.0,
                mcg_cap: state.mcg_cap.bits(),
                mci_ctl2_bank0: ctl2_0.bits(),
                mci_ctl2_bank1: ctl2_1.bits(),
                mcg_ext_ctl: state.mcg_ext_ctl.bits(),
            },
            &mut payload,
        )?,
        NativeVersion::V2 => serialize(
            &VcpuRecordV2 {
                vcpu: saved.id.0,
                mcg_cap: state.mcg_cap.bits(),
                mci_ctl2_bank0: ctl2_0.bits(),
                mci_ctl2_bank1: ctl2_1.bits(),
                mcg_ext_ctl: state.mcg_ext_ctl.bits(),
                mcg_status: state.mcg_status.bits(),
                bank1_status: bank1.status.bits(),
                bank1_addr: bank1.addr,
                bank1_misc: bank1.misc,
                pending: saved.snapshot.pending,
            },
            &mut payload,
        )?,
    };
    let len = envelope(
        RecordKind::Vcpu,
        version,
        payload.get(..written).unwrap_or(&[]),
        out,
    )?;
    Ok(Encoding { len, dropped })
}

/// Writes `saved` as a domain record of `version`. There is no V1 domain record: for V1 this
/// writes nothing (length 0) when nothing would be lost (the destination uses its own
/// profile), and refuses when broken frames would be.
///
/// `out` needs at most [`max_domain_record_bytes`] of the list's capacity.
///
/// # Errors
/// [`RecordError::WouldLose`] (broken frames for V1) and
/// [`NativeError::BrokenFramesOverflowed`] under [`LossPolicy::Refuse`];
/// [`RecordError::BufferTooSmall`]; [`NativeError::RecordTooLarge`] when the frames do not
/// fit the envelope's 16-bit length.
pub fn encode_domain<const N: usize>(
    saved: &SavedDomain<N>,
    version: NativeVersion,
    policy: LossPolicy,
    out: &mut [u8],
) -> Result<Encoding, RecordError> {
    let refuse = policy == LossPolicy::Refuse;
    if version == NativeVersion::V1 {
        if saved.broken_frames.is_empty() {
            return Ok(Encoding {
                len: 0,
                dropped: StateFields::empty(),
            });
        }
        if refuse {
            return Err(RecordError::WouldLose {
                fields: StateFields::BROKEN_FRAMES,
            });
        }
        return Ok(Encoding {
            len: 0,
            dropped: StateFields::BROKEN_FRAMES,
        });
    }
    let mut dropped = StateFields::empty();
    if saved.broken_frames.overflowed() {
        if refuse {
            return Err(RecordError::Native(NativeError::BrokenFramesOverflowed));
        }
        dropped = StateFields::BROKEN_FRAMES;
    }
    let record = DomainRecordV2::<N> {
        vendor: match saved.profile.vendor() {
            Vendor::Intel => 0,
            Vendor::Amd => 1,
        },
        lmce: saved.profile.has_lmce(),
        vcpus: saved.vcpus,
        broken_frames: saved.broken_frames.iter().map(|frame| frame.0).collect(),
    };
    // Serialized in place after the envelope: the record's size depends on the capacity.
    let needed = max_domain_record_bytes(saved.broken_frames.len());
    let body = out
        .get_mut(HEADER_BYTES..)
        .ok_or(RecordError::BufferTooSmall { needed })?;
    let written = postcard::to_slice(&record, body)
        .map_err(|_| RecordError::BufferTooSmall { needed })?
        .len();
    write_out(out, &header(RecordKind::Domain, version, written)?)?;
    Ok(Encoding {
        len: HEADER_BYTES + written,
        dropped,
    })
}

/// Reads one native record from the start of `bytes` for a destination domain of `vcpus`
/// vCPUs under `profile`, as a loader that reads versions up to `loader`. Returns the record
/// and the bytes it took. A domain record may list up to [`BROKEN_FRAMES_DEFAULT`] frames;
/// a destination whose domains hold more uses [`decode_with_capacity`].
///
/// # Errors
/// A [`RecordError`]: truncated, unknown kind, unsupported version, a malformed payload, a
/// vCPU the domain does not have, a profile or vCPU count that is not the destination's,
/// too many or impossible broken frames, or a register value the profile cannot restore.
pub fn decode(
    bytes: &[u8],
    profile: Profile,
    vcpus: u32,
    loader: NativeVersion,
) -> Result<(NativeRecord, usize), RecordError> {
    decode_with_capacity::<BROKEN_FRAMES_DEFAULT>(bytes, profile, vcpus, loader)
}

/// [`decode`] for a destination whose domains hold up to `N` broken frames
/// (`Domain<S, N>`): a domain record with more is refused
/// ([`NativeError::TooManyBrokenFrames`]).
///
/// # Errors
/// As [`decode`].
pub fn decode_with_capacity<const N: usize>(
    bytes: &[u8],
    profile: Profile,
    vcpus: u32,
    loader: NativeVersion,
) -> Result<(NativeRecord<N>, usize), RecordError> {
    let (head, rest) = bytes
        .split_first_chunk::<HEADER_BYTES>()
        .ok_or(RecordError::Truncated {
            needed: HEADER_BYTES,
            available: bytes.len(),
        })?;
    let [kind, version, l0, l1] = *head;
    let kind = RecordKind::from_byte(kind)
        .ok_or(RecordError::Native(NativeError::UnknownKind { kind }))?;
    if version == 0 || version > loader as u8 {
        return Err(RecordError::Native(NativeError::UnsupportedVersion {
            kind,
            version,
            newest: loader as u8,
        }));
    }
    let length = usize::from(u16::from_le_bytes([l0, l1]));
    let payload = rest.get(..length).ok_or(RecordError::Truncated {
        needed: HEADER_BYTES + length,
        available: bytes.len(),
    })?;
    let record = match (kind, version) {
        (RecordKind::Vcpu, 1) => {
            let record: VcpuRecordV1 = deserialize(payload)?;
            NativeRecord::Vcpu(restore_vcpu(
                profile,
                vcpus,
                &VcpuRecordV2 {
                    vcpu: record.vcpu,
                    mcg_cap: record.mcg_cap,
                    mci_ctl2_bank0: record.mci_ctl2_bank0,
                    mci_ctl2_bank1: record.mci_ctl2_bank1,
                    mcg_ext_ctl: record.mcg_ext_ctl,
                    mcg_status: 0,
                    bank1_status: 0,
                    bank1_addr: 0,
                    bank1_misc: 0,
                    pending: false,
                },
            )?)
        }
        (RecordKind::Vcpu, 2) => {
            let record: VcpuRecordV2 = deserialize(payload)?;
            NativeRecord::Vcpu(restore_vcpu(profile, vcpus, &record)?)
        }
        (RecordKind::Domain, 2) => {
            check_frame_count(payload, N)?;
            let record: DomainRecordV2<N> = deserialize(payload)?;
            NativeRecord::Domain(restore_domain(profile, vcpus, &record)?)
        }
        (kind, version) => {
            return Err(RecordError::Native(NativeError::NoSuchVersion {
                kind,
                version,
            }));
        }
    };
    Ok((record, HEADER_BYTES + length))
}

/// [`decode`], expecting a vCPU record.
///
/// # Errors
/// As [`decode`]; [`NativeError::WrongKind`] for a domain record.
pub fn decode_vcpu(
    bytes: &[u8],
    profile: Profile,
    vcpus: u32,
    loader: NativeVersion,
) -> Result<(SavedVcpu, usize), RecordError> {
    match decode(bytes, profile, vcpus, loader)? {
        (NativeRecord::Vcpu(saved), len) => Ok((saved, len)),
        (NativeRecord::Domain(_), _) => Err(RecordError::Native(NativeError::WrongKind {
            expected: RecordKind::Vcpu,
            found: RecordKind::Domain,
        })),
    }
}

/// [`decode`], expecting a domain record.
///
/// # Errors
/// As [`decode`]; [`NativeError::WrongKind`] for a vCPU record.
pub fn decode_domain(
    bytes: &[u8],
    profile: Profile,
    vcpus: u32,
    loader: NativeVersion,
) -> Result<(SavedDomain, usize), RecordError> {
    match decode(bytes, profile, vcpus, loader)? {
        (NativeRecord::Domain(saved), len) => Ok((saved, len)),
        (NativeRecord::Vcpu(_), _) => Err(RecordError::Native(NativeError::WrongKind {
            expected: RecordKind::Domain,
            found: RecordKind::Vcpu,
        })),
    }
}

fn restore_vcpu(
    profile: Profile,
    vcpus: u32,
    record: &VcpuRecordV2,
) -> Result<SavedVcpu, RecordError> {
    let id = check_vcpu_id(record.vcpu, vcpus)?;
    let snapshot = VcpuSnapshot {
        state: VcpuMceState {
            vendor: profile.vendor(),
            mcg_cap: McgCap::from_bits_retain(record.mcg_cap),
            mcg_status: McgStatus::from_bits_retain(record.mcg_status),
            mcg_ext_ctl: McgExtCtl::from_bits_retain(record.mcg_ext_ctl),
            mci_ctl2: [
                MciCtl2::from_bits_retain(record.mci_ctl2_bank0),
                MciCtl2::from_bits_retain(record.mci_ctl2_bank1),
            ],
            banks: [
                GuestBank::EMPTY,
                GuestBank {
                    status: MciStatus::from_bits_retain(record.bank1_status),
                    addr: record.bank1_addr,
                    misc: record.bank1_misc,
                },
            ],
        },
        pending: record.pending,
    };
    Ok(SavedVcpu {
        id,
        snapshot: snapshot.check(profile)?,
    })
}

fn restore_domain<const N: usize>(
    profile: Profile,
    vcpus: u32,
    record: &DomainRecordV2<N>,
) -> Result<SavedDomain<N>, RecordError> {
    let saved = match (record.vendor, record.lmce) {
        (0, false) => Profile::Intel,
        (0, true) => Profile::IntelLmce,
        (1, false) => Profile::Amd,
        (1, true) => return Err(RecordError::Native(NativeError::LmceOnAmd)),
        (code, _) => return Err(RecordError::Native(NativeError::UnknownVendor { code })),
    };
    check_saved_domain(saved, record.vcpus, profile, vcpus)?;
    let mut broken_frames = BrokenFrames::new();
    for &frame in &record.broken_frames {
        if frame >= GUEST_FRAME_LIMIT {
            return Err(RecordError::Restore(RestoreError::FrameOutOfRange {
                frame,
            }));
        }
        if broken_frames.insert(GuestFrame(frame)) != BrokenFrameNote::Recorded {
            return Err(RecordError::Native(NativeError::DuplicateBrokenFrame {
                frame,
            }));
        }
    }
    Ok(SavedDomain {
        profile,
        vcpus,
        broken_frames,
    })
}

/// Refuses a domain payload whose frame list is longer than the reader's `capacity`, before
/// decoding it (so the error says so instead of "malformed").
fn check_frame_count(payload: &[u8], capacity: usize) -> Result<(), RecordError> {
    if let Ok(((_, _, _, count), _)) = postcard::take_from_bytes::<(u8, bool, u32, u64)>(payload)
        && count > capacity as u64
    {
        return Err(RecordError::Native(NativeError::TooManyBrokenFrames {
            count,
            capacity,
        }));
    }
    Ok(())
}

fn serialize<T: Serialize>(value: &T, buffer: &mut [u8]) -> Result<usize, RecordError> {
    postcard::to_slice(value, buffer)
        .map(|written| written.len())
        .map_err(|_| RecordError::BufferTooSmall {
            needed: buffer.len().saturating_add(1),
        })
}

/// Decodes `payload` as exactly one `T` in its canonical encoding.
fn deserialize<T>(payload: &[u8]) -> Result<T, RecordError>
where
    T: Serialize + for<'de> Deserialize<'de>,
{
    let (value, rest) = postcard::take_from_bytes::<T>(payload)
        .map_err(|_| RecordError::Native(NativeError::MalformedPayload))?;
    if !rest.is_empty() {
        return Err(RecordError::Native(NativeError::TrailingBytes {
            extra: rest.len(),
        }));
    }
    // postcard tolerates over-long varints; a record must be byte-for-byte canonical so that
    // re-encoding it gives the same bytes.
    let canonical = postcard::serialize_with_flavor(&value, SameBytes::new(payload))
        .map_err(|_| RecordError::Native(NativeError::MalformedPayload))?;
    if !canonical {
        return Err(RecordError::Native(NativeError::MalformedPayload));
    }
    Ok(value)
}

/// A postcard output that compares what is serialized with `expected` instead of storing
/// it: [`deserialize`]'s canonical-encoding check, without a buffer the size of the record.
struct SameBytes<'a> {
    expected: &'a [u8],
    at: usize,
}

impl<'a> SameBytes<'a> {
    fn new(expected: &'a [u8]) -> Self {
        Self { expected, at: 0 }
    }
}

impl postcard::ser_flavors::Flavor for SameBytes<'_> {
    /// Whether the serialization was exactly `expected`.
    type Output = bool;

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        if self.expected.get(self.at) == Some(&byte) {
            self.at += 1;
            Ok(())
        } else {
            // Differing bytes end the comparison early.
            Err(postcard::Error::SerializeBufferFull)
        }
    }

    fn finalize(self) -> postcard::Result<bool> {
        Ok(self.at == self.expected.len())
    }
}

/// The envelope's header for a payload of `len` bytes.
fn header(
    kind: RecordKind,
    version: NativeVersion,
    len: usize,
) -> Result<[u8; HEADER_BYTES], RecordError> {
    let length = u16::try_from(len)
        .map_err(|_| RecordError::Native(NativeError::RecordTooLarge { bytes: len }))?;
    let [l0, l1] = length.to_le_bytes();
    Ok([kind as u8, version as u8, l0, l1])
}

fn envelope(
    kind: RecordKind,
    version: NativeVersion,
    payload: &[u8],
    out: &mut [u8],
) -> Result<usize, RecordError> {
    let head = header(kind, version, payload.len())?;
    let needed = HEADER_BYTES + payload.len();
    let target = out
        .get_mut(..needed)
        .ok_or(RecordError::BufferTooSmall { needed })?;
    let (head_out, body) = target.split_at_mut(HEADER_BYTES);
    head_out.copy_from_slice(&head);
    write_out(body, payload).map(|_| needed)
}
