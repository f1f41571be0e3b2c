//! Per-vCPU machine-check state: plain data behind its own lock.
//!
//! # Background
//! Each vCPU has its own `MCG_STATUS`, banks, `MCi_CTL2` and `MCG_EXT_CTL`, as a real CPU
//! does (Xen moved from per-domain to per-vCPU state for exactly that reason). Everything a
//! migration must carry is in [`VcpuMceState`], a `Copy` struct; the pending-#MC flag sits
//! beside it as an atomic so the VM-entry path can test it without taking the lock.
//!
//! The lock is a `spin` mutex: guest MSR exits on this vCPU and injections from the #MC
//! path on another CPU contend for it only briefly. The whole [`Vcpu`] is at most 128 bytes
//! (asserted at compile time).

use crate::emulate::{self, RdmsrOutcome, WrmsrOutcome};
use crate::profile::{CapsError, GUEST_BANKS, Profile, Vendor};
use crate::record::{RecordError, check_snapshot};
use crate::registers::{McgCap, McgExtCtl, McgStatus, MciCtl2, MciStatus};
use core::sync::atomic::{AtomicBool, Ordering};
use spin::mutex::SpinMutex;

/// One guest bank's error registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GuestBank {
    /// `MCi_STATUS` as the guest sees it (`MSCOD` already cleared).
    pub status: MciStatus,
    /// `MCi_ADDR`, a guest-physical address.
    pub addr: u64,
    /// `MCi_MISC`.
    pub misc: u64,
}

impl GuestBank {
    /// An empty bank.
    pub const EMPTY: GuestBank = GuestBank {
        status: MciStatus::empty(),
        addr: 0,
        misc: 0,
    };
}

/// The guest-visible machine-check registers of one vCPU: plain data, the unit of save and
/// restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VcpuMceState {
    /// The vendor dialect (from the domain's profile).
    pub vendor: Vendor,
    /// `IA32_MCG_CAP`: the profile's, or one restored from an older host.
    pub mcg_cap: McgCap,
    /// `IA32_MCG_STATUS`.
    pub mcg_status: McgStatus,
    /// `IA32_MCG_EXT_CTL`.
    pub mcg_ext_ctl: McgExtCtl,
    /// `IA32_MCi_CTL2` of banks 0 and 1 (Intel).
    pub mci_ctl2: [MciCtl2; GUEST_BANKS as usize],
    /// Banks 0 and 1. Bank 0 is never written by vmce.
    pub banks: [GuestBank; GUEST_BANKS as usize],
}

impl VcpuMceState {
    /// Power-on state for `profile`.
    pub const fn new(profile: Profile) -> Self {
        Self::with_caps(profile.vendor(), profile.mcg_cap())
    }

    const fn with_caps(vendor: Vendor, mcg_cap: McgCap) -> Self {
        Self {
            vendor,
            mcg_cap,
            mcg_status: McgStatus::empty(),
            mcg_ext_ctl: McgExtCtl::empty(),
            mci_ctl2: [MciCtl2::empty(); GUEST_BANKS as usize],
            banks: [GuestBank::EMPTY; GUEST_BANKS as usize],
        }
    }

    /// The state after a vCPU reset (INIT): capabilities kept, everything else cleared.
    pub const fn reset(self) -> Self {
        Self::with_caps(self.vendor, self.mcg_cap)
    }
}

/// Everything a save must carry for one vCPU: the registers and the pending-#MC flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VcpuSnapshot {
    /// The registers.
    pub state: VcpuMceState,
    /// A virtual #MC was injected and not yet taken by the vCPU on VM entry.
    pub pending: bool,
}

/// One vCPU's virtual MCA.
///
/// The hypervisor keeps one per vCPU, routes MCA MSR exits to [`Vcpu::rdmsr`] /
/// [`Vcpu::wrmsr`], and on every VM entry calls [`Vcpu::take_pending`]: `true` means "inject
/// vector 18 (#MC) now".
#[derive(Debug)]
pub struct Vcpu {
    state: SpinMutex<VcpuMceState>,
    pending: AtomicBool,
}

/// The per-vCPU size budget, lock included.
pub const VCPU_SIZE_LIMIT: usize = 128;
const _: () = assert!(core::mem::size_of::<Vcpu>() <= VCPU_SIZE_LIMIT);

impl Vcpu {
    /// A vCPU in power-on state for `profile`.
    pub const fn new(profile: Profile) -> Self {
        Self::from_state(VcpuMceState::new(profile), false)
    }

    /// A vCPU whose `IA32_MCG_CAP` came from a saved state (a guest that migrated in from an
    /// older host may have more banks and `CTL_P`), checked by Xen's restore rule.
    ///
    /// # Errors
    /// [`CapsError`] when `caps` cannot be restored under `profile`.
    pub const fn with_restored_caps(profile: Profile, caps: McgCap) -> Result<Self, CapsError> {
        match profile.check_restored_caps(caps) {
            Ok(()) => Ok(Self::from_state(
                VcpuMceState::with_caps(profile.vendor(), caps),
                false,
            )),
            Err(error) => Err(error),
        }
    }

    pub(crate) const fn from_state(state: VcpuMceState, pending: bool) -> Self {
        Self {
            state: SpinMutex::new(state),
            pending: AtomicBool::new(pending),
        }
    }

    /// Emulates a guest `rdmsr`. [`RdmsrOutcome::NotOurs`] leaves the MSR to the hypervisor.
    pub fn rdmsr(&self, index: u32) -> RdmsrOutcome {
        emulate::read(&self.state.lock(), index)
    }

    /// Emulates a guest `wrmsr`. A [`WrmsrOutcome::RaiseGp`] leaves the state unchanged.
    pub fn wrmsr(&self, index: u32, value: u64) -> WrmsrOutcome {
        emulate::write(&mut self.state.lock(), index, value)
    }

    /// Takes the pending virtual #MC: `true` once per injection, on the VM entry that must
    /// deliver vector 18. Cheap when nothing is pending (one relaxed load).
    pub fn take_pending(&self) -> bool {
        self.pending.load(Ordering::Relaxed) && self.pending.swap(false, Ordering::Acquire)
    }

    /// Whether a virtual #MC is pending, without taking it.
    pub fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// A consistent copy of the state and the pending flag.
    pub fn snapshot(&self) -> VcpuSnapshot {
        let state = self.state.lock();
        VcpuSnapshot {
            state: *state,
            pending: self.pending.load(Ordering::Acquire),
        }
    }

    /// A copy of the registers.
    pub fn state(&self) -> VcpuMceState {
        *self.state.lock()
    }

    /// Loads a saved state, registers and pending flag, after checking it against `profile`
    /// ([`crate::record::check_snapshot`]): all or nothing, the vCPU is unchanged on error.
    /// A restored pending #MC is re-armed: the next [`Vcpu::take_pending`] returns `true`.
    ///
    /// # Errors
    /// The [`RecordError`] of the first field `profile` cannot hold.
    pub fn restore(&self, profile: Profile, snapshot: &VcpuSnapshot) -> Result<(), RecordError> {
        check_snapshot(profile, snapshot)?;
        let mut state = self.state.lock();
        *state = snapshot.state;
        self.pending.store(snapshot.pending, Ordering::Release);
        drop(state);
        Ok(())
    }

    /// Resets the vCPU (INIT): capabilities kept, status, banks, controls and pending cleared.
    pub fn reset(&self) {
        let mut state = self.state.lock();
        *state = state.reset();
        self.pending.store(false, Ordering::Release);
        drop(state);
    }

    /// Runs `update` on the locked state; marks a #MC pending when it returns `true`.
    ///
    /// The flag is raised before the lock is released, so a [`Vcpu::snapshot`] (which reads
    /// it under the lock) never sees the registers of an injection without its pending #MC.
    pub(crate) fn update<R>(&self, update: impl FnOnce(&mut VcpuMceState) -> (R, bool)) -> R {
        let mut state = self.state.lock();
        let (result, pend) = update(&mut state);
        if pend {
            self.pending.store(true, Ordering::Release);
        }
        drop(state);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_budget_holds() {
        assert!(
            core::mem::size_of::<Vcpu>() <= VCPU_SIZE_LIMIT,
            "{}",
            core::mem::size_of::<Vcpu>()
        );
    }

    #[test]
    fn pending_is_taken_once() {
        let vcpu = Vcpu::new(Profile::Intel);
        assert!(!vcpu.take_pending());
        vcpu.update(|_| ((), true));
        assert!(vcpu.is_pending());
        assert!(vcpu.take_pending());
        assert!(!vcpu.take_pending());
    }

    #[test]
    fn reset_keeps_caps_only() {
        let vcpu = Vcpu::with_restored_caps(Profile::Intel, McgCap::from_bits_retain(0x0100_0806))
            .unwrap();
        vcpu.update(|state| {
            state.mcg_status = McgStatus::MCIP;
            ((), true)
        });
        vcpu.reset();
        let snapshot = vcpu.snapshot();
        assert_eq!(
            snapshot.state,
            VcpuMceState::with_caps(Vendor::Intel, McgCap::from_bits_retain(0x0100_0806))
        );
        assert!(!snapshot.pending);
    }
}
