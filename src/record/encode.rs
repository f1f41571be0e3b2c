//! What an encoder does with state its format cannot carry, and what it wrote.
//!
//! # Background
//! Floor: records (a leaf of it), on the record errors and fields. Shared by every encoder.

use super::error::RecordError;
use super::fields::StateFields;
use crate::state::VcpuSnapshot;

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
#[non_exhaustive]
pub struct Encoding {
    /// Bytes written at the start of the buffer.
    pub len: usize,
    /// State the format could not carry and that was dropped ([`LossPolicy::Allow`] only;
    /// always empty under [`LossPolicy::Refuse`]).
    pub dropped: StateFields,
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
