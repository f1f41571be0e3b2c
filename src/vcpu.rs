//! Per-vCPU machine-check storage: one atomic per register, and a lock for writers.
//!
//! # Background
//! Floor: vCPU storage, on emulation, state and registers (never on delivery, domain or
//! records, which sit above it). Each vCPU has its own `MCG_STATUS`, banks, `MCi_CTL2` and
//! `MCG_EXT_CTL`, as a real CPU does (Xen moved from per-domain to per-vCPU state for exactly
//! that reason). Everything a migration must carry is in [`VcpuMceState`], a `Copy` struct
//! of [`crate::state`]; the slot of each register among the atomics is written once, in
//! `slots_of` and `state_of`.
//!
//! A [`Vcpu`] keeps those registers as atomics. A guest `rdmsr` (the hot exit path) reads
//! its one register with an acquire load (a plain load on x86) and no lock. A guest `wrmsr`
//! takes no lock either when its outcome does not depend on the registers: a #GP on a
//! read-only register, an ignored write, 0 written to a bank's `STATUS`, `ADDR` or `MISC`,
//! or a valid `MCi_CTL2` value, each one store (`emulate::WritePlan`; a clear is a release store,
//! a plain store on x86). Every other writer — a `wrmsr` of `MCG_STATUS` or `MCG_EXT_CTL`,
//! an injection from the #MC path on another CPU, a restore, a reset — takes the writer lock
//! (a `spin` mutex), so those writers are serialized.
//!
//! While the lock is held, the changes another CPU can still make are therefore a guest's
//! lock-free clear, which takes one bank register to 0, and a guest's `MCi_CTL2` store,
//! which no other register depends on. The lock holders are built for that:
//! - an injection logs its `STATUS` with one compare-and-swap
//!   (`RegisterFileMut::log_status`), so its `OVER` decision and its store are not split
//!   by a clear;
//! - a snapshot (what [`crate::Domain::save`] reads of each vCPU) reads the registers until
//!   two passes agree on every register but `MCi_CTL2`, which with registers that can only
//!   fall to 0, by release stores its acquire loads see in the guest's order, is a state
//!   that existed (at most 8 passes; each `MCi_CTL2` read is a value the guest wrote, and a
//!   paused vCPU writes none);
//! - restore and reset store every register, so a clear that lands in between is
//!   overwritten, as if it came first.
//!
//! The pending-#MC flag is set (release) after the registers it announces, under the lock,
//! so the VM-entry check is one relaxed load and a vCPU that takes the flag sees the
//! error's registers. The whole [`Vcpu`] is at most 128 bytes (asserted at compile time).
//!
//! `tests/loom.rs` checks this protocol on its interleavings and memory orderings under the
//! loom model checker, which `crate::sync` swaps in for the atomics and locks.

use crate::emulate::{
    self, RdmsrOutcome, RegisterFile, RegisterFileMut, WritePlan, WrmsrOutcome, logged_status,
};
use crate::profile::{CapsError, GUEST_BANKS, Profile};
use crate::registers::msr::{BankRegister, McaMsr};
use crate::registers::{McgCap, McgExtCtl, McgStatus, MciCtl2, MciStatus, Vendor};
use crate::state::{CheckedSnapshot, GuestBank, VcpuMceState, VcpuSnapshot};
use crate::sync::{
    AtomicBool, AtomicU8, AtomicU64, Lock, Ordering, const_unless_loom, store_racing_rmw,
};

/// One vCPU's virtual MCA.
///
/// The hypervisor keeps one per vCPU, routes MCA MSR exits to [`Vcpu::rdmsr`] /
/// [`Vcpu::wrmsr`], and on every VM entry calls [`Vcpu::take_pending`]: `true` means "inject
/// vector 18 (#MC) now".
///
/// The registers live in atomics, one per register: a guest `rdmsr` reads its register with
/// one load and no lock (it is the hot exit path), and a guest clear of a bank register is
/// one store. Every other writer (a stateful `wrmsr`, injection, restore, reset) takes the
/// writer lock, and a save ([`crate::Domain::save`]), which also takes it, sees a state that
/// existed (see the module docs).
#[derive(Debug)]
pub struct Vcpu {
    writer: Lock<()>,
    registers: AtomicRegisters,
    pending: AtomicBool,
}

/// Slots of [`AtomicRegisters::values`].
const CAP: usize = 0;
const STATUS: usize = 1;
const EXT_CTL: usize = 2;
/// `MCi_CTL2` of stored bank `slot` is at `CTL2 + slot`.
const CTL2: usize = 3;
/// `STATUS`, `ADDR`, `MISC` of stored bank `slot` are at `BANKS + 3 * slot + 0..3`.
const BANKS: usize = CTL2 + GUEST_BANKS as usize;
const REGISTER_COUNT: usize = BANKS + 3 * GUEST_BANKS as usize;

/// The values of `state`'s registers, in slot order: the layout, with [`state_of`].
const fn slots_of(state: &VcpuMceState) -> [u64; REGISTER_COUNT] {
    let [ctl2_0, ctl2_1] = state.mci_ctl2;
    let [bank0, bank1] = state.banks;
    [
        state.mcg_cap.bits(),
        state.mcg_status.bits(),
        state.mcg_ext_ctl.bits(),
        ctl2_0.bits(),
        ctl2_1.bits(),
        bank0.status.bits(),
        bank0.addr,
        bank0.misc,
        bank1.status.bits(),
        bank1.addr,
        bank1.misc,
    ]
}

/// The state whose registers hold `values` (in slot order, as [`slots_of`] gives them).
fn state_of(vendor: Vendor, values: [u64; REGISTER_COUNT]) -> VcpuMceState {
    let [cap, status, ext_ctl, ctl2_0, ctl2_1, s0, a0, m0, s1, a1, m1] = values;
    let bank = |status, addr, misc| GuestBank {
        status: MciStatus::from_bits_retain(status),
        addr,
        misc,
    };
    VcpuMceState {
        vendor,
        mcg_cap: McgCap::from_bits_retain(cap),
        mcg_status: McgStatus::from_bits_retain(status),
        mcg_ext_ctl: McgExtCtl::from_bits_retain(ext_ctl),
        mci_ctl2: [
            MciCtl2::from_bits_retain(ctl2_0),
            MciCtl2::from_bits_retain(ctl2_1),
        ],
        banks: [bank(s0, a0, m0), bank(s1, a1, m1)],
    }
}

/// The registers of a [`VcpuMceState`], one atomic each. Stores happen under the [`Vcpu`]'s
/// writer lock, except a guest's clear of a bank register ([`AtomicRegisters::clear_bank`])
/// and `MCi_CTL2` store ([`AtomicRegisters::store_ctl2`]). A writer under the lock gets
/// `&mut &AtomicRegisters`, the [`RegisterFileMut`] ([`Vcpu::update`]).
#[derive(Debug)]
pub(crate) struct AtomicRegisters {
    vendor: AtomicU8,
    values: [AtomicU64; REGISTER_COUNT],
}

const fn vendor_code(vendor: Vendor) -> u8 {
    match vendor {
        Vendor::Intel => 0,
        Vendor::Amd => 1,
    }
}

#[inline]
const fn bank_offset(register: BankRegister) -> Option<usize> {
    match register {
        BankRegister::Status => Some(0),
        BankRegister::Addr => Some(1),
        BankRegister::Misc => Some(2),
        BankRegister::Ctl => None,
    }
}

/// The slot in [`AtomicRegisters::values`] of `register` of stored bank `slot`: `None` for a
/// bank without storage, and for `CTL`, which is not stored.
#[inline]
const fn stored_bank_register(slot: usize, register: BankRegister) -> Option<usize> {
    match bank_offset(register) {
        Some(offset) if slot < GUEST_BANKS as usize => Some(BANKS + 3 * slot + offset),
        _ => None,
    }
}

impl AtomicRegisters {
    const_unless_loom! {
        const fn new(state: &VcpuMceState) -> Self {
            let [cap, status, ext_ctl, ctl2_0, ctl2_1, s0, a0, m0, s1, a1, m1] = slots_of(state);
            Self {
                vendor: AtomicU8::new(vendor_code(state.vendor)),
                values: [
                    AtomicU64::new(cap),
                    AtomicU64::new(status),
                    AtomicU64::new(ext_ctl),
                    AtomicU64::new(ctl2_0),
                    AtomicU64::new(ctl2_1),
                    AtomicU64::new(s0),
                    AtomicU64::new(a0),
                    AtomicU64::new(m0),
                    AtomicU64::new(s1),
                    AtomicU64::new(a1),
                    AtomicU64::new(m1),
                ],
            }
        }
    }

    /// One register. Acquire: a reader that sees a bank's new `STATUS` also sees the `ADDR`
    /// and `MISC` stored before it (`log_status` releases). On x86 an acquire load is a
    /// plain load.
    #[inline]
    fn get(&self, slot: usize) -> u64 {
        self.values
            .get(slot)
            .map_or(0, |value| value.load(Ordering::Acquire))
    }

    #[inline]
    fn set(&self, slot: usize, value: u64) {
        if let Some(register) = self.values.get(slot) {
            register.store(value, Ordering::Relaxed);
        }
    }

    /// Every register; consistent when the caller holds the writer lock.
    fn load(&self) -> VcpuMceState {
        state_of(
            self.vendor(),
            self.values
                .each_ref()
                .map(|value| value.load(Ordering::Acquire)),
        )
    }

    /// Stores every register of `state`; only under the writer lock (restore and reset).
    ///
    /// Every register is stored, equal or not: a guest's lock-free clear of a bank register
    /// may have landed since the caller read it, and a restore must not keep it.
    fn store(&self, state: &VcpuMceState) {
        self.vendor
            .store(vendor_code(state.vendor), Ordering::Relaxed);
        for (register, value) in self.values.iter().zip(slots_of(state)) {
            register.store(value, Ordering::Relaxed);
        }
    }

    /// Every register, as they all stood together at one instant; only under the writer
    /// lock.
    ///
    /// Under the lock the changes still possible are a guest's lock-free clear of a bank
    /// register ([`AtomicRegisters::clear_bank`]), which only ever takes a register to 0, and
    /// a guest's `MCi_CTL2` store ([`AtomicRegisters::store_ctl2`]), which no other register
    /// depends on and which the comparison leaves out. A register that reads the same twice
    /// therefore held that value the whole time in between. A clear is a release store and
    /// every read an acquire load, so a pass that sees one of the guest's clears sees, in the
    /// registers it reads after it, every clear the guest made before it; with two passes
    /// that agree, that holds for every register, so they are a state that existed (with
    /// `Relaxed` clears, loom finds a save of bank 1's old `STATUS` beside its cleared
    /// `ADDR`). A pass that differs from the one before saw at least one of the 3 ×
    /// [`GUEST_BANKS`] bank registers become 0, which happens once per register, so at most
    /// 3 × [`GUEST_BANKS`] + 2 passes are read.
    fn load_consistent(&self) -> VcpuMceState {
        consistent_read(|| self.load())
    }

    /// Stores `MCi_CTL2` of stored bank `slot` without the writer lock: the
    /// `WritePlan::StoreCtl2` path of a guest `wrmsr`.
    #[inline]
    fn store_ctl2(&self, slot: usize, value: MciCtl2) {
        if slot < usize::from(GUEST_BANKS) {
            self.set(CTL2 + slot, value.bits());
        }
    }

    /// Clears one register of stored bank `slot` without the writer lock: the
    /// `WritePlan::ClearBank` path of a guest `wrmsr`. Release, for
    /// [`AtomicRegisters::load_consistent`]: the same `mov` as a relaxed store on x86.
    #[inline]
    fn clear_bank(&self, slot: usize, register: BankRegister) {
        if let Some(register) =
            stored_bank_register(slot, register).and_then(|index| self.values.get(index))
        {
            store_racing_rmw(register, 0, Ordering::Release);
        }
    }
}

/// Reads with `read` until two passes in a row agree on every register but `MCi_CTL2`, at
/// most `3 × GUEST_BANKS + 2` passes (see [`AtomicRegisters::load_consistent`]); returns the
/// last pass.
fn consistent_read(mut read: impl FnMut() -> VcpuMceState) -> VcpuMceState {
    let guarded = |state: &VcpuMceState| VcpuMceState {
        mci_ctl2: [MciCtl2::empty(); GUEST_BANKS as usize],
        ..*state
    };
    let mut state = read();
    for _ in 0..=3 * GUEST_BANKS {
        let again = read();
        let agreed = guarded(&again) == guarded(&state);
        state = again;
        if agreed {
            break;
        }
    }
    state
}

impl RegisterFile for AtomicRegisters {
    #[inline]
    fn vendor(&self) -> Vendor {
        if self.vendor.load(Ordering::Relaxed) == vendor_code(Vendor::Amd) {
            Vendor::Amd
        } else {
            Vendor::Intel
        }
    }
    #[inline]
    fn mcg_cap(&self) -> McgCap {
        McgCap::from_bits_retain(self.get(CAP))
    }
    #[inline]
    fn mcg_status(&self) -> McgStatus {
        McgStatus::from_bits_retain(self.get(STATUS))
    }
    #[inline]
    fn mcg_ext_ctl(&self) -> McgExtCtl {
        McgExtCtl::from_bits_retain(self.get(EXT_CTL))
    }
    #[inline]
    fn mci_ctl2(&self, slot: usize) -> MciCtl2 {
        MciCtl2::from_bits_retain(self.get(CTL2 + slot))
    }
    #[inline]
    fn bank(&self, slot: usize, register: BankRegister) -> u64 {
        bank_offset(register).map_or(0, |offset| self.get(BANKS + 3 * slot + offset))
    }
}

/// The registers as a writer holding the [`Vcpu`]'s writer lock stores them, one register
/// at a time ([`Vcpu::update`], and the `MCG_STATUS`/`MCG_EXT_CTL` path of [`Vcpu::wrmsr`]).
impl RegisterFileMut for &AtomicRegisters {
    #[inline]
    fn set_mcg_status(&mut self, value: McgStatus) {
        self.set(STATUS, value.bits());
    }
    #[inline]
    fn set_mcg_ext_ctl(&mut self, value: McgExtCtl) {
        self.set(EXT_CTL, value.bits());
    }
    #[inline]
    fn set_bank(&mut self, slot: usize, register: BankRegister, value: u64) {
        if let Some(index) = stored_bank_register(slot, register) {
            self.set(index, value);
        }
    }
    #[inline]
    fn log_status(&mut self, slot: usize, status: MciStatus) -> bool {
        let Some(register) = stored_bank_register(slot, BankRegister::Status)
            .and_then(|index| self.values.get(index))
        else {
            return false;
        };
        // A compare-and-swap loop: a guest's lock-free clear between the read and the store
        // makes the swap fail and the status is worked out again from 0. Release: the bank's
        // ADDR and MISC, stored before, are visible to whoever reads this STATUS.
        let previous = register
            .fetch_update(Ordering::Release, Ordering::Relaxed, |previous| {
                Some(logged_status(MciStatus::from_bits_retain(previous), status).bits())
            })
            .unwrap_or_else(|previous| previous);
        MciStatus::from_bits_retain(previous).contains(MciStatus::VAL)
    }
}

/// The per-vCPU size budget, lock included.
pub const VCPU_SIZE_LIMIT: usize = 128;
// Not for loom's atomics and lock, which carry the model checker's bookkeeping.
#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<Vcpu>() <= VCPU_SIZE_LIMIT);

impl Vcpu {
    const_unless_loom! {
        /// A vCPU in power-on state for `profile`.
        pub const fn new(profile: Profile) -> Self {
            Self::from_state(VcpuMceState::new(profile))
        }
    }

    const_unless_loom! {
        /// A vCPU whose `IA32_MCG_CAP` came from a saved state (a guest that migrated in from an
        /// older host may have more banks and `CTL_P`), checked by Xen's restore rule.
        ///
        /// # Errors
        /// [`CapsError`] when `caps` cannot be restored under `profile`.
        pub const fn with_restored_caps(profile: Profile, caps: McgCap) -> Result<Self, CapsError> {
            match profile.check_restored_caps(caps) {
                Ok(()) => Ok(Self::from_state(VcpuMceState::with_caps(profile.vendor(), caps))),
                Err(error) => Err(error),
            }
        }
    }

    const_unless_loom! {
        const fn from_state(state: VcpuMceState) -> Self {
            Self {
                writer: Lock::new(()),
                registers: AtomicRegisters::new(&state),
                pending: AtomicBool::new(false),
            }
        }
    }

    /// Emulates a guest `rdmsr`. [`RdmsrOutcome::NotOurs`] leaves the MSR to the hypervisor.
    ///
    /// Lock-free: one load of the register the index names.
    #[inline]
    pub fn rdmsr(&self, index: u32) -> RdmsrOutcome {
        emulate::read(&self.registers, index)
    }

    /// Emulates a guest `wrmsr`. A [`WrmsrOutcome::RaiseGp`] leaves the state unchanged.
    ///
    /// A clear of a bank register and an `MCi_CTL2` store are one lock-free store each;
    /// `MCG_STATUS` and `MCG_EXT_CTL`, whose writable bits depend on `MCG_CAP`, are checked
    /// and stored under the writer lock.
    #[inline]
    pub fn wrmsr(&self, index: u32, value: u64) -> WrmsrOutcome {
        let Some(register) = McaMsr::decode(index) else {
            return WrmsrOutcome::NotOurs;
        };
        match emulate::plan_write(self.registers.vendor(), register, value) {
            WritePlan::Done(outcome) => outcome,
            WritePlan::ClearBank { slot, register } => {
                self.registers.clear_bank(slot, register);
                WrmsrOutcome::Handled
            }
            WritePlan::StoreCtl2 { slot, value } => {
                self.registers.store_ctl2(slot, value);
                WrmsrOutcome::Handled
            }
            WritePlan::Serialized(write) => {
                self.update(|registers| (write.apply(registers), false))
            }
        }
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

    /// A consistent copy of the state and the pending flag. Crate-private: a save of a vCPU
    /// in a domain goes through [`crate::Domain::save`], which keeps it consistent with the
    /// domain's other vCPUs.
    pub(crate) fn snapshot(&self) -> VcpuSnapshot {
        let guard = self.writer.lock();
        let snapshot = VcpuSnapshot {
            state: self.registers.load_consistent(),
            pending: self.pending.load(Ordering::Acquire),
        };
        drop(guard);
        snapshot
    }

    /// A copy of the registers, for inspection (a save uses [`crate::Domain::save`]).
    pub fn state(&self) -> VcpuMceState {
        self.snapshot().state
    }

    /// Whether the guest opted this vCPU into local machine checks (`MCG_EXT_CTL.LMCE_EN`;
    /// never without `LMCE_P`). One lock-free load of the register.
    pub fn lmce_enabled(&self) -> bool {
        self.registers.mcg_ext_ctl().contains(McgExtCtl::LMCE_EN)
    }

    /// Loads a saved state, registers and pending flag, checked beforehand
    /// ([`VcpuSnapshot::check`]), so it cannot fail. A restored pending #MC is re-armed: the
    /// next [`Vcpu::take_pending`] returns `true`.
    pub fn restore(&self, snapshot: &CheckedSnapshot) {
        self.replace(|_| snapshot.state, snapshot.pending);
    }

    /// Resets the vCPU (INIT): capabilities kept, status, banks, controls and pending cleared.
    pub fn reset(&self) {
        self.replace(
            |registers| VcpuMceState::with_caps(registers.vendor(), registers.mcg_cap()),
            false,
        );
    }

    /// Stores every register of the state `state` gives (from the registers as they stand
    /// under the writer lock), then the pending flag, before releasing the lock: a
    /// `take_pending` that sees the flag (acquire) sees the registers stored before it, and a
    /// snapshot never sees one without the other.
    fn replace(&self, state: impl FnOnce(&AtomicRegisters) -> VcpuMceState, pending: bool) {
        let guard = self.writer.lock();
        self.registers.store(&state(&self.registers));
        self.pending.store(pending, Ordering::Release);
        drop(guard);
    }

    /// Runs `update` on the registers under the writer lock; marks a #MC pending when it
    /// returns `true`.
    ///
    /// The flag is raised (release) after the registers are stored and before the lock is
    /// released, so a vCPU that takes it sees the injection's registers, and a
    /// snapshot (under the lock) never sees one without the other.
    #[inline]
    pub(crate) fn update<R>(&self, update: impl FnOnce(&mut &AtomicRegisters) -> (R, bool)) -> R {
        let guard = self.writer.lock();
        let (result, pend) = update(&mut &self.registers);
        if pend {
            self.pending.store(true, Ordering::Release);
        }
        drop(guard);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout is one mapping: a state stored and loaded again is the same state.
    #[test]
    fn slots_round_trip() {
        let mut state = VcpuMceState::new(Profile::IntelLmce);
        state.mcg_status = McgStatus::MCIP | McgStatus::RIPV;
        state.mcg_ext_ctl = McgExtCtl::LMCE_EN;
        state.mci_ctl2 = [MciCtl2::from_bits_retain(1), MciCtl2::from_bits_retain(2)];
        state.banks = [
            GuestBank {
                status: MciStatus::from_bits_retain(3),
                addr: 4,
                misc: 5,
            },
            GuestBank {
                status: MciStatus::from_bits_retain(6),
                addr: 7,
                misc: 8,
            },
        ];
        let registers = AtomicRegisters::new(&state);
        assert_eq!(registers.load(), state);
        let amd = VcpuMceState::new(Profile::Amd);
        registers.store(&amd);
        assert_eq!(registers.load(), amd);
    }

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

    /// A pass torn by two clears (STATUS read before the guest cleared it, ADDR after) is
    /// never returned: the reader goes on until two passes agree.
    #[test]
    fn consistent_read_skips_a_pass_torn_by_clears() {
        let with_bank = |status: u64, addr: u64, misc: u64| {
            let mut state = VcpuMceState::new(Profile::Intel);
            state.banks[1] = GuestBank {
                status: MciStatus::from_bits_retain(status),
                addr,
                misc,
            };
            state
        };
        let torn = with_bank(0xBD00_0000_0000_00C0, 0, 0x86);
        let cleared = with_bank(0, 0, 0x86);
        let passes = [torn, cleared, cleared, with_bank(0, 0, 0)];
        let mut reads = 0;
        let state = consistent_read(|| {
            reads += 1;
            passes[reads - 1]
        });
        assert_eq!(state, cleared);
        assert_eq!(reads, 3);
    }

    /// A guest's lock-free `MCi_CTL2` store does not make a snapshot spin: the passes are
    /// compared without it, and the last pass's value (one the guest wrote) is kept.
    #[test]
    fn consistent_read_leaves_ctl2_out_of_the_comparison() {
        let mut reads = 0u64;
        let state = consistent_read(|| {
            reads += 1;
            let mut state = VcpuMceState::new(Profile::Intel);
            state.mci_ctl2[1] = MciCtl2::from_bits_retain(reads);
            state
        });
        assert_eq!(reads, 2);
        assert_eq!(state.mci_ctl2[1].bits(), 2);
    }

    /// Even a reader that never sees two equal passes (impossible under the lock) stops.
    #[test]
    fn consistent_read_is_bounded() {
        let mut reads = 0u64;
        let state = consistent_read(|| {
            reads += 1;
            let mut state = VcpuMceState::new(Profile::Intel);
            state.banks[1].misc = reads;
            state
        });
        assert_eq!(reads, 3 * u64::from(GUEST_BANKS) + 2);
        assert_eq!(state.banks[1].misc, reads);
    }

    #[test]
    fn logging_over_a_valid_error_sets_over() {
        let vcpu = Vcpu::new(Profile::Intel);
        let status = MciStatus::from_bits_retain(0xBD00_0000_0000_00C0);
        assert!(!vcpu.update(|state| (state.log_status(1, status), false)));
        assert_eq!(vcpu.state().banks[1].status, status);
        assert!(vcpu.update(|state| (state.log_status(1, status), false)));
        assert_eq!(vcpu.state().banks[1].status, status | MciStatus::OVER);
        assert_eq!(vcpu.wrmsr(0x405, 0), WrmsrOutcome::Handled);
        assert!(!vcpu.update(|state| (state.log_status(1, status), false)));
        assert_eq!(vcpu.state().banks[1].status, status);
        assert!(!vcpu.update(|state| (state.log_status(2, status), false)));
    }

    #[test]
    fn reset_keeps_caps_only() {
        let vcpu = Vcpu::with_restored_caps(Profile::Intel, McgCap::from_bits_retain(0x0100_0806))
            .unwrap();
        vcpu.update(|state| {
            state.set_mcg_status(McgStatus::MCIP);
            state.set_bank(1, BankRegister::Misc, 0x86);
            ((), true)
        });
        assert_eq!(vcpu.wrmsr(0x281, 1 << 30), WrmsrOutcome::Handled);
        vcpu.reset();
        let snapshot = vcpu.snapshot();
        assert_eq!(
            snapshot.state,
            VcpuMceState::with_caps(Vendor::Intel, McgCap::from_bits_retain(0x0100_0806))
        );
        assert!(!snapshot.pending);
    }
}
