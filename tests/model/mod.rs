//! vmce checked against a reference model, op by op. Shared by the property tests
//! (`tests/domain/properties.rs`, bounded, stable) and the `domain_ops` fuzz target
//! (`fuzz/fuzz_targets/domain_ops.rs`, nightly), which include this directory.
//!
//! - [`reference`]: the guest-visible behaviour written down plainly from
//!   docs/behaviour.md §3–§5 and the README's compatibility tables (a struct of `u64`s per
//!   vCPU and a `match` per table);
//! - [`records`]: what each of the five save formats carries, and its exact bytes;
//! - [`ops`]: the operations and the byte format both drivers decode them from;
//! - [`harness`] (with [`host`] for host errors, [`restores`] for saves and restores and
//!   [`stats`] for the paths reached): a live domain (1–4 vCPUs, host capabilities, restored caps and memory map
//!   from the input) and the model side by side. After every op: every `rdmsr` value and
//!   every `wrmsr` outcome of the op, every injection report and per-vCPU notification,
//!   every save's bytes or refusal, every decode and restore result, and then every vCPU's
//!   registers and pending flag and the broken-frame list must be the model's.
#![allow(dead_code)]

/// Returns `Err(message)` from the enclosing function when `cond` is false.
macro_rules! ensure {
    ($cond:expr, $($message:tt)+) => {
        if !$cond {
            return Err(format!($($message)+));
        }
    };
}

/// vmce's result against the model's: `Ok(Some((got, expected)))` when both accepted (the
/// caller compares what they hold), `Ok(None)` when both refused alike, and otherwise the
/// mismatch, named by `what`.
fn accepted_by_both<T, U, E>(
    what: impl std::fmt::Display,
    got: Result<T, E>,
    expected: Result<U, E>,
) -> Result<Option<(T, U)>, String>
where
    T: std::fmt::Debug,
    U: std::fmt::Debug,
    E: std::fmt::Debug + PartialEq,
{
    match (got, expected) {
        (Ok(got), Ok(expected)) => Ok(Some((got, expected))),
        (Err(got), Err(expected)) if got == expected => Ok(None),
        (got, expected) => Err(format!("{what}: vmce {got:x?}, model {expected:x?}")),
    }
}

pub mod harness;
pub mod host;
pub mod ops;
pub mod records;
pub mod reference;
pub mod restores;
pub mod stats;

#[allow(unused_imports)]
pub use harness::Harness;
#[allow(unused_imports)]
pub use stats::Stats;
