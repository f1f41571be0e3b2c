//! Index clamping against speculative out-of-bounds access (Spectre v1).
//!
//! # Background
//! A guest chooses the MSR index of every `rdmsr`/`wrmsr`, so the bank number derived from it
//! is attacker-controlled. A bounds check alone is a branch the CPU may mispredict and then
//! run the array access speculatively with an out-of-range index. vmce computes the index it
//! actually uses with [`clamp_index`] (or masks index and value with [`index_mask`]), a data
//! dependency rather than a branch, so even a mispredicted path can only touch an in-bounds
//! element.
//!
//! The mask must also survive the optimizer. Written as plain arithmetic next to the bounds
//! check it guards, it is provably redundant, and release builds dropped it: the `rdmsr` of
//! `MCi_STATUS` indexed with the raw bank after a `ja`. On x86_64 the mask therefore comes
//! from `cmp`/`sbb` in `asm!` ([`crate::arch::nospec`]), and
//! `tests/emulation/nospec_codegen.rs` reads the release machine code of the exit paths to
//! check that it is there.

/// `index` when `index < len`, otherwise 0, computed without a conditional branch and
/// without letting the optimizer tie the result back to `index`.
///
/// Both arguments must be below `2^(usize::BITS - 1)`, which every array length and every
/// bank number is. For `len == 0` the result is 0, which `slice::get` still rejects.
///
/// On x86_64 the mask comes from [`crate::arch::nospec::index_mask`] (`cmp`/`sbb` in
/// `asm!`). Elsewhere it is plain arithmetic, which is correct but which an optimizer may
/// fold into the bounds check it sits next to.
#[inline(always)]
pub fn clamp_index(index: usize, len: usize) -> usize {
    index & index_mask(index, len)
}

/// All ones when `index < len`, otherwise 0, computed as [`clamp_index`] computes it: for
/// masking both an index and the value read with it, so that an out-of-range index reads 0
/// without a branch.
#[inline(always)]
pub fn index_mask(index: usize, len: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        crate::arch::nospec::index_mask(index, len)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // index < len  ⇔  index - len wraps to a value with the top bit set.
        (index.wrapping_sub(len) as isize >> (usize::BITS - 1)) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_range_indices_pass_out_of_range_become_zero() {
        for len in 1..40usize {
            for index in 0..300usize {
                let clamped = clamp_index(index, len);
                assert!(clamped < len);
                if index < len {
                    assert_eq!(clamped, index);
                } else {
                    assert_eq!(clamped, 0);
                }
            }
        }
        assert_eq!(clamp_index(usize::MAX >> 1, 2), 0);
    }
}
