//! What the SVM hypervisor (`hypervisor/`, package `vmce-svm-hypervisor`) and the harness's
//! Linux suite (`harness/src/linux.rs`) say to each other. The guest is Debian's stock Linux;
//! its own console lines are the verdict, and the hypervisor's lines (prefixed
//! [`console::HYPERVISOR`]) tell what it did.
//!
//! The run's parameters are 64-bit words the harness puts into host memory with QEMU's
//! `-device loader` ([`params`]); the hypervisor reads them before it builds the guest.

named! {
    /// What the hypervisor does once the guest says [`console::READY`], and how Linux is
    /// booted for it. The parameter word is the variant's position in [`LinuxScenario::ALL`]
    /// ([`LinuxScenario::code`]).
    pub enum LinuxScenario {
        /// 1: boot only; Linux sees the profile (two banks, no MCE warnings).
        Boot = "boot",
        /// 2: a memory-scrub error (SRAO) on a free guest page, from the simulated host.
        Srao = "srao",
        /// 3: a user process reads a page whose frame is broken: the frame is unmapped in
        /// the nested page tables and the nested page fault becomes
        /// `Domain::inject_broken_access` on the consuming vCPU.
        BrokenFrame = "broken-frame",
        /// 4: the SRAO of scenario 2 on every vCPU (broadcast, the kick).
        Broadcast = "broadcast",
        /// 5: the same error delivered to vCPU 0 only (legacy delivery).
        LegacyVcpu0 = "legacy",
        /// 6: Linux booted with `mce=off`, then the SRAO: no vCPU can take it.
        MceOff = "mce-off",
        /// 6 (second half): two errors back to back, the second while `MCG_STATUS.MCIP` is
        /// still set from the first.
        McipStillSet = "mcip",
        /// 7: a corrected error on the host: never reflected.
        Corrected = "corrected",
        /// The SRAO of scenario 2 raised while a vCPU runs a user process, that vCPU being
        /// the consumer: for the AMD profile, whose Linux rules make an uncorrected error in
        /// kernel context fatal.
        SraoUserMode = "srao-user",
    }
}

impl LinuxScenario {
    /// The parameter word for [`params::SCENARIO`].
    pub fn code(self) -> u64 {
        Self::ALL
            .iter()
            .position(|known| *known == self)
            .map_or(0, |index| index as u64)
    }

    /// The scenario behind a parameter word (unknown words are [`LinuxScenario::Boot`]).
    pub fn from_code(code: u64) -> Self {
        usize::try_from(code)
            .ok()
            .and_then(|index| Self::ALL.get(index))
            .copied()
            .unwrap_or(Self::Boot)
    }
}

named! {
    /// The guest's vmce profile, and the vendor its CPUID shows.
    pub enum LinuxProfile {
        /// `GenuineIntel`, family 6 model 0x55; vmce's Intel profile (`SER_P`).
        Intel = "intel",
        /// `AuthenticAMD`, family 0x17; vmce's AMD profile, SUCCOR and McaOverflowRecov.
        Amd = "amd",
    }
}

impl LinuxProfile {
    /// The parameter word for [`params::PROFILE`].
    pub const fn code(self) -> u64 {
        match self {
            Self::Intel => 0,
            Self::Amd => 1,
        }
    }

    /// The profile behind a parameter word (unknown words are [`LinuxProfile::Intel`]).
    pub const fn from_code(code: u64) -> Self {
        if code == 1 { Self::Amd } else { Self::Intel }
    }
}

/// Host-physical addresses of the run's parameter words (`-device loader,addr=…,data-len=8`),
/// and of the images the hypervisor loads.
pub mod params {
    /// [`LinuxScenario::code`](super::LinuxScenario::code).
    pub const SCENARIO: u64 = 0x27ff_ffe0;
    /// How many vCPUs (1..=4; QEMU's `-smp` must be at least this).
    pub const VCPUS: u64 = 0x27ff_ffe8;
    /// [`LinuxProfile::code`](super::LinuxProfile::code).
    pub const PROFILE: u64 = 0x27ff_fff0;
    /// Size in bytes of the initramfs at [`INITRD`].
    pub const INITRD_SIZE: u64 = 0x27ff_fff8;
    /// Where the harness loads Debian's `vmlinux` (the ELF, raw).
    pub const VMLINUX: u64 = 0x2000_0000;
    /// Where the harness loads the initramfs (raw).
    pub const INITRD: u64 = 0x2800_0000;
    /// The most vCPUs the hypervisor runs.
    pub const MAX_VCPUS: u32 = 4;
}

/// Fixed words of the console lines. The guest's `/init` prints lines starting with
/// [`console::GUEST`]; the hypervisor's start with [`console::HYPERVISOR`]; everything else
/// is Linux's own log.
pub mod console {
    /// Prefix of every hypervisor line.
    pub const HYPERVISOR: &str = "[hv] ";
    /// Prefix of every line the guest's `/init` prints.
    pub const GUEST: &str = "VMCE-GUEST";
    /// The guest's line that makes the hypervisor raise the scenario's error.
    pub const READY: &str = "VMCE-GUEST READY";
    /// `VMCE-GUEST victim pid=<pid>`: a process spins in user mode on the last vCPU (scenario
    /// 3, [`LinuxScenario::SraoUserMode`](super::LinuxScenario::SraoUserMode)); the line
    /// repeats once a second.
    pub const VICTIM: &str = "VMCE-GUEST victim pid=";
    /// `VMCE-GUEST alive <n> mce-exceptions: <count per CPU>`: once a second after READY.
    pub const ALIVE: &str = "VMCE-GUEST alive";
    /// The hypervisor ends the machine: a vCPU that is up cannot take a machine check.
    pub const DOMAIN_SHUTDOWN: &str = "[hv] DOMAIN SHUTDOWN";
    /// Hypervisor lines that mean it failed (it stops the machine after each).
    pub const HYPERVISOR_FAILURES: &[&str] = &[
        "[hv] HOST EXCEPTION",
        "[hv] HOST PANIC",
        "[hv] FATAL",
        "guest SHUTDOWN (triple fault)",
        "unexpected #VMEXIT",
        "unexpected nested page fault",
    ];
}
