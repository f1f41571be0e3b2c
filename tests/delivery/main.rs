//! Delivery of a reflected error to a domain's vCPUs (docs/behaviour.md §4), alone and
//! under concurrent guest MSR traffic and saves. One test binary (`cargo test --test
//! delivery`).
//!
//! - [`injection`]: the delivery rules, per profile.
//! - [`delivery`]: what real guests need: consistent domain saves, vCPUs that are not up,
//!   banks filled `STATUS` last, unconsumed action-required errors downgraded.
//! - [`direct`]: a guest machine check built directly (`GuestMce::direct`), accepted or refused.
//! - [`concurrency`]: injections on one CPU while every vCPU does MSR traffic on others.

#[path = "../common/mod.rs"]
mod common;

mod concurrency;
mod delivery;
mod direct;
mod injection;
