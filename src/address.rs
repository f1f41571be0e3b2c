//! Host-physical to guest-physical translation of an error address.
//!
//! # Background
//! A host error names a host-physical address. The guest must see the address of the same
//! byte in its own physical address space: the page frame is rewritten through the owning
//! domain's physical-to-machine map (in reverse) and the offset within the 4 KiB page is kept.
//! The hypervisor owns that map, so it implements [`GuestMemory`].
//!
//! One page translates to one page, so an error must lie within one 4 KiB page: an Intel error
//! whose `MCi_MISC` address LSB is above 12 is refused before translation
//! ([`crate::classify`], "Address granularity").

use core::fmt;

/// log2 of the page size translation works in (4 KiB).
pub const PAGE_SHIFT: u32 = 12;
/// Offset bits within a page.
pub const PAGE_OFFSET_MASK: u64 = (1 << PAGE_SHIFT) - 1;
/// The highest physical address bit x86-64 defines (MAXPHYADDR ≤ 52).
pub const MAX_PHYS_ADDR_BITS: u32 = 52;

/// A host-physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPhysAddr(pub u64);

/// A guest-physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GuestPhysAddr(pub u64);

/// A host-physical 4 KiB page frame number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostFrame(pub u64);

/// A guest-physical 4 KiB page frame number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GuestFrame(pub u64);

impl HostPhysAddr {
    /// The frame holding the address.
    pub const fn frame(self) -> HostFrame {
        HostFrame(self.0 >> PAGE_SHIFT)
    }
}

impl GuestPhysAddr {
    /// The frame holding the address.
    pub const fn frame(self) -> GuestFrame {
        GuestFrame(self.0 >> PAGE_SHIFT)
    }
}

impl GuestFrame {
    /// The address of the frame's first byte, or `None` for a frame beyond the 52-bit
    /// physical address space (whose address would not fit).
    pub const fn start(self) -> Option<GuestPhysAddr> {
        if self.0 >= 1 << (MAX_PHYS_ADDR_BITS - PAGE_SHIFT) {
            None
        } else {
            Some(GuestPhysAddr(self.0 << PAGE_SHIFT))
        }
    }
}

impl fmt::Display for HostPhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host {:#x}", self.0)
    }
}

impl fmt::Display for GuestPhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "guest {:#x}", self.0)
    }
}

/// One domain's view of host memory, implemented by the hypervisor.
///
/// # Invariants
/// `guest_frame` answers for the domain vmce will inject into: `Some` only when that domain
/// owns the host frame, with the guest frame it is mapped at. It must not block (it runs in
/// the #MC path) and must not fault.
pub trait GuestMemory {
    /// The guest frame at which this domain maps `host`, if it owns it.
    fn guest_frame(&self, host: HostFrame) -> Option<GuestFrame>;
}

/// Why an error address could not be given to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TranslateError {
    /// The domain does not own the host frame.
    NotOwned(HostFrame),
    /// The translation gave a frame beyond the 52-bit physical address space.
    OutOfRange(GuestFrame),
}

impl fmt::Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TranslateError::NotOwned(frame) => {
                write!(f, "host frame {:#x} is not owned by the domain", frame.0)
            }
            TranslateError::OutOfRange(frame) => {
                write!(
                    f,
                    "translated guest frame {:#x} is beyond the physical address space",
                    frame.0
                )
            }
        }
    }
}

impl core::error::Error for TranslateError {}

/// Translates `host` into the domain's guest-physical space, keeping the page offset.
///
/// # Errors
/// [`TranslateError::NotOwned`] when the domain does not own the frame;
/// [`TranslateError::OutOfRange`] when the translator answers with an impossible frame.
pub fn translate(
    host: HostPhysAddr,
    memory: &(impl GuestMemory + ?Sized),
) -> Result<GuestPhysAddr, TranslateError> {
    let frame = host.frame();
    let guest = memory
        .guest_frame(frame)
        .ok_or(TranslateError::NotOwned(frame))?;
    if guest.0 >= 1 << (MAX_PHYS_ADDR_BITS - PAGE_SHIFT) {
        return Err(TranslateError::OutOfRange(guest));
    }
    Ok(GuestPhysAddr(
        (guest.0 << PAGE_SHIFT) | (host.0 & PAGE_OFFSET_MASK),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Offset;
    impl GuestMemory for Offset {
        fn guest_frame(&self, host: HostFrame) -> Option<GuestFrame> {
            host.0.checked_sub(0x4000).map(GuestFrame)
        }
    }

    #[test]
    fn frame_rewritten_offset_kept() {
        assert_eq!(
            translate(HostPhysAddr(0x0412_3ABC), &Offset),
            Ok(GuestPhysAddr(0x0012_3ABC))
        );
        assert_eq!(
            translate(HostPhysAddr(0x1000), &Offset),
            Err(TranslateError::NotOwned(HostFrame(1)))
        );
    }

    #[test]
    fn frame_start_never_wraps() {
        assert_eq!(GuestFrame(0x123).start(), Some(GuestPhysAddr(0x12_3000)));
        assert_eq!(
            GuestFrame((1 << 40) - 1).start(),
            Some(GuestPhysAddr(((1 << 40) - 1) << 12))
        );
        // Found by the domain_ops fuzz target: 2^56 << 12 wrapped to address 0.
        assert_eq!(GuestFrame(1 << 40).start(), None);
        assert_eq!(GuestFrame(1 << 56).start(), None);
    }

    #[test]
    fn impossible_frames_are_refused() {
        struct Wild;
        impl GuestMemory for Wild {
            fn guest_frame(&self, _: HostFrame) -> Option<GuestFrame> {
                Some(GuestFrame(u64::MAX))
            }
        }
        assert_eq!(
            translate(HostPhysAddr(0), &Wild),
            Err(TranslateError::OutOfRange(GuestFrame(u64::MAX)))
        );
    }
}
