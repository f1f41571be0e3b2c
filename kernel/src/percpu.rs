//! Per-CPU storage: one slot per local APIC ID, each touched only by its own CPU.

#![cfg(target_os = "none")]

use core::cell::UnsafeCell;

/// Most CPUs the kernel supports (APIC IDs 0..MAX_CPUS).
pub const MAX_CPUS: usize = 8;

/// An array with one `T` per CPU.
///
/// The kernel's rule: CPU `n` only ever accesses slot `n`, from code that the same CPU does
/// not re-enter (interrupts are off in the kernel; the only exception, the host #MC handler,
/// never touches these slots while it interrupted kernel code).
pub struct PerCpu<T>([UnsafeCell<T>; MAX_CPUS]);

// SAFETY: slots are never shared between CPUs (see the type's rule), so handing the array
// to several CPUs cannot create a data race on any slot.
unsafe impl<T: Send> Sync for PerCpu<T> {}

impl<T> PerCpu<T> {
    /// Wraps one value per CPU.
    pub const fn new(slots: [UnsafeCell<T>; MAX_CPUS]) -> Self {
        Self(slots)
    }

    /// Raw pointer to CPU `cpu`'s slot.
    ///
    /// # Panics
    /// When `cpu >= MAX_CPUS`.
    pub fn slot(&self, cpu: u32) -> *mut T {
        self.0[cpu as usize].get()
    }

    /// Exclusive access to CPU `cpu`'s slot.
    ///
    /// # Safety
    /// Only CPU `cpu` calls this (or the BSP before CPU `cpu` runs), and no other reference
    /// to the slot is alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get_mut(&self, cpu: u32) -> &mut T {
        // SAFETY: exclusivity is the caller's contract.
        unsafe { &mut *self.slot(cpu) }
    }
}
