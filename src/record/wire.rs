//! Constants of the record layouts that both a format and its errors name.
//!
//! # Background
//! Floor: records (a leaf of it); imports nothing. The HVM context header's magic, version and
//! length, and the kinds of a native record, are here so that the error messages
//! (`record::error`) and the formats (`record::hvm`, `record::native`) read them from one
//! place; the formats re-export them.

use core::fmt;

/// The HVM context header's magic number.
pub const HVM_MAGIC: u32 = 0x5438_1286;
/// The HVM context header's format version, the only one Xen writes and loads.
pub const HVM_FILE_VERSION: u32 = 1;
/// The HVM context header payload: magic, version, changeset, CPUID, guest TSC kHz.
pub const HEADER_PAYLOAD_BYTES: usize = 24;

/// What a native record describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordKind {
    /// One vCPU's registers.
    Vcpu = 1,
    /// The domain: profile, vCPU count, broken frames.
    Domain = 2,
}

impl RecordKind {
    /// The kind of envelope byte 0, or `None` for a kind this loader does not know.
    pub(crate) const fn from_byte(byte: u8) -> Option<RecordKind> {
        match byte {
            1 => Some(RecordKind::Vcpu),
            2 => Some(RecordKind::Domain),
            _ => None,
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordKind::Vcpu => "vCPU",
            RecordKind::Domain => "domain",
        })
    }
}
