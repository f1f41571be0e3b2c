//! The synchronization primitives the vCPU protocol is built from, in one place so that a
//! model checker can replace them.
//!
//! A normal build uses `core`'s atomics and the `spin` crate's mutex, exactly as if
//! [`crate::vcpu`] and [`crate::domain`] named them directly. The `loom` build
//! (`RUSTFLAGS="--cfg loom"`, only for `tests/loom.rs`) swaps in loom's atomics and a lock
//! made of loom's mutex, so that loom can run the protocol's threads through their
//! interleavings and memory orderings. Nothing else changes between the two builds, except
//! that the `const fn`s that create these primitives are plain `fn`s under loom
//! ([`const_unless_loom!`]), because loom's constructors are not `const`, that a guest's
//! clear is a swap under loom ([`store_racing_rmw`]), and that `Vcpu`'s size is not
//! asserted there.

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use spin::mutex::{SpinMutex as Lock, SpinMutexGuard as LockGuard};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
#[cfg(loom)]
pub(crate) use model::{Lock, LockGuard};

/// `atomic.store(value, order)`, for a store that races a compare-and-swap on the same
/// register without a lock (a guest's clear of a bank register against an injection logging
/// `STATUS`).
///
/// Under loom it is a swap whose result is dropped: loom 0.7 lets a plain store land between
/// the read and the write of a concurrent compare-and-swap (tokio-rs/loom#254, #389; the
/// fix, tokio-rs/loom#391, is not released), so the CAS's store can read as newer than a
/// store that came after it — an outcome the memory model forbids. A `Relaxed` or
/// `Release` swap is placed in the modification order as the store would be and only adds
/// that the swap reads its immediate predecessor, which loom enforces. It also continues a
/// release sequence where the store would break it; no model depends on that.
#[cfg(not(loom))]
#[inline(always)]
pub(crate) fn store_racing_rmw(atomic: &AtomicU64, value: u64, order: Ordering) {
    atomic.store(value, order);
}

/// See the normal build's version above.
#[cfg(loom)]
pub(crate) fn store_racing_rmw(atomic: &AtomicU64, value: u64, order: Ordering) {
    atomic.swap(value, order);
}

/// `const fn` in a normal build, `fn` under loom: for the constructors of types that hold
/// the primitives above.
macro_rules! const_unless_loom {
    ($(#[$attr:meta])* $vis:vis const fn $($rest:tt)*) => {
        #[cfg(not(loom))]
        $(#[$attr])* $vis const fn $($rest)*
        #[cfg(loom)]
        $(#[$attr])* $vis fn $($rest)*
    };
}
pub(crate) use const_unless_loom;

#[cfg(loom)]
mod model {
    use std::sync::PoisonError;

    /// The loom build's lock: loom's mutex, with `spin`'s `lock()` signature (no poisoning:
    /// a panic fails the model anyway).
    #[derive(Debug)]
    pub(crate) struct Lock<T>(loom::sync::Mutex<T>);

    /// A held [`Lock`].
    pub(crate) type LockGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Lock<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> LockGuard<'_, T> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner)
        }
    }
}
