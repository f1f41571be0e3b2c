//! The errors of the record layer: one enum per format, under one umbrella.
//!
//! # Background
//! Floor: records (a leaf of it), on the state and domain errors, the fields and the wire
//! constants. A record can fail at every layer below it: its framing ([`HvmError`] for Xen's
//! `VMCE_VCPU` record and HVM context streams, [`NativeError`] for vmce's envelope), the
//! vCPU state it carries ([`StateError`], from the one state check), or the domain it names
//! ([`RestoreError`]: a vCPU it does not have, another profile or vCPU count). A decoder or an
//! encoder returns [`RecordError`], which holds any of them (each converts with `From`) and
//! the few failures every format shares. Every enum is flat and `Copy`.

use super::fields::StateFields;
use super::wire::{HEADER_PAYLOAD_BYTES, HVM_FILE_VERSION, HVM_MAGIC, RecordKind};
use crate::domain::RestoreError;
use crate::state::StateError;
use core::fmt;

/// Why a record cannot be written or read. Nothing was restored when one is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
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
    /// The format cannot carry this state; under `LossPolicy::Refuse` nothing was
    /// written.
    WouldLose {
        /// What would be lost.
        fields: StateFields,
    },
    /// The vCPU state the record carries cannot be held under the destination profile.
    State(StateError),
    /// The record does not fit the destination domain.
    Restore(RestoreError),
    /// A Xen `VMCE_VCPU` record or HVM context stream is malformed or refused.
    Hvm(HvmError),
    /// A native record is malformed or refused.
    Native(NativeError),
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
            RecordError::WouldLose { fields } => write!(
                f,
                "the destination format cannot carry {fields}: save refused (LossPolicy::Allow would drop and report it)"
            ),
            RecordError::State(error) => error.fmt(f),
            RecordError::Restore(error) => error.fmt(f),
            RecordError::Hvm(error) => error.fmt(f),
            RecordError::Native(error) => error.fmt(f),
        }
    }
}

impl core::error::Error for RecordError {}

impl From<StateError> for RecordError {
    fn from(error: StateError) -> Self {
        RecordError::State(error)
    }
}

impl From<RestoreError> for RecordError {
    fn from(error: RestoreError) -> Self {
        RecordError::Restore(error)
    }
}

impl From<HvmError> for RecordError {
    fn from(error: HvmError) -> Self {
        RecordError::Hvm(error)
    }
}

impl From<NativeError> for RecordError {
    fn from(error: NativeError) -> Self {
        RecordError::Native(error)
    }
}

/// Why a Xen `VMCE_VCPU` record or HVM context stream cannot be read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HvmError {
    /// A Xen record of another type where `VMCE_VCPU` (18) was expected.
    WrongTypecode {
        /// The typecode found.
        found: u16,
    },
    /// A Xen `VMCE_VCPU` payload length the loading release does not take: longer than its
    /// own layout, or, for the 4.2 loader (which loads the record at its exact length), any
    /// length but 8. Also an `hvm::HvmWriter` payload beyond 4 GiB.
    BadLength {
        /// The length found.
        length: u32,
        /// The loader's own payload length: the longest it takes.
        accepted: u32,
    },
    /// A vCPU id the Xen descriptor's 16-bit instance cannot hold.
    VcpuIdTooLarge {
        /// The vCPU id.
        id: u32,
    },
    /// `MCG_CAP.LMCE_P` read by a Xen loader older than 4.10 (which does not allow it), or
    /// written for such a release.
    LmceBeforeXen410,
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
    /// ([`HVM_FILE_VERSION`]).
    BadHeaderVersion {
        /// The version found.
        found: u32,
    },
    /// An HVM context stream that runs out before an END record (fewer than a descriptor's
    /// 8 bytes left where the next record should start).
    MissingEnd,
}

impl fmt::Display for HvmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HvmError::WrongTypecode { found } => {
                write!(f, "HVM record typecode {found}, expected VMCE_VCPU (18)")
            }
            HvmError::BadLength { length, accepted } => write!(
                f,
                "VMCE_VCPU payload of {length} bytes: this loader's own layout is {accepted} bytes (Xen 4.3 and later take any shorter length, 4.2 only its own)"
            ),
            HvmError::VcpuIdTooLarge { id } => {
                write!(
                    f,
                    "vCPU {id} does not fit a Xen descriptor's 16-bit instance"
                )
            }
            HvmError::LmceBeforeXen410 => {
                f.write_str("MCG_CAP has LMCE_P, which Xen before 4.10 does not allow")
            }
            HvmError::MissingHeader { found } => {
                write!(
                    f,
                    "HVM context starts with typecode {found}, not the header (1)"
                )
            }
            HvmError::BadMagic { found } => {
                write!(f, "HVM context magic {found:#x}, expected {:#x}", HVM_MAGIC)
            }
            HvmError::BadHeaderLength { length } => write!(
                f,
                "HVM header record of {length} bytes, expected {}",
                HEADER_PAYLOAD_BYTES
            ),
            HvmError::BadHeaderVersion { found } => write!(
                f,
                "HVM context format version {found}, expected {}",
                HVM_FILE_VERSION
            ),
            HvmError::MissingEnd => f.write_str("HVM context ends without an END record"),
        }
    }
}

impl core::error::Error for HvmError {}

/// Why a native record (vmce's own envelope and payloads) cannot be read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NativeError {
    /// A native record of a kind this loader does not know.
    UnknownKind {
        /// The kind byte.
        kind: u8,
    },
    /// A native record of another kind than the one asked for.
    WrongKind {
        /// The kind expected.
        expected: RecordKind,
        /// The kind found.
        found: RecordKind,
    },
    /// A native record version this loader does not read (newer than it, or 0).
    UnsupportedVersion {
        /// The record's kind.
        kind: RecordKind,
        /// The version found.
        version: u8,
        /// The newest version the loader reads.
        newest: u8,
    },
    /// A native record that cannot be written in the version asked for (the domain record
    /// exists from V2 on).
    NoSuchVersion {
        /// The record's kind.
        kind: RecordKind,
        /// The version asked for.
        version: u8,
    },
    /// A native payload that does not decode as its kind and version say.
    MalformedPayload,
    /// Bytes follow a record (or the END record) that belong to nothing.
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// A vendor code other than 0 (Intel) or 1 (AMD) in a domain record.
    UnknownVendor {
        /// The code found.
        code: u8,
    },
    /// A domain record with the LMCE opt-in on an AMD profile.
    LmceOnAmd,
    /// A broken-frame list longer than the reader's capacity (see
    /// `native::decode_with_capacity`).
    TooManyBrokenFrames {
        /// The length found.
        count: u64,
        /// The most the reader holds.
        capacity: usize,
    },
    /// A guest frame listed twice in a domain record's broken frames.
    DuplicateBrokenFrame {
        /// The frame number.
        frame: u64,
    },
    /// A record too large for the native envelope's 16-bit payload length.
    RecordTooLarge {
        /// The payload's size.
        bytes: usize,
    },
    /// The domain's broken-frame list overflowed: a frame broke that no record can carry.
    BrokenFramesOverflowed,
}

impl fmt::Display for NativeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NativeError::UnknownKind { kind } => write!(f, "unknown native record kind {kind}"),
            NativeError::WrongKind { expected, found } => {
                write!(f, "native record of kind {found}, expected {expected}")
            }
            NativeError::UnsupportedVersion {
                kind,
                version,
                newest,
            } => write!(
                f,
                "{kind} record version {version}; this loader reads versions 1 to {newest}"
            ),
            NativeError::NoSuchVersion { kind, version } => {
                write!(f, "there is no {kind} record version {version}")
            }
            NativeError::MalformedPayload => {
                f.write_str("native record payload does not decode as its kind and version")
            }
            NativeError::TrailingBytes { extra } => {
                write!(f, "{extra} bytes after the end of the record")
            }
            NativeError::UnknownVendor { code } => write!(f, "unknown vendor code {code}"),
            NativeError::LmceOnAmd => f.write_str("domain record opts an AMD profile into LMCE"),
            NativeError::TooManyBrokenFrames { count, capacity } => write!(
                f,
                "{count} broken frames in the record; this destination holds at most {capacity}"
            ),
            NativeError::DuplicateBrokenFrame { frame } => {
                write!(f, "broken frame {frame:#x} listed twice")
            }
            NativeError::RecordTooLarge { bytes } => write!(
                f,
                "record payload of {bytes} bytes exceeds the native envelope's 65535"
            ),
            NativeError::BrokenFramesOverflowed => f.write_str(
                "more guest frames broke than the domain's list holds: no record can carry them all",
            ),
        }
    }
}

impl core::error::Error for NativeError {}
