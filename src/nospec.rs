//! Index clamping against speculative out-of-bounds access (Spectre v1).
//!
//! # Background
//! A guest chooses the MSR index of every `rdmsr`/`wrmsr`, so the bank number derived from it
//! is attacker-controlled. A bounds check alone is a branch the CPU may mispredict and then
//! run the array access speculatively with an out-of-range index. vmce first decides with an
//! ordinary comparison (the architectural answer), then computes the index it actually uses
//! with [`clamp_index`], a data dependency rather than a branch, so even a mispredicted path
//! can only touch an in-bounds element.

/// `index` when `index < len`, otherwise 0, computed without a conditional branch.
///
/// Both arguments must be below `2^(usize::BITS - 1)`, which every array length and every
/// bank number is. For `len == 0` the result is 0, which `slice::get` still rejects.
#[inline(always)]
pub const fn clamp_index(index: usize, len: usize) -> usize {
    // index < len  ⇔  index - len wraps to a value with the top bit set.
    let mask = (index.wrapping_sub(len) as isize >> (usize::BITS - 1)) as usize;
    index & mask
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
