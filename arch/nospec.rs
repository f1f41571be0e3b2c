//! The speculation barrier under [`crate::nospec::clamp_index`].
//!
//! # Background
//! A bounds mask written in plain Rust (`(index - len) >> 63`) is arithmetic the optimizer
//! can see through: next to the bounds check it guards, it proves the mask all-ones and
//! indexes with the raw guest value again, so a mispredicted check reads out of bounds.
//! Built that way, vmce's `rdmsr` of `MCi_STATUS` compiled to `cmp bank, 1; ja out; load
//! [base + 24 * bank]`. Here the mask comes from `cmp`/`sbb` inside `asm!`, which the
//! compiler cannot look into: the load must wait for the mask, and the mask is computed by
//! the ALU from the actual index, not predicted.

use core::arch::asm;

/// All ones when `index < len`, otherwise 0; computed by `cmp`/`sbb`, opaque to the
/// optimizer, with no branch.
#[inline(always)]
pub fn index_mask(index: usize, len: usize) -> usize {
    let mask: usize;
    // SAFETY: two register-only instructions: `cmp` sets CF when index < len (unsigned), and
    // `sbb` turns CF into 0 or all ones. No memory, no stack, only the flags are clobbered.
    unsafe {
        asm!(
            "cmp {index}, {len}",
            "sbb {mask}, {mask}",
            index = in(reg) index,
            len = in(reg) len,
            mask = lateout(reg) mask,
            options(pure, nomem, nostack),
        );
    }
    mask
}
