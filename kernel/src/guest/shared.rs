//! Guest memory shared by all vCPUs: the guest's own globals, in `.guest.data`, which its
//! trap handlers and programs both use.

use super::GUEST_MAX_VCPUS;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[unsafe(link_section = ".guest.data")]
pub(super) static NR_VCPUS: AtomicU32 = AtomicU32::new(0);
/// Arrivals at the machine-check rendezvous, over all rounds.
#[unsafe(link_section = ".guest.data")]
pub(super) static ARRIVED: AtomicU32 = AtomicU32::new(0);
/// vCPUs the guest took offline, which the rendezvous does not wait for. They go offline
/// before any machine check: [`ARRIVED`] counts over all rounds, so the number of vCPUs
/// that arrive each round must not change between rounds.
#[unsafe(link_section = ".guest.data")]
pub(super) static OFFLINE_VCPUS: AtomicU32 = AtomicU32::new(0);
/// vCPU that deliberately misses the rendezvous (`u32::MAX`: none).
#[unsafe(link_section = ".guest.data")]
pub(super) static SKIP_RENDEZVOUS: AtomicU32 = AtomicU32::new(u32::MAX);
/// How long the rendezvous waits before the guest panics (TSC ticks); 0, the default: as
/// long as it takes. Only the scenarios about the timeout set it: anywhere else a timeout
/// would make the outcome depend on how fast the host runs the vCPUs, and a rendezvous
/// that never completes is caught by the harness's own deadline.
#[unsafe(link_section = ".guest.data")]
pub(super) static RENDEZVOUS_TIMEOUT_TICKS: AtomicU64 = AtomicU64::new(0);
/// vCPUs of `mce-busy` (all but vCPU 0) that are spinning in ring 3 and will not enter the
/// kernel again before their machine check.
#[unsafe(link_section = ".guest.data")]
pub(super) static SPINNING_IN_RING_3: AtomicU32 = AtomicU32::new(0);
/// Machine checks fully handled, per vCPU.
#[unsafe(link_section = ".guest.data")]
pub(super) static ROUNDS_DONE: [AtomicU32; GUEST_MAX_VCPUS] =
    [const { AtomicU32::new(0) }; GUEST_MAX_VCPUS];
/// #GP faults received, per vCPU.
#[unsafe(link_section = ".guest.data")]
pub(super) static GP_COUNT: [AtomicU32; GUEST_MAX_VCPUS] =
    [const { AtomicU32::new(0) }; GUEST_MAX_VCPUS];
/// Last error seen per vCPU: MCG_STATUS, MCi_STATUS, MCi_ADDR, MCi_MISC.
#[unsafe(link_section = ".guest.data")]
pub(super) static LAST_ERROR: [[AtomicU64; 4]; GUEST_MAX_VCPUS] =
    [const { [const { AtomicU64::new(0) }; 4] }; GUEST_MAX_VCPUS];

/// Machine checks are local (AMD, LMCE): the handler does not rendezvous.
#[unsafe(link_section = ".guest.data")]
pub(super) static LOCAL_MACHINE_CHECKS: AtomicU32 = AtomicU32::new(0);
/// Machine checks fully handled by any vCPU.
#[unsafe(link_section = ".guest.data")]
pub(super) static HANDLED_ANYWHERE: AtomicU32 = AtomicU32::new(0);
/// Set by vCPU 0 when its part of a scenario is over; the others wait for it.
#[unsafe(link_section = ".guest.data")]
pub(super) static LEADER_DONE: AtomicU32 = AtomicU32::new(0);
/// Per vCPU, the recovery point of a read that may consume a machine check (0: none): an
/// action-required #MC resumes there instead of at the read, as Linux's machine-check
/// exception-table fixups do.
#[unsafe(link_section = ".guest.data")]
pub(super) static RECOVERY_RIP: [AtomicU64; GUEST_MAX_VCPUS] =
    [const { AtomicU64::new(0) }; GUEST_MAX_VCPUS];
/// Non-zero: an action-required #MC with no recovery point armed is a guest panic, as it is
/// for Linux when the interrupted context cannot be fixed up (kernel or idle).
#[unsafe(link_section = ".guest.data")]
pub(super) static ACTION_REQUIRED_NEEDS_RECOVERY: AtomicU32 = AtomicU32::new(0);
/// vCPUs that reported their state after a restore (`migrate-dest`).
#[unsafe(link_section = ".guest.data")]
pub(super) static RESUMED: AtomicU32 = AtomicU32::new(0);
/// The guest-physical address the `migrate-dest` guest reads after the restore (0: none);
/// written by the kernel from the command line before any guest runs.
#[unsafe(link_section = ".guest.data")]
pub(super) static TOUCH_GUEST_PHYSICAL: AtomicU64 = AtomicU64::new(0);

/// Sets the address the `migrate-dest` guest reads (the kernel side of a boot parameter).
pub fn set_touch_address(guest_physical: u64) {
    TOUCH_GUEST_PHYSICAL.store(guest_physical, Ordering::Release);
}

#[inline(always)]
pub(super) fn slot(vcpu: u64) -> usize {
    vcpu as usize & (GUEST_MAX_VCPUS - 1)
}
