//! The x86_64 hardware layer: the only place in vmce that touches real MSRs or CPUID, or
//! uses inline assembly (the speculation barrier of [`nospec`]).
//!
//! # Background
//! The portable core (everything under `src/`) never executes `rdmsr`, `wrmsr` or `cpuid`. It
//! talks to the host through [`crate::host::MsrAccess`] and [`crate::host::HostCapabilities`],
//! which tests replace with [`crate::host::SimulatedHost`]. This module provides the real
//! implementations for a hypervisor running in ring 0. (The bare-metal kernel of the QEMU
//! tests is the workspace member `kernel/`, which calls these like any hypervisor would.)
//!
//! Every `unsafe` block in the crate lives here, each with a `// SAFETY:` line.

pub mod nospec;

use crate::host::{HostCapabilities, MsrAccess};
use crate::registers::{McgCap, Vendor, msr};
use x86_64::registers::model_specific::Msr;

/// Real MSR access through `rdmsr` / `wrmsr`.
///
/// # Invariants the caller upholds
/// Constructing one is `unsafe`: the holder must run at CPL 0, and the crate only ever asks it
/// for MSRs that the host's own `IA32_MCG_CAP` says exist (banks below its count, `MCG_CTL`
/// only with `CTL_P`), so no access can fault.
#[derive(Debug)]
pub struct HardwareMsrs {
    _private: (),
}

impl HardwareMsrs {
    /// Creates the accessor.
    ///
    /// # Safety
    /// The caller runs at CPL 0 on a CPU with MCA (`CPUID.1:EDX.MCA`), and the MSRs this
    /// accessor touches are not concurrently reprogrammed by another agent on this CPU.
    pub const unsafe fn new() -> Self {
        Self { _private: () }
    }
}

impl MsrAccess for HardwareMsrs {
    fn read(&mut self, index: u32) -> u64 {
        // SAFETY: `new`'s contract gives CPL 0, and callers only name MSRs that exist on this
        // host (the trait's invariant), so `rdmsr` cannot fault and has no side effects.
        unsafe { Msr::new(index).read() }
    }

    fn write(&mut self, index: u32, value: u64) {
        let mut register = Msr::new(index);
        // SAFETY: as for `read`; the crate only writes MCA status/control registers, which
        // cannot break memory safety.
        unsafe { register.write(value) }
    }
}

/// Reads the host's machine-check capabilities: the CPU vendor from CPUID leaf 0 and
/// `IA32_MCG_CAP` when CPUID leaf 1 reports both MCE and MCA.
///
/// Returns `None` on a CPU without MCA, or of a vendor vmce does not model: neither can back
/// any profile.
///
/// # Safety
/// The caller runs at CPL 0 (reading `IA32_MCG_CAP` faults otherwise).
pub unsafe fn host_capabilities() -> Option<HostCapabilities> {
    let leaf0 = core::arch::x86_64::__cpuid(0);
    let vendor = Vendor::from_cpuid_vendor(leaf0.ebx, leaf0.edx, leaf0.ecx)?;
    let leaf1 = core::arch::x86_64::__cpuid(1);
    const CPUID1_EDX_MCE: u32 = 1 << 7;
    const CPUID1_EDX_MCA: u32 = 1 << 14;
    if leaf1.edx & (CPUID1_EDX_MCE | CPUID1_EDX_MCA) != (CPUID1_EDX_MCE | CPUID1_EDX_MCA) {
        return None;
    }
    // SAFETY: CPL 0 by this function's contract, and CPUID just reported MCA, so
    // IA32_MCG_CAP exists.
    let raw = unsafe { Msr::new(msr::IA32_MCG_CAP).read() };
    Some(HostCapabilities::new(vendor, McgCap::from_bits_retain(raw)))
}
