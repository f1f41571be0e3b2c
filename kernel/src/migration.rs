//! Live migration of the domain between two machines over the migration channel (COM2, see
//! `channel`), with vmce's records carrying the virtual MCA, an in-flight machine check
//! included.
//!
//! # The protocol (one ASCII line each way per step)
//!
//! Source (`scenario=migrate-source`): CPU 0's local APIC timer polls the channel every
//! 2 ms for commands ([`source`]):
//!
//! | command            | the source                                                      | reply |
//! |--------------------|-----------------------------------------------------------------|-------|
//! | `precopy <format>` | saves while the guests run                                      | a record stream |
//! | `stop`             | pauses every vCPU: stop-and-copy begins                         | `STOPPED vcpus=<n>` once every vCPU is parked |
//! | `final <format>`   | saves the paused domain                                         | a record stream; then the machine stops (exit status 33): the domain lives on the destination. After a refused stream the domain stays paused here |
//! | `resume`           | abandons the migration: the domain runs on here                | `RESUMED` |
//! | anything else      | nothing                                                         | `ERROR <why>` |
//!
//! `<format>` is what the destination reads: `native-v2`, `native-v1` or `xen-4.10`
//! (`vmce_qemu_protocol::migration::RecordFormat`); every
//! command and reply word is `vmce_qemu_protocol::migration`'s.
//!
//! A record stream is one record per line, hex-encoded, the domain record first (native V2
//! only; the other formats have none):
//!
//! ```text
//! BEGIN <phase> format=<format> vcpus=<n>
//! RECORD <hex bytes of one record>
//! END records=<k>
//! ```
//!
//! When the format cannot carry the domain's state (vmce's `LossPolicy::Refuse`), no record
//! is sent; every refusal is, with vmce's reason:
//!
//! ```text
//! BEGIN final format=native-v1 vcpus=4
//! REFUSED vCPU 0: the destination format cannot carry MCG_STATUS, bank 1, the pending #MC: ...
//! END refused=<k>
//! ```
//!
//! Destination (`scenario=migrate-dest`): before any guest runs, the bootstrap processor
//! reads one record stream (native formats only) from the channel, restores it, keeps the
//! broken frames unmapped, and replies `RESTORED records=<k>`; on any error it replies
//! `FAILED <why>` and stops with a kernel failure ([`destination`]).

#![cfg(target_os = "none")]

pub mod destination;
pub mod source;
