//! The scenario table: what each [`Scenario`] of the protocol runs on this kernel, in one
//! place. The names and the list are the protocol's (`vmce-qemu-protocol`), shared with the
//! harness; the match below is exhaustive, so a scenario added there must be given its set-up
//! here.

#![cfg(target_os = "none")]

use crate::guest::{
    MCE_BUSY, MCE_RENDEZVOUS_TIMES_OUT, boot_guest, corrected_guest, cr4_off_guest,
    held_line_guest, local_guest, mce_guest, mce_timeout_guest, mcip_held_guest,
    migrate_dest_guest, migrate_source_guest, msr_probe_guest, offline_guest,
    srar_unconsumed_guest,
};
use crate::hv::Delivery;
use vmce::{Profile, Vendor};
use vmce_qemu_protocol::Scenario;

/// A guest program's entry point, entered in ring 3 with rdi = the vCPU, rsi = the vCPU
/// count and rdx = the scenario's parameter.
pub type Program = extern "C" fn(u64, u64, u64) -> !;

/// How a scenario sets the machine up.
#[derive(Clone, Copy)]
pub struct Setup {
    /// What every vCPU runs.
    pub program: Program,
    /// The program's third argument.
    pub parameter: u64,
    /// How the hypervisor delivers reflected errors.
    pub delivery: Delivery,
    /// The guest asks for Intel+LMCE whatever the host is (otherwise it gets the profile of
    /// the host's vendor).
    pub lmce_profile: bool,
    /// The last CPU runs no vCPU but the hypervisor alone, so that an SRAR raised there was
    /// consumed by no vCPU.
    pub spare_cpu: bool,
}

/// `program` with `parameter`, on every CPU, the architectural delivery and the host
/// vendor's profile.
const fn runs(program: Program, parameter: u64) -> Setup {
    Setup {
        program,
        parameter,
        delivery: Delivery::Architectural,
        lmce_profile: false,
        spare_cpu: false,
    }
}

impl Setup {
    /// The set-up of `scenario`.
    pub fn of(scenario: Scenario) -> Self {
        match scenario {
            Scenario::Boot => runs(boot_guest, 0),
            Scenario::Mce => runs(mce_guest, 1),
            Scenario::MceTwice => runs(mce_guest, 2),
            Scenario::MceTimeout => runs(mce_timeout_guest, 0),
            Scenario::MceBusy => runs(mce_guest, MCE_BUSY | 1),
            Scenario::LegacyVcpu0 => Self {
                delivery: Delivery::LegacyVcpu0,
                ..runs(mce_guest, 1 | MCE_RENDEZVOUS_TIMES_OUT)
            },
            Scenario::Cr4Off => runs(cr4_off_guest, 0),
            Scenario::Corrected => runs(corrected_guest, 0),
            Scenario::MsrProbe => runs(msr_probe_guest, 0),
            Scenario::Amd => runs(local_guest, 0),
            Scenario::LmceProfile => Self {
                lmce_profile: true,
                ..runs(boot_guest, 0)
            },
            Scenario::MigrateSource => runs(migrate_source_guest, 0),
            Scenario::MigrateDest => runs(migrate_dest_guest, 0),
            Scenario::OfflineVcpu => runs(offline_guest, 0),
            Scenario::SrarUnconsumed => Self {
                spare_cpu: true,
                ..runs(srar_unconsumed_guest, 0)
            },
            Scenario::McipHeld => runs(mcip_held_guest, 0),
            Scenario::HeldLine => runs(held_line_guest, 0),
        }
    }

    /// How many of the machine's `cpus` run a vCPU of the domain (vCPU `n` on CPU `n`): all,
    /// or all but the last with [`Setup::spare_cpu`] (at least one).
    pub fn vcpus(&self, cpus: u32) -> u32 {
        if self.spare_cpu {
            cpus.saturating_sub(1).max(1)
        } else {
            cpus
        }
    }

    /// The guest's profile on a host of vendor `host`.
    pub fn profile(&self, host: Vendor) -> Profile {
        match (self.lmce_profile, host) {
            (true, _) => Profile::IntelLmce,
            (false, Vendor::Intel) => Profile::Intel,
            (false, Vendor::Amd) => Profile::Amd,
        }
    }
}
