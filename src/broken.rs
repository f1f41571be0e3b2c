//! The guest frames of a domain that hold an uncorrectable error.
//!
//! # Background
//! Once a host error has been reflected into a guest, the guest frame behind it is broken:
//! the guest may offline it, but until it does, any access consumes poison. Xen marks such
//! pages in its physical-to-machine map and, by its own commit message, does not handle a
//! page that breaks while the guest migrates. vmce keeps the list per domain
//! ([`crate::Domain::broken_frames`]), carries it in the native V2 domain record, and on the
//! destination hands it back to the toolstack, which keeps the frames unmapped and calls
//! [`crate::Domain::inject_broken_access`] when the guest touches one: the guest gets a fresh
//! action-required machine check instead of silently reading a replacement page.
//!
//! The list is bounded so that the per-domain state stays fixed-size and allocation-free. The
//! integrator chooses the bound `N` per domain type (`Domain<S, N>`, default
//! [`BROKEN_FRAMES_DEFAULT`]); each frame costs 8 bytes of domain state (BENCHMARKS.md has the
//! totals). A frame that no longer fits is never dropped silently: [`BrokenFrames::insert`]
//! says so, the list remembers it overflowed, and a save that would lose it refuses
//! ([`crate::record::NativeError::BrokenFramesOverflowed`]). A restore that cannot keep every
//! frame fails ([`crate::domain::RestoreError::BrokenFramesCapacity`]) and changes nothing.
//! Frames beyond the 52-bit physical address space ([`GUEST_FRAME_LIMIT`]) are never listed:
//! the entry points refuse them, as the record decoder does.

use crate::address::GuestFrame;
use core::fmt;

/// How many broken frames a domain tracks unless its integrator chooses otherwise (the `N`
/// of `Domain<S, N>` and [`BrokenFrames<N>`]).
pub const BROKEN_FRAMES_DEFAULT: usize = 64;

/// The highest guest frame number a 52-bit physical address space has, plus one.
pub const GUEST_FRAME_LIMIT: u64 =
    1 << (crate::address::MAX_PHYS_ADDR_BITS - crate::address::PAGE_SHIFT);

/// A set of at most `N` broken guest frames, in the order they broke.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BrokenFrames<const N: usize = BROKEN_FRAMES_DEFAULT> {
    frames: heapless::Vec<GuestFrame, N>,
    overflowed: bool,
}

impl<const N: usize> Default for BrokenFrames<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`BrokenFrames::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BrokenFrameNote {
    /// The frame is now on the list.
    Recorded,
    /// The frame was already on the list.
    AlreadyKnown,
    /// The list is full: the frame is not on it, and the list is marked overflowed.
    ListFull,
}

impl fmt::Display for BrokenFrameNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BrokenFrameNote::Recorded => "frame recorded as broken",
            BrokenFrameNote::AlreadyKnown => "frame already known broken",
            BrokenFrameNote::ListFull => "broken-frame list full: frame NOT recorded",
        })
    }
}

impl<const N: usize> BrokenFrames<N> {
    /// How many frames the list can hold.
    pub const CAPACITY: usize = N;

    /// An empty list.
    pub const fn new() -> Self {
        Self {
            frames: heapless::Vec::new(),
            overflowed: false,
        }
    }

    /// Adds `frame` unless it is already there.
    pub fn insert(&mut self, frame: GuestFrame) -> BrokenFrameNote {
        if self.contains(frame) {
            return BrokenFrameNote::AlreadyKnown;
        }
        match self.frames.push(frame) {
            Ok(()) => BrokenFrameNote::Recorded,
            Err(_) => {
                self.overflowed = true;
                BrokenFrameNote::ListFull
            }
        }
    }

    /// Adds every frame of `other` (a restored list) and keeps `other`'s overflow mark, or,
    /// when the union does not fit, changes nothing and returns how many frames it needs.
    ///
    /// # Errors
    /// The number of distinct frames the union holds, when that is more than `N`.
    pub fn merge<const M: usize>(&mut self, other: &BrokenFrames<M>) -> Result<(), usize> {
        let new = other.iter().filter(|frame| !self.contains(*frame)).count();
        let needed = self.frames.len().saturating_add(new);
        if needed > N {
            return Err(needed);
        }
        for frame in other.iter() {
            self.insert(frame);
        }
        self.overflowed |= other.overflowed;
        Ok(())
    }

    /// Whether `frame` is on the list.
    pub fn contains(&self, frame: GuestFrame) -> bool {
        self.frames.contains(&frame)
    }

    /// The frames, in the order they broke.
    pub fn iter(&self) -> impl Iterator<Item = GuestFrame> + '_ {
        self.frames.iter().copied()
    }

    /// The frames as a slice.
    pub fn as_slice(&self) -> &[GuestFrame] {
        &self.frames
    }

    /// How many frames are listed.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether no frame is listed (and none was lost).
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty() && !self.overflowed
    }

    /// Whether a frame broke that the list could not hold.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }
}

impl<const N: usize> FromIterator<GuestFrame> for BrokenFrames<N> {
    fn from_iter<I: IntoIterator<Item = GuestFrame>>(frames: I) -> Self {
        let mut list = BrokenFrames::<N>::new();
        for frame in frames {
            list.insert(frame);
        }
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_list_says_so_and_remembers() {
        let mut list = BrokenFrames::<BROKEN_FRAMES_DEFAULT>::new();
        for frame in 0..BROKEN_FRAMES_DEFAULT as u64 {
            assert_eq!(list.insert(GuestFrame(frame)), BrokenFrameNote::Recorded);
        }
        assert_eq!(list.insert(GuestFrame(3)), BrokenFrameNote::AlreadyKnown);
        assert!(!list.overflowed());
        assert_eq!(list.insert(GuestFrame(999)), BrokenFrameNote::ListFull);
        assert!(list.overflowed());
        assert_eq!(list.len(), BROKEN_FRAMES_DEFAULT);
        assert!(!list.contains(GuestFrame(999)));
    }

    #[test]
    fn merge_that_does_not_fit_changes_nothing() {
        let mut small: BrokenFrames<3> = [GuestFrame(1), GuestFrame(2)].into_iter().collect();
        let incoming: BrokenFrames<8> = [GuestFrame(2), GuestFrame(3), GuestFrame(4)]
            .into_iter()
            .collect();
        assert_eq!(small.merge(&incoming), Err(4));
        assert_eq!(small.as_slice(), &[GuestFrame(1), GuestFrame(2)]);
        let fits: BrokenFrames<8> = [GuestFrame(2), GuestFrame(3)].into_iter().collect();
        assert_eq!(small.merge(&fits), Ok(()));
        assert_eq!(
            small.as_slice(),
            &[GuestFrame(1), GuestFrame(2), GuestFrame(3)]
        );
    }
}
