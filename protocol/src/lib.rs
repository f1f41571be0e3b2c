//! What vmce's QEMU test kernel (`kernel/`, package `vmce-test-kernel`) and its host-side
//! harness (`harness/`, package `vmce-qemu-harness`) say to each other, written once for both:
//!
//! - the boot command line: [`Scenario`] names and the other [`boot_args`];
//! - how a run ends: [`ExitCode`], written to QEMU's `isa-debug-exit` device ([`debug_exit`]);
//! - the fixed words of the kernel's console lines that the harness waits for ([`console`]);
//! - the migration channel (COM2): commands, replies, record-stream lines and the
//!   [`migration::RecordFormat`] names ([`migration`]);
//! - the SVM hypervisor's Linux runs ([`linux`]: scenarios, run parameters, console words).
//!
//! `no_std`, no dependencies: the kernel runs on bare metal, the harness on the host.

#![cfg_attr(not(test), no_std)]

/// Defines a fieldless enum whose variants each have a protocol name, with `ALL`, `name` and
/// `parse`: the list of variants and their names is written once.
macro_rules! named {
    (
        $(#[$meta:meta])*
        pub enum $enum:ident {
            $( $(#[doc = $doc:literal])* $variant:ident = $name:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $enum {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl $enum {
            /// Every variant, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),*];

            /// The name on the wire.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }

            /// Looks a variant up by its name on the wire.
            pub fn parse(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|known| known.name() == name)
            }
        }

        impl core::fmt::Display for $enum {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

pub mod linux;

named! {
    /// The guest program and machine set-up a run uses (`scenario=<name>` on the kernel
    /// command line). What each one runs is the kernel's scenario table
    /// (`kernel/src/scenario.rs`); what each one proves, the harness's suites.
    pub enum Scenario {
        /// Every vCPU reaches ring 3, says hello and finishes.
        Boot = "boot",
        /// One host machine check, reflected and handled by every vCPU.
        Mce = "mce",
        /// Two host machine checks in sequence.
        MceTwice = "mce-twice",
        /// One machine check whose rendezvous times out (a guest panic).
        MceTimeout = "mce-timeout",
        /// One machine check while every guest spins in ring 3.
        MceBusy = "mce-busy",
        /// One machine check delivered the pre-rework Xen way: to vCPU 0 only.
        LegacyVcpu0 = "legacy-vcpu0",
        /// Every vCPU has CR4.MCE clear when the machine check comes.
        Cr4Off = "cr4-off",
        /// A corrected error, found by the hypervisor's poll and never reflected.
        Corrected = "corrected",
        /// The guest's own probe of every row of the MSR table.
        MsrProbe = "msr-probe",
        /// An AMD guest on an AMD host: one vCPU takes the machine check.
        Amd = "amd",
        /// The Intel+LMCE profile on a host without LMCE_P: refused at domain creation.
        LmceProfile = "lmce-profile",
        /// The source of a live migration: driven through the migration channel.
        MigrateSource = "migrate-source",
        /// The destination of a live migration: restores from the migration channel first.
        MigrateDest = "migrate-dest",
        /// One machine check while the last vCPU is offline (with `CR4.MCE` clear): skipped.
        OfflineVcpu = "offline-vcpu",
        /// An SRAR on a CPU that runs no vCPU: consumed by no vCPU, delivered as action-optional.
        SrarUnconsumed = "srar-unconsumed",
        /// One machine check whose rendezvous the last vCPU skips; the others hold `MCIP` for good.
        McipHeld = "mcip-held",
        /// A console line held open on CPU 1 until a host machine check reaches that CPU.
        HeldLine = "held-line",
    }
}

impl Scenario {
    /// Whether the machine has the migration channel (COM2): the kernel programs it, the
    /// harness wires it to a socket.
    pub const fn uses_migration_channel(self) -> bool {
        matches!(self, Self::MigrateSource | Self::MigrateDest)
    }
}

/// The `key=value` words of the kernel command line (QEMU's `-append`).
pub mod boot_args {
    /// `scenario=<name>`: the [`Scenario`](crate::Scenario) to run (`boot` when absent; an
    /// unknown name is a kernel panic).
    pub const SCENARIO: &str = "scenario";
    /// `host-mces=<count>`: the run may only end after this many host machine checks (QEMU
    /// raises the other CPUs' #MCs of a broadcast injection asynchronously).
    pub const HOST_MACHINE_CHECKS: &str = "host-mces";
    /// `touch=<hex guest-physical address>`: what the `migrate-dest` guest reads after the
    /// restore.
    pub const TOUCH: &str = "touch";
}

/// QEMU's `isa-debug-exit` device, through which the kernel ends the run.
pub mod debug_exit {
    /// Its I/O port (`iobase`).
    pub const PORT: u16 = 0xF4;
    /// Its width in bytes (`iosize`).
    pub const SIZE: u16 = 4;
}

/// Why the kernel stopped the machine.
///
/// The kernel writes the discriminant to [`debug_exit::PORT`]; QEMU then exits with status
/// `(value << 1) | 1` ([`ExitCode::qemu_status`]), always odd, so never QEMU's own 0 (normal
/// exit, or a triple fault under `-no-reboot`) or 1 (QEMU error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// Every guest reported "done": QEMU status 33.
    Success = 0x10,
    /// Kernel panic or unexpected exception: QEMU status 35.
    KernelFailure = 0x11,
    /// A guest reported a panic (for example a rendezvous timeout): QEMU status 37.
    GuestPanic = 0x12,
    /// A guest was killed (unhandled fault, machine check it cannot take): QEMU status 39.
    GuestCrash = 0x13,
}

impl ExitCode {
    /// Every exit code.
    pub const ALL: [Self; 4] = [
        Self::Success,
        Self::KernelFailure,
        Self::GuestPanic,
        Self::GuestCrash,
    ];

    /// The value the kernel writes to the device.
    pub const fn device_value(self) -> u32 {
        self as u32
    }

    /// QEMU's exit status for this code.
    pub const fn qemu_status(self) -> i32 {
        ((self as i32) << 1) | 1
    }

    /// The code behind QEMU exit status `status`, if it is one of the kernel's.
    pub fn from_qemu_status(status: i32) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|code| code.qemu_status() == status)
    }
}

/// Fixed words of the kernel's console (COM1) lines that the harness waits for. Every line
/// is one machine-readable event; the rest of each line is the behaviour under test, and the
/// suites spell it out.
pub mod console {
    /// `READY cpus=<n>`: every guest is running.
    pub const READY: &str = "READY";
    /// `DONE`: every guest finished; the machine stops with `ExitCode::Success`.
    pub const DONE: &str = "DONE";
    /// `VCPU <n> <text>`: a line a guest printed (through its console hypercalls).
    pub const VCPU: &str = "VCPU";
    /// `GUEST PANIC <reason> vcpu=<n>`: a guest gave up.
    pub const GUEST_PANIC: &str = "GUEST PANIC";
    /// `KERNEL PANIC cpu=<n>: <message>`: the kernel stopped.
    pub const KERNEL_PANIC: &str = "KERNEL PANIC";
}

/// The migration channel: line-oriented ASCII on the kernel's COM2, one line each way per
/// step; the protocol's table is in the kernel's `migration` module.
pub mod migration {
    /// Harness to source: `precopy <format>`, save while the guests run.
    pub const PRECOPY: &str = "precopy";
    /// Harness to source: `stop`, park every vCPU (stop-and-copy).
    pub const STOP: &str = "stop";
    /// Harness to source: `final <format>`, save the stopped domain.
    pub const FINAL: &str = "final";
    /// Harness to source: `resume`, abandon the migration.
    pub const RESUME: &str = "resume";

    /// Source's reply to `stop`: `STOPPED vcpus=<n>`.
    pub const STOPPED: &str = "STOPPED";
    /// Source's reply to `resume`.
    pub const RESUMED: &str = "RESUMED";
    /// Source's reply to a command it cannot run: `ERROR <why>`.
    pub const ERROR: &str = "ERROR";
    /// Destination's reply once restored: `RESTORED records=<k>`.
    pub const RESTORED: &str = "RESTORED";
    /// Destination's reply when the restore failed: `FAILED <why>`.
    pub const FAILED: &str = "FAILED";

    /// A record stream's first line: `BEGIN <phase> format=<format> vcpus=<n>`.
    pub const BEGIN: &str = "BEGIN";
    /// One record, hex-encoded: `RECORD <hex>`.
    pub const RECORD: &str = "RECORD";
    /// One refusal, with vmce's reason: `REFUSED <owner>: <reason>`.
    pub const REFUSED: &str = "REFUSED";
    /// A stream's last line: `END records=<k>` or `END refused=<k>`.
    pub const END: &str = "END";

    named! {
        /// A record format the source can write; the destination says which one it reads.
        pub enum RecordFormat {
            /// vmce's native records, version 2: carries the in-flight machine check
            /// (`MCG_STATUS`, bank 1, the pending #MC) and the domain's broken frames.
            NativeV2 = "native-v2",
            /// Native version 1: what Xen 4.10 holds, no domain record.
            NativeV1 = "native-v1",
            /// Xen 4.10's `VMCE_VCPU` HVM records: caps, `MCi_CTL2`, `MCG_EXT_CTL`; no domain
            /// record.
            Xen4_10 = "xen-4.10",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_variant_and_names_are_distinct() {
        for (index, scenario) in Scenario::ALL.iter().enumerate() {
            assert_eq!(Scenario::parse(scenario.name()), Some(*scenario));
            assert!(
                Scenario::ALL[..index]
                    .iter()
                    .all(|other| other.name() != scenario.name())
            );
        }
        for format in migration::RecordFormat::ALL {
            assert_eq!(migration::RecordFormat::parse(format.name()), Some(*format));
        }
        assert_eq!(Scenario::parse("no-such-scenario"), None);
        for scenario in linux::LinuxScenario::ALL {
            assert_eq!(linux::LinuxScenario::from_code(scenario.code()), *scenario);
            assert_eq!(
                linux::LinuxScenario::parse(scenario.name()),
                Some(*scenario)
            );
        }
        for profile in linux::LinuxProfile::ALL {
            assert_eq!(linux::LinuxProfile::from_code(profile.code()), *profile);
        }
    }

    #[test]
    fn exit_codes_map_to_odd_qemu_statuses_and_back() {
        let statuses = ExitCode::ALL.map(ExitCode::qemu_status);
        assert_eq!(statuses, [33, 35, 37, 39]);
        for code in ExitCode::ALL {
            assert_eq!(ExitCode::from_qemu_status(code.qemu_status()), Some(code));
        }
        assert_eq!(ExitCode::from_qemu_status(0), None);
        assert_eq!(ExitCode::from_qemu_status(1), None);
    }
}
