//! The guests: ring-3 programs in the `.guest` sections of the kernel image.
//!
//! One guest context runs per CPU (vCPU `n` on CPU `n`; the scenario table,
//! [`crate::scenario`], may leave the last CPU without one), all sharing this code and the
//! guest data ([`shared`]), like the vCPUs of one SMP guest. A guest only reaches the kernel through `int 0x80` hypercalls and through
//! the faults of privileged instructions: `rdmsr`/`wrmsr` at CPL 3 raise #GP, which the
//! kernel emulates.
//!
//! Only the `.guest` pages are user-accessible, so guest code must never call into kernel
//! text or read kernel data: every function here is `#[inline(always)]` or placed in
//! `.guest.text`, string constants live in `.guest.rodata` ([`guest_text!`]), there is no
//! `core::fmt`, no panicking index and no slice comparison (which could call `memcmp`).
//! MSR numbers and register bits come from [`vmce::registers`] as `const` items only
//! (`MciStatus::VAL.bits()` evaluated at compile time), never as a call into vmce's text.
//! A slip shows up as a guest page fault (`GUEST CRASH ... exception 14`).
//!
//! | file | role |
//! |---|---|
//! | [`runtime`] | the primitives: hypercalls, trapped `rdmsr`/`wrmsr`, start, finish, a read that survives a machine check |
//! | [`shared`] | guest memory shared by all vCPUs |
//! | [`handlers`] | the #MC handler (Linux's way: banks, rendezvous, recovery points) and the #GP handler |
//! | [`programs`] | one program per scenario |
//! | [`probe`] | the MSR-table probe (`msr-probe`) |

#![cfg(target_os = "none")]

/// Guest-side vCPU limit (a power of two, so `& (N - 1)` indexes without a bounds check).
const GUEST_MAX_VCPUS: usize = 8;
/// Where guest-physical 0 appears in the guests' (identity-mapped) address space.
const GUEST_RAM_BASE: u64 = crate::paging::GUEST_RAM_HOST_FRAME << 12;
/// How long (TSC ticks, about 2 s under QEMU TCG, whose TSC runs at the host's rate) a vCPU
/// of a scenario that tests the timeout ([`programs::MCE_RENDEZVOUS_TIMES_OUT`]) waits for the others
/// in the machine-check rendezvous before declaring a guest panic.
const RENDEZVOUS_TIMEOUT: u64 = 5_000_000_000;

/// A byte-string constant placed in guest-readable memory.
macro_rules! guest_text {
    ($text:literal) => {{
        #[unsafe(link_section = ".guest.rodata")]
        static TEXT: [u8; $text.len()] = *$text;
        &TEXT
    }};
}

/// Appends guest text and numbers to this vCPU's console line, in order: each part a byte
/// string literal (placed with [`guest_text!`]), `hex(value)` or `dec(value)`. Expands to the
/// `puts`/`put_hex`/`put_dec` calls of [`runtime`], which must be in scope.
macro_rules! guest_print {
    () => {};
    ($text:literal $(, $($rest:tt)*)?) => {
        puts(guest_text!($text));
        $(guest_print!($($rest)*);)?
    };
    (hex($value:expr) $(, $($rest:tt)*)?) => {
        put_hex($value);
        $(guest_print!($($rest)*);)?
    };
    (dec($value:expr) $(, $($rest:tt)*)?) => {
        put_dec($value);
        $(guest_print!($($rest)*);)?
    };
}

// After `guest_text!` and `guest_print!`, which they use.
mod handlers;
mod probe;
mod programs;
mod runtime;
mod shared;

pub use probe::msr_probe_guest;
pub use programs::*;
pub use shared::set_touch_address;
