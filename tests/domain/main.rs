//! The whole domain, every floor through `Domain`, against the reference model of
//! `tests/model` (docs/behaviour.md §2–§5 written plainly): the stable mirror of the
//! `domain_ops` fuzz target. One test binary (`cargo test --test domain`).

#[path = "../common/mod.rs"]
mod common;
#[path = "../model/mod.rs"]
mod model;

mod properties;
