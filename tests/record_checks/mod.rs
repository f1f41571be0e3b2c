//! The checks of the record fuzz targets (`fuzz/fuzz_targets/{xen_record,native_record,
//! hvm_context}.rs`, nightly) and of their stable mirror (`tests/records/properties.rs`),
//! which both include this file.
//!
//! Every input is two selector bytes and the record bytes:
//!
//! | byte | meaning |
//! |---|---|
//! | 0 | bits 4:0 mod 3: the profile; bits 4:0 / 3: the Xen loader release (mod 3) or native loader version (mod 2); bits 6:5: vCPUs − 1 (1 to 4); bit 7: hostile snapshots carry the other vendor |
//! | 1 | the populated domain ([`populated`]: bits 4:0) and the domain record the checker adds to whole-domain restores ([`checker_domain_record`]: bits 7:5) |
//! | 2.. | the record (`xen_record`), the native record stream (`native_record`), the HVM context stream (`hvm_context`) |
//!
//! What is checked:
//! - **An independent decode.** The raw bytes are decoded here again, plainly (little-endian
//!   words for Xen's layout, LEB128 for vmce's postcard payloads), under the rules that
//!   `src/record/xen.rs`, `src/record/native.rs` and README "Compatibility" document; the
//!   library's result must agree: the same state, the same [`LoadNotes`], and an error only
//!   when a documented rule refuses the record (then one of the errors those rules name).
//! - **Restores into live domains**, a fresh one and a populated one (CTL2 written by the
//!   guest, an injected error pending, broken frames on the list; see [`populated`]), through
//!   every entry point: [`Domain::restore_vcpus`], [`Domain::restore`] with a domain record,
//!   [`Domain::restore_domain`], [`Vcpu::restore`]. Restored are the decoded records and also
//!   the raw, unmasked ones ("hostile": what the bytes said, before any loader rule), so that
//!   records the decoders refuse reach the restore checks too. A failed restore must leave
//!   every vCPU (every MCA MSR read through `rdmsr`, `Vcpu::state()`, the pending flag) and
//!   the broken frames exactly as they were; a successful one must read back, through guest
//!   `rdmsr`, exactly what the record said, with the documented defaults for what the format
//!   does not carry, and leave vCPUs without a record as they were.
//! - **`LoadNotes`** name exactly the bits that differ between the raw payload and the
//!   `MCi_CTL2`/`MCG_EXT_CTL` the live vCPU holds after the restore.
//! - **Streams.** A native stream is walked record by record ([`walk_native`]): a stream with
//!   a domain record restores as a whole domain (every vCPU needs exactly one record), one
//!   without restores its vCPU records alone (the others keep their state), and a stream with
//!   two domain records is refused by the walker ([`StreamError::TwoDomainRecords`]) before
//!   anything is restored: the library's restore takes one domain record, and which of two
//!   would be the domain's is not a question a toolstack should guess. An HVM context stream
//!   is loaded by every loader release, and its `VMCE_VCPU` records restore together.
#![allow(dead_code)]

use vmce::broken::BrokenFrames;
use vmce::host::HostCapabilities;
use vmce::profile::CapsError;
use vmce::record::hvm::{HvmContext, HvmWriter};
use vmce::record::native::{self, NativeRecord, NativeVersion};
use vmce::record::xen::{self, XenRelease};
use vmce::record::{HvmError, NativeError, RestoreError, StateError};
use vmce::record::{LoadNotes, LossPolicy, RecordError, SavedDomain, SavedVcpu};
use vmce::registers::{McgCap, McgExtCtl, McgStatus, MciCtl2, MciStatus};
use vmce::state::GuestBank;
use vmce::{
    Access, Domain, GpCause, GuestCpus, GuestFrame, GuestMce, GuestPhysAddr, Profile, RdmsrOutcome,
    Vcpu, VcpuId, VcpuMceState, VcpuSnapshot, Vendor, WrmsrOutcome,
};

#[cfg(test)]
thread_local! {
    /// The outcomes the checks have met (stable tests only): the mirror asserts that its
    /// inputs reach every one that matters.
    pub static SEEN: std::cell::RefCell<std::collections::BTreeSet<String>> =
        const { std::cell::RefCell::new(std::collections::BTreeSet::new()) };
}

/// Notes an outcome for the stable tests (nothing in a fuzz build).
fn seen(outcome: impl FnOnce() -> String) {
    #[cfg(test)]
    SEEN.with(|set| set.borrow_mut().insert(outcome()));
    #[cfg(not(test))]
    let _ = outcome;
}

/// An error's variant name.
fn variant(error: &impl core::fmt::Debug) -> String {
    let debug = format!("{error:?}");
    // The variant of the layer's error, inside RecordError's wrapper.
    let text = ["State(", "Restore(", "Hvm(", "Native("]
        .iter()
        .find_map(|layer| debug.strip_prefix(layer))
        .unwrap_or(&debug);
    let end = text.find([' ', '(', ')', '{']).unwrap_or(text.len());
    text[..end].to_string()
}

/// A check's verdict: `Err` says what was violated.
pub type Check = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($message:tt)+) => {
        if !$cond {
            return Err(format!($($message)+));
        }
    };
}

/// Set to `false` once `Domain::restore`/`restore_domain` refuse a hand-made domain record
/// with a frame at or beyond 2^40 (the decoder refuses it; the restore entry points list it:
/// see `restore_lists_no_frame_beyond_52_bits` in `tests/records/properties.rs`). While it is
/// `true` the checker's own domain records keep their frames below the limit.
pub const KNOWN_GAP_RESTORE_TAKES_OUT_OF_RANGE_FRAMES: bool = false;

// ---- the facts, written plainly ------------------------------------------------------------

const COUNT: u64 = 0xFF;
const CTL_P: u64 = 1 << 8;
const LMCE_P: u64 = 1 << 27;
const CMCI_EN: u64 = 1 << 30;
const THRESHOLD: u64 = 0x7FFF;
const LMCE_EN: u64 = 1;
/// `RIPV | EIPV | MCIP`; `LMCE_S` (bit 3) too with `LMCE_P`.
const MCG_STATUS_BITS: u64 = 0x7;
const LMCE_S: u64 = 1 << 3;
const MSCOD: u64 = 0xFFFF << 16;
/// Guest frames a 52-bit physical address space has.
pub const FRAME_LIMIT: u64 = 1 << 40;
/// The default broken-frame capacity of a domain.
pub const CAPACITY: usize = 64;
const VMCE_VCPU: u16 = 18;

fn profile_caps(profile: Profile) -> u64 {
    match profile {
        Profile::Intel => 0x0100_0C02,
        Profile::IntelLmce => 0x0900_0C02,
        Profile::Amd => 0x2,
    }
}

fn is_intel(profile: Profile) -> bool {
    profile != Profile::Amd
}

/// Xen's restore rule: the profile's bits and `CTL_P`; any count.
fn restorable_caps(profile: Profile) -> u64 {
    (profile_caps(profile) & !COUNT) | CTL_P
}

fn ctl2_kept(profile: Profile) -> u64 {
    if is_intel(profile) {
        CMCI_EN | THRESHOLD
    } else {
        0
    }
}

fn xen_own_len(loader: XenRelease) -> usize {
    match loader {
        XenRelease::Xen4_2 => 8,
        XenRelease::Xen4_3 => 24,
        XenRelease::Xen4_10 => 32,
    }
}

// ---- the input -----------------------------------------------------------------------------

/// The two selector bytes.
#[derive(Clone, Copy, Debug)]
pub struct Selector {
    pub profile: Profile,
    /// Index into the loader list (Xen: mod 3, native: mod 2).
    pub release: usize,
    pub vcpus: u32,
    /// Hostile snapshots carry the other vendor.
    pub other_vendor: bool,
    pub populate: u8,
}

impl Selector {
    pub fn split(data: &[u8]) -> Option<(Selector, &[u8])> {
        let (&[first, populate], bytes) = data.split_first_chunk::<2>()?;
        let low = usize::from(first & 0x1F);
        Some((
            Selector {
                profile: Profile::ALL[low % 3],
                release: low / 3,
                vcpus: u32::from((first >> 5) & 3) + 1,
                other_vendor: first & 0x80 != 0,
                populate,
            },
            bytes,
        ))
    }

    /// The selector byte for these choices (the inverse of [`Selector::split`]).
    pub fn byte(profile: Profile, release: usize, vcpus: u32, other_vendor: bool) -> u8 {
        let index = Profile::ALL.iter().position(|p| *p == profile).unwrap_or(0);
        let low = (release * 3 + index) as u8;
        low | (((vcpus - 1) as u8 & 3) << 5) | if other_vendor { 0x80 } else { 0 }
    }

    fn hostile_vendor(&self) -> Vendor {
        match (self.profile.vendor(), self.other_vendor) {
            (vendor, false) => vendor,
            (Vendor::Intel, true) => Vendor::Amd,
            (Vendor::Amd, true) => Vendor::Intel,
        }
    }
}

// ---- plain register values and what a guest reads ------------------------------------------

/// A vCPU's registers as plain numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Regs {
    pub vendor: Vendor,
    pub caps: u64,
    pub status: u64,
    pub ext_ctl: u64,
    pub ctl2: [u64; 2],
    /// Bank 1's `STATUS`, `ADDR`, `MISC`.
    pub bank1: [u64; 3],
    pub pending: bool,
}

impl Regs {
    /// The documented defaults: what a record that carries only caps restores.
    pub fn defaults(vendor: Vendor, caps: u64) -> Regs {
        Regs {
            vendor,
            caps,
            status: 0,
            ext_ctl: 0,
            ctl2: [0; 2],
            bank1: [0; 3],
            pending: false,
        }
    }

    pub fn snapshot(&self) -> VcpuSnapshot {
        let [status, addr, misc] = self.bank1;
        VcpuSnapshot {
            state: VcpuMceState {
                vendor: self.vendor,
                mcg_cap: McgCap::from_bits_retain(self.caps),
                mcg_status: McgStatus::from_bits_retain(self.status),
                mcg_ext_ctl: McgExtCtl::from_bits_retain(self.ext_ctl),
                mci_ctl2: self.ctl2.map(MciCtl2::from_bits_retain),
                banks: [
                    GuestBank::EMPTY,
                    GuestBank {
                        status: MciStatus::from_bits_retain(status),
                        addr,
                        misc,
                    },
                ],
            },
            pending: self.pending,
        }
    }
}

/// What a guest `rdmsr` of `msr` returns on a vCPU holding `regs` (docs/behaviour.md §3,
/// README "Compatibility"), as a plain match.
pub fn expected_read(regs: &Regs, msr: u32) -> RdmsrOutcome {
    use RdmsrOutcome::{Handled, NotOurs, RaiseGp};
    let intel = regs.vendor == Vendor::Intel;
    let [status1, addr1, misc1] = regs.bank1;
    match msr {
        0x0 if intel => Handled(addr1),
        0x1 if intel => Handled(status1),
        0x179 => Handled(regs.caps),
        0x17A => Handled(regs.status),
        0x17B if regs.caps & CTL_P != 0 => Handled(u64::MAX),
        0x17B => Handled(0),
        0x4D0 if regs.caps & LMCE_P != 0 => Handled(regs.ext_ctl),
        0x4D0 => RaiseGp(GpCause::NotAdvertised),
        0x280 if intel => Handled(regs.ctl2[0]),
        0x281 if intel => Handled(regs.ctl2[1]),
        0x280..=0x29F => Handled(0),
        0x400..=0x47F => {
            let bank = u64::from((msr - 0x400) / 4);
            match (msr - 0x400) % 4 {
                0 if bank < regs.caps & COUNT => Handled(u64::MAX),
                0 => Handled(0),
                1 if bank == 1 => Handled(status1),
                2 if bank == 1 => Handled(addr1),
                3 if bank == 1 => Handled(misc1),
                _ => Handled(0),
            }
        }
        _ => NotOurs,
    }
}

/// Every MCA MSR a guest can name, and the indices just past each range.
pub fn mca_msrs() -> impl Iterator<Item = u32> {
    [
        0x0u32, 0x1, 0x2, 0x178, 0x179, 0x17A, 0x17B, 0x17C, 0x4D0, 0x4D1,
    ]
    .into_iter()
    .chain(0x280..0x2A1)
    .chain(0x400..0x481)
}

// ---- live domains --------------------------------------------------------------------------

pub type TestDomain = Domain<Vec<Vcpu>>;

fn host(profile: Profile) -> HostCapabilities {
    match profile.vendor() {
        Vendor::Intel => {
            HostCapabilities::new(Vendor::Intel, McgCap::from_bits_retain(0x0F00_0C14))
        }
        Vendor::Amd => HostCapabilities::new(Vendor::Amd, McgCap::from_bits_retain(0x17)),
    }
}

pub fn fresh(profile: Profile, vcpus: u32) -> TestDomain {
    let list = (0..vcpus).map(|_| Vcpu::new(profile)).collect();
    Domain::new(profile, &host(profile), list).expect("the host backs every profile")
}

struct AllUp;

impl GuestCpus for AllUp {
    fn is_up(&self, _: VcpuId) -> bool {
        true
    }
    fn machine_check_enabled(&self, _: VcpuId) -> bool {
        true
    }
}

/// The highest guest address a 52-bit physical address space has.
pub const TOP_ADDR: u64 = (1 << 52) - 1;

/// A domain that already has state, built from `populate` (bits 4:0):
/// - every vCPU's guest wrote `MC0_CTL2`/`MC1_CTL2` (two value sets, bit 0; AMD ignores it);
/// - bit 1: vCPU 0 opted into LMCE (Intel+LMCE);
/// - an action-required error consumed by vCPU 0, injected and pending (bit 2: at the top
///   of the 52-bit address space, frame 2^40 − 1);
/// - bit 3: vCPU 0 took its #MC, and the last vCPU's handler finished (`MCG_STATUS` and
///   bank 1 cleared) before a second error, consumed by it, arrived;
/// - broken frames restored from an earlier migration: 1, or (bit 4) 61, which brings the
///   list to 62 or 63 of its 64.
pub fn populated(profile: Profile, vcpus: u32, populate: u8) -> Result<TestDomain, String> {
    let domain = fresh(profile, vcpus);
    let vendor = profile.vendor();
    for (i, vcpu) in (0u64..).zip(domain.vcpus()) {
        let (ctl2_0, ctl2_1) = if populate & 1 == 0 {
            (CMCI_EN | (i + 1), THRESHOLD - i)
        } else {
            (3 * i, CMCI_EN | 0x10 | i)
        };
        for (msr, value) in [(0x280, ctl2_0), (0x281, ctl2_1)] {
            let outcome = vcpu.wrmsr(msr, value);
            ensure!(
                outcome == WrmsrOutcome::Handled,
                "populate: CTL2 write {outcome:?}"
            );
        }
    }
    let vcpu0 = &domain.vcpus()[0];
    if profile.has_lmce() && populate & 2 != 0 {
        ensure!(
            vcpu0.wrmsr(0x4D0, LMCE_EN) == WrmsrOutcome::Handled,
            "populate: LMCE_EN"
        );
    }
    let first = if populate & 4 != 0 {
        TOP_ADDR - 0xEDC
    } else {
        0x1234_5678
    };
    let error = GuestMce::broken_frame_access(vendor, Access::DataLoad, GuestPhysAddr(first));
    domain
        .inject(&error, Some(VcpuId(0)), &mut AllUp)
        .map_err(|e| format!("populate: inject: {e}"))?;
    if populate & 8 != 0 {
        vcpu0.take_pending();
        let last_id = vcpus - 1;
        let last = &domain.vcpus()[last_id as usize];
        for msr in [0x17A, 0x405, 0x406, 0x407] {
            ensure!(
                last.wrmsr(msr, 0) == WrmsrOutcome::Handled,
                "populate: clear {msr:#x}"
            );
        }
        let error = GuestMce::broken_frame_access(
            vendor,
            Access::InstructionFetch,
            GuestPhysAddr(0x7654_3210),
        );
        domain
            .inject(&error, Some(VcpuId(last_id)), &mut AllUp)
            .map_err(|e| format!("populate: second inject: {e}"))?;
    }
    let extra = if populate & 16 != 0 { 61 } else { 1 };
    let earlier: SavedDomain = SavedDomain {
        profile,
        vcpus,
        broken_frames: (0..extra).map(|k| GuestFrame(0x100 + k)).collect(),
    };
    domain
        .restore_domain(&earlier)
        .map_err(|e| format!("populate: restore_domain: {e}"))?;
    Ok(domain)
}

/// Everything a guest and the toolstack can see of a domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainView {
    pub vcpus: Vec<VcpuView>,
    pub frames: Vec<u64>,
    pub overflowed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuView {
    /// Every read of [`mca_msrs`], two words each ([`read_words`]), so that two views
    /// compare as one `memcmp` (the fuzz build traces every other comparison).
    pub reads: Vec<u64>,
    pub state: VcpuMceState,
    pub pending: bool,
}

/// A read outcome as two words: a tag and the value.
fn read_words(outcome: RdmsrOutcome) -> [u64; 2] {
    match outcome {
        RdmsrOutcome::Handled(value) => [0, value],
        RdmsrOutcome::NotOurs => [1, 0],
        RdmsrOutcome::RaiseGp(GpCause::ReadOnly) => [2, 0],
        RdmsrOutcome::RaiseGp(GpCause::ReservedBits { bits }) => [3, bits],
        RdmsrOutcome::RaiseGp(GpCause::NonZeroBankWrite) => [4, 0],
        RdmsrOutcome::RaiseGp(GpCause::NotAdvertised) => [5, 0],
        RdmsrOutcome::RaiseGp(other) => panic!("unknown #GP cause {other:?}"),
    }
}

/// The reads `read` gives for every MSR of [`mca_msrs`], as words.
fn reads(read: impl Fn(u32) -> RdmsrOutcome) -> Vec<u64> {
    mca_msrs().flat_map(|msr| read_words(read(msr))).collect()
}

/// The first MSR whose reads differ, named.
fn first_read_difference(was: &[u64], now: &[u64]) -> Option<String> {
    mca_msrs()
        .zip(was.chunks(2).zip(now.chunks(2)))
        .find(|(_, (was, now))| was != now)
        .map(|(msr, (was, now))| format!("rdmsr {msr:#x} (tag, value) {was:x?} and {now:x?}"))
}

pub fn observe_vcpu(vcpu: &Vcpu) -> VcpuView {
    VcpuView {
        reads: reads(|msr| vcpu.rdmsr(msr)),
        state: vcpu.state(),
        pending: vcpu.is_pending(),
    }
}

pub fn observe(domain: &TestDomain) -> DomainView {
    let frames = domain.broken_frames();
    DomainView {
        vcpus: domain.vcpus().iter().map(observe_vcpu).collect(),
        frames: frames.iter().map(|frame| frame.0).collect(),
        overflowed: frames.overflowed(),
    }
}

/// The first difference between two views of a vCPU, named.
fn vcpu_difference(id: usize, before: &VcpuView, after: &VcpuView) -> Option<String> {
    if before.reads != after.reads {
        let difference = first_read_difference(&before.reads, &after.reads);
        return Some(format!("vCPU {id}: before and after: {difference:?}"));
    }
    if before.state != after.state {
        return Some(format!(
            "vCPU {id}: state was {:?}, now {:?}",
            before.state, after.state
        ));
    }
    if before.pending != after.pending {
        return Some(format!(
            "vCPU {id}: pending was {}, now {}",
            before.pending, after.pending
        ));
    }
    None
}

fn ensure_unchanged(what: &str, before: &DomainView, after: &DomainView) -> Check {
    for (id, (was, now)) in before.vcpus.iter().zip(&after.vcpus).enumerate() {
        if let Some(difference) = vcpu_difference(id, was, now) {
            return Err(format!("{what}: {difference}"));
        }
    }
    ensure!(
        before.frames == after.frames && before.overflowed == after.overflowed,
        "{what}: broken frames were {:x?} (overflowed {}), now {:x?} (overflowed {})",
        before.frames,
        before.overflowed,
        after.frames,
        after.overflowed
    );
    Ok(())
}

/// The vCPU reads exactly `regs` through guest `rdmsr` (every MCA MSR), `state()` and the
/// pending flag.
fn ensure_reads(what: &str, id: usize, view: &VcpuView, regs: &Regs) -> Check {
    let want = reads(|msr| expected_read(regs, msr));
    if view.reads != want {
        let difference = first_read_difference(&view.reads, &want);
        return Err(format!(
            "{what}: vCPU {id} reads differ from what the record says: {difference:?}"
        ));
    }
    let want = regs.snapshot();
    ensure!(
        view.state == want.state,
        "{what}: vCPU {id} state {:?}, the record says {:?}",
        view.state,
        want.state
    );
    ensure!(
        view.pending == regs.pending,
        "{what}: vCPU {id} pending {}, the record says {}",
        view.pending,
        regs.pending
    );
    Ok(())
}

// ---- the documented refusals, plainly ------------------------------------------------------

/// Every rule a vCPU state breaks under `profile` (the checks of `check_snapshot`).
pub fn snapshot_errors(profile: Profile, regs: &Regs) -> Vec<RecordError> {
    let mut errors = Vec::new();
    if regs.vendor != profile.vendor() {
        errors.push(RecordError::State(StateError::VendorMismatch {
            destination: profile,
        }));
    }
    let unsupported = regs.caps & !COUNT & !restorable_caps(profile);
    if unsupported != 0 {
        errors.push(RecordError::State(StateError::Caps(
            CapsError::UnsupportedBits {
                profile,
                bits: unsupported,
            },
        )));
    }
    let kept = match regs.vendor {
        Vendor::Intel => CMCI_EN | THRESHOLD,
        Vendor::Amd => 0,
    };
    for (bank, bits) in (0u8..).zip(regs.ctl2) {
        if bits & !kept != 0 {
            errors.push(RecordError::State(StateError::Ctl2Reserved {
                bank,
                bits: bits & !kept,
            }));
        }
    }
    if regs.ext_ctl & !LMCE_EN != 0 {
        errors.push(RecordError::State(StateError::ExtCtlReserved {
            bits: regs.ext_ctl & !LMCE_EN,
        }));
    }
    if regs.ext_ctl != 0 && regs.caps & LMCE_P == 0 {
        errors.push(RecordError::State(StateError::ExtCtlWithoutLmce));
    }
    let status_allowed = MCG_STATUS_BITS | if regs.caps & LMCE_P != 0 { LMCE_S } else { 0 };
    if regs.status & !status_allowed != 0 {
        errors.push(RecordError::State(StateError::McgStatusReserved {
            bits: regs.status & !status_allowed,
        }));
    }
    if regs.bank1[0] & MSCOD != 0 {
        errors.push(RecordError::State(StateError::MscodInRecord {
            bits: regs.bank1[0] & MSCOD,
        }));
    }
    errors
}

/// A domain record as the checker hands it to the restore entry points: decoded from a
/// stream, or made by the checker (with a small list to carry an overflow mark).
#[allow(clippy::large_enum_variant)] // test data, one per restore
#[derive(Clone, Debug)]
pub enum DomainRecord {
    Default(SavedDomain),
    Small(SavedDomain<2>),
}

impl DomainRecord {
    fn profile(&self) -> Profile {
        match self {
            DomainRecord::Default(saved) => saved.profile,
            DomainRecord::Small(saved) => saved.profile,
        }
    }
    fn vcpus(&self) -> u32 {
        match self {
            DomainRecord::Default(saved) => saved.vcpus,
            DomainRecord::Small(saved) => saved.vcpus,
        }
    }
    fn frames(&self) -> Vec<u64> {
        match self {
            DomainRecord::Default(saved) => saved.broken_frames.iter().map(|f| f.0).collect(),
            DomainRecord::Small(saved) => saved.broken_frames.iter().map(|f| f.0).collect(),
        }
    }
    fn overflowed(&self) -> bool {
        match self {
            DomainRecord::Default(saved) => saved.broken_frames.overflowed(),
            DomainRecord::Small(saved) => saved.broken_frames.overflowed(),
        }
    }
    fn restore(&self, domain: &TestDomain, records: &[SavedVcpu]) -> Result<(), RecordError> {
        match self {
            DomainRecord::Default(saved) => domain.restore(Some(saved), records),
            DomainRecord::Small(saved) => domain.restore(Some(saved), records),
        }
        .map_err(RecordError::from)
    }
    fn restore_domain(&self, domain: &TestDomain) -> Result<(), RecordError> {
        match self {
            DomainRecord::Default(saved) => domain.restore_domain(saved),
            DomainRecord::Small(saved) => domain.restore_domain(saved),
        }
        .map_err(RecordError::from)
    }

    /// Every rule the record breaks for a live domain of `profile` and `count` vCPUs holding
    /// `frames` (missing vCPU records aside).
    fn errors(&self, profile: Profile, count: u32, frames: &[u64]) -> Vec<RecordError> {
        let mut errors = Vec::new();
        if self.profile() != profile {
            errors.push(RecordError::Restore(RestoreError::ProfileMismatch {
                saved: self.profile(),
                destination: profile,
            }));
        }
        if self.vcpus() != count {
            errors.push(RecordError::Restore(RestoreError::VcpuCountMismatch {
                saved: self.vcpus(),
                destination: count,
            }));
        }
        let union = union_frames(frames, &self.frames());
        if union.len() > CAPACITY {
            errors.push(RecordError::Restore(RestoreError::BrokenFramesCapacity {
                needed: union.len(),
                capacity: CAPACITY,
            }));
        }
        for frame in self.frames() {
            if frame >= FRAME_LIMIT {
                errors.push(RecordError::Restore(RestoreError::FrameOutOfRange {
                    frame,
                }));
            }
        }
        errors
    }
}

/// `live`, then the frames of `restored` it does not hold, in order.
fn union_frames(live: &[u64], restored: &[u64]) -> Vec<u64> {
    let mut known: std::collections::HashSet<u64> = live.iter().copied().collect();
    let mut union = live.to_vec();
    for &frame in restored {
        if known.insert(frame) {
            union.push(frame);
        }
    }
    union
}

/// The domain record the checker adds to whole-domain restores, chosen by `populate` bits
/// 7:5: one that matches (no frames; the 52-bit edge frame and another; 64 frames, which a
/// populated domain cannot take beside its own; an overflowed list; the populated domain's
/// own frames), one of another profile, one of another vCPU count.
pub fn checker_domain_record(profile: Profile, vcpus: u32, populate: u8) -> DomainRecord {
    let saved = |profile, vcpus, frames: &[u64]| {
        DomainRecord::Default(SavedDomain {
            profile,
            vcpus,
            broken_frames: frames.iter().map(|&f| GuestFrame(f)).collect(),
        })
    };
    let edge = FRAME_LIMIT - 1;
    match populate >> 5 {
        0 => saved(profile, vcpus, &[]),
        1 => saved(profile, vcpus, &[edge, 0x5_0000]),
        2 => {
            let other = match profile {
                Profile::Intel => Profile::Amd,
                Profile::IntelLmce => Profile::Intel,
                Profile::Amd => Profile::IntelLmce,
            };
            saved(other, vcpus, &[0x77])
        }
        3 => saved(profile, vcpus + 1, &[0x78]),
        4 => {
            let frames: Vec<u64> = (0..CAPACITY as u64).map(|k| 0x1000 + k).collect();
            saved(profile, vcpus, &frames)
        }
        5 => {
            let mut list = BrokenFrames::<2>::new();
            for frame in [0x9, edge, 0xA] {
                list.insert(GuestFrame(frame));
            }
            DomainRecord::Small(SavedDomain {
                profile,
                vcpus,
                broken_frames: list,
            })
        }
        6 if !KNOWN_GAP_RESTORE_TAKES_OUT_OF_RANGE_FRAMES => {
            saved(profile, vcpus, &[edge, FRAME_LIMIT])
        }
        6 => saved(profile, vcpus, &[edge]),
        _ => saved(profile, vcpus, &[0x100, 0x1_2345, edge]),
    }
}

// ---- restores ------------------------------------------------------------------------------

/// Which restore entry point.
#[derive(Clone, Copy, Debug)]
pub enum Entry<'a> {
    /// `Domain::restore_vcpus` (`restore` without a domain record).
    Vcpus,
    /// `Domain::restore` with a domain record.
    Whole(&'a DomainRecord),
    /// `Domain::restore_domain`.
    DomainOnly(&'a DomainRecord),
    /// `Vcpu::restore` of the one record on its vCPU.
    OneVcpu,
}

impl Entry<'_> {
    fn name(&self) -> &'static str {
        match self {
            Entry::Vcpus => "restore_vcpus",
            Entry::Whole(_) => "restore",
            Entry::DomainOnly(_) => "restore_domain",
            Entry::OneVcpu => "Vcpu::restore",
        }
    }
}

/// One record to restore: its vCPU id and the registers the bytes say it holds.
#[derive(Clone, Copy, Debug)]
pub struct Record {
    pub id: u32,
    pub regs: Regs,
}

impl Record {
    /// The record as vmce's `SavedVcpu`, its state checked for `profile` as every record's
    /// is before a restore.
    fn saved(&self, profile: Profile) -> Result<SavedVcpu, RecordError> {
        Ok(SavedVcpu {
            id: VcpuId(self.id),
            snapshot: self.regs.snapshot().check(profile)?,
        })
    }
}

/// A fresh and a populated domain to restore into, each rebuilt for every restore (a
/// successful one changes it) and observed once before.
pub struct Targets {
    pub profile: Profile,
    pub vcpus: u32,
    populate: u8,
    fresh_view: DomainView,
    populated_view: DomainView,
}

impl Targets {
    pub fn new(profile: Profile, vcpus: u32, populate: u8) -> Result<Targets, String> {
        let populated_domain = populated(profile, vcpus, populate)?;
        let populated_view = observe(&populated_domain);
        ensure!(
            populated_view.vcpus.iter().any(|vcpu| vcpu.pending)
                && populated_view.frames.len() >= 2,
            "populate: the domain holds no error"
        );
        Ok(Targets {
            profile,
            vcpus,
            populate,
            fresh_view: observe(&fresh(profile, vcpus)),
            populated_view,
        })
    }

    fn build(&self, populated_domain: bool) -> Result<TestDomain, String> {
        if populated_domain {
            populated(self.profile, self.vcpus, self.populate)
        } else {
            Ok(fresh(self.profile, self.vcpus))
        }
    }

    /// Restores `records` through `entry` into a fresh and a populated domain and checks
    /// the outcome against the rules; returns the domains a restore succeeded in, for the
    /// caller's own checks.
    pub fn restore(
        &self,
        what: &str,
        entry: Entry<'_>,
        records: &[Record],
    ) -> Result<Vec<TestDomain>, String> {
        let mut restored = Vec::new();
        for populated_domain in [false, true] {
            let what = format!(
                "{what}, {}, {} domain",
                entry.name(),
                if populated_domain {
                    "populated"
                } else {
                    "fresh"
                }
            );
            if let Some(domain) = self.restore_one(&what, populated_domain, entry, records)? {
                restored.push(domain);
            }
        }
        Ok(restored)
    }

    fn restore_one(
        &self,
        what: &str,
        populated_domain: bool,
        entry: Entry<'_>,
        records: &[Record],
    ) -> Result<Option<TestDomain>, String> {
        let domain = self.build(populated_domain)?;
        let before = if populated_domain {
            &self.populated_view
        } else {
            &self.fresh_view
        };
        let count = self.vcpus;
        let mut expected = Vec::new();
        let saved: Result<Vec<SavedVcpu>, RecordError> = records
            .iter()
            .map(|record| record.saved(self.profile))
            .collect();
        let result = match entry {
            Entry::OneVcpu => {
                let [record] = records else {
                    return Err(format!("{what}: one record expected"));
                };
                let Some(vcpu) = domain.vcpus().get(record.id as usize) else {
                    return Ok(None);
                };
                expected.extend(snapshot_errors(self.profile, &record.regs));
                record
                    .saved(self.profile)
                    .map(|saved| vcpu.restore(&saved.snapshot))
            }
            Entry::Vcpus | Entry::Whole(_) => {
                for (index, record) in records.iter().enumerate() {
                    if record.id >= count {
                        expected.push(RecordError::Restore(RestoreError::NoSuchVcpu {
                            id: record.id,
                            vcpus: count,
                        }));
                    }
                    if records[..index]
                        .iter()
                        .any(|earlier| earlier.id == record.id)
                    {
                        expected.push(RecordError::Restore(RestoreError::DuplicateVcpu {
                            id: record.id,
                        }));
                    }
                    expected.extend(snapshot_errors(self.profile, &record.regs));
                }
                match entry {
                    Entry::Whole(domain_record) => {
                        expected.extend(domain_record.errors(self.profile, count, &before.frames));
                        for id in 0..count {
                            if !records.iter().any(|record| record.id == id) {
                                expected
                                    .push(RecordError::Restore(RestoreError::MissingVcpu { id }));
                            }
                        }
                        saved.and_then(|saved| domain_record.restore(&domain, &saved))
                    }
                    _ => saved
                        .and_then(|saved| domain.restore_vcpus(&saved).map_err(RecordError::from)),
                }
            }
            Entry::DomainOnly(domain_record) => {
                expected.extend(domain_record.errors(self.profile, count, &before.frames));
                domain_record.restore_domain(&domain)
            }
        };
        let after = observe(&domain);
        seen(|| {
            let kind = entry.name();
            let domain = if populated_domain {
                "populated"
            } else {
                "fresh"
            };
            match &result {
                Ok(()) => format!("{kind} {domain} Ok"),
                Err(error) => format!("{kind} {domain} {}", variant(error)),
            }
        });
        match result {
            Err(error) => {
                ensure!(
                    expected.contains(&error),
                    "{what}: refused with {error:?}, but the rules refuse only with {expected:?}; records {records:x?}; {entry:x?}"
                );
                ensure_unchanged(
                    &format!("{what}: failed with {error:?} ({entry:x?})"),
                    before,
                    &after,
                )?;
                Ok(None)
            }
            Ok(()) => {
                ensure!(
                    expected.is_empty(),
                    "{what}: restored, but the rules refuse with {expected:?}; records {records:x?}; {entry:x?}"
                );
                let restores_vcpus = !matches!(entry, Entry::DomainOnly(_));
                for (id, (was, now)) in before.vcpus.iter().zip(&after.vcpus).enumerate() {
                    let record = records
                        .iter()
                        .find(|record| restores_vcpus && record.id as usize == id);
                    match record {
                        Some(record) => ensure_reads(what, id, now, &record.regs)?,
                        None => {
                            if let Some(difference) = vcpu_difference(id, was, now) {
                                return Err(format!(
                                    "{what}: a vCPU without a record changed: {difference}"
                                ));
                            }
                        }
                    }
                }
                let (frames, overflowed) = match entry {
                    Entry::Whole(domain_record) | Entry::DomainOnly(domain_record) => (
                        union_frames(&before.frames, &domain_record.frames()),
                        before.overflowed || domain_record.overflowed(),
                    ),
                    Entry::Vcpus | Entry::OneVcpu => (before.frames.clone(), before.overflowed),
                };
                ensure!(
                    after.frames == frames && after.overflowed == overflowed,
                    "{what}: broken frames {:x?} (overflowed {}), expected {frames:x?} (overflowed {overflowed})",
                    after.frames,
                    after.overflowed
                );
                Ok(Some(domain))
            }
        }
    }

    /// Every entry point for `records`: alone, as a whole domain with the checker's domain
    /// record, each on its own vCPU; and the checker's domain record alone.
    pub fn restore_everywhere(
        &self,
        what: &str,
        records: &[Record],
    ) -> Result<Vec<TestDomain>, String> {
        let domain_record = checker_domain_record(self.profile, self.vcpus, self.populate);
        let restored = self.restore(what, Entry::Vcpus, records)?;
        self.restore(what, Entry::Whole(&domain_record), records)?;
        for record in records {
            self.restore(what, Entry::OneVcpu, core::slice::from_ref(record))?;
        }
        Ok(restored)
    }

    pub fn restore_checker_domain_record(&self) -> Check {
        let domain_record = checker_domain_record(self.profile, self.vcpus, self.populate);
        self.restore(
            "checker's domain record",
            Entry::DomainOnly(&domain_record),
            &[],
        )?;
        Ok(())
    }
}

// ---- Xen's VMCE_VCPU, decoded plainly ------------------------------------------------------

/// A `VMCE_VCPU` payload as a Xen loader takes it.
#[derive(Clone, Copy, Debug)]
pub struct XenLoad {
    pub id: u32,
    /// The four words, zero-extended.
    pub raw: [u64; 4],
    /// What the vCPU holds after the load.
    pub regs: Regs,
    pub notes: LoadNotes,
}

/// The payload's four words as a loader that takes `payload.len()` bytes reads them:
/// zero-extended to 32 bytes, little-endian.
pub fn xen_words(payload: &[u8]) -> Option<[u64; 4]> {
    let mut bytes = [0u8; 32];
    bytes.get_mut(..payload.len())?.copy_from_slice(payload);
    let word = |k: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[8 * k..8 * k + 8]);
        u64::from_le_bytes(w)
    };
    Some([word(0), word(1), word(2), word(3)])
}

/// Loads one `VMCE_VCPU` payload by the documented rules; on refusal, every rule it breaks
/// and its words when its length could be read at all.
pub fn xen_reference(
    instance: u16,
    payload: &[u8],
    profile: Profile,
    vcpus: u32,
    loader: XenRelease,
) -> Result<XenLoad, (Vec<RecordError>, Option<[u64; 4]>)> {
    let mut errors = Vec::new();
    let id = u32::from(instance);
    if id >= vcpus {
        errors.push(RecordError::Restore(RestoreError::NoSuchVcpu { id, vcpus }));
    }
    let own = xen_own_len(loader);
    let length_taken = match loader {
        XenRelease::Xen4_2 => payload.len() == own,
        XenRelease::Xen4_3 | XenRelease::Xen4_10 => payload.len() <= own,
    };
    if !length_taken {
        errors.push(RecordError::Hvm(HvmError::BadLength {
            length: payload.len() as u32,
            accepted: own as u32,
        }));
        return Err((errors, xen_words(payload)));
    }
    let Some(raw) = xen_words(payload) else {
        return Err((errors, None));
    };
    let [caps, ctl2_0, ctl2_1, ext_ctl] = raw;
    if caps & LMCE_P != 0 && loader != XenRelease::Xen4_10 {
        errors.push(RecordError::Hvm(HvmError::LmceBeforeXen410));
    }
    let unsupported = caps & !COUNT & !restorable_caps(profile);
    if unsupported != 0 {
        errors.push(RecordError::State(StateError::Caps(
            CapsError::UnsupportedBits {
                profile,
                bits: unsupported,
            },
        )));
    }
    if !errors.is_empty() {
        return Err((errors, Some(raw)));
    }
    let kept = ctl2_kept(profile);
    let ext_kept = if caps & LMCE_P != 0 { LMCE_EN } else { 0 };
    let mut regs = Regs::defaults(profile.vendor(), caps);
    regs.ctl2 = [ctl2_0 & kept, ctl2_1 & kept];
    regs.ext_ctl = ext_ctl & ext_kept;
    Ok(XenLoad {
        id,
        raw,
        regs,
        notes: LoadNotes {
            mci_ctl2_dropped: [ctl2_0 & !kept, ctl2_1 & !kept],
            mcg_ext_ctl_dropped: ext_ctl & !ext_kept,
        },
    })
}

/// The library's load of one payload agrees with [`xen_reference`].
fn compare_xen_load(
    what: &str,
    library: Result<(SavedVcpu, LoadNotes), RecordError>,
    reference: &Result<XenLoad, (Vec<RecordError>, Option<[u64; 4]>)>,
) -> Result<Option<LoadNotes>, String> {
    match (library, reference) {
        (Ok((saved, notes)), Ok(load)) => {
            ensure!(
                saved.id.0 == load.id && *saved.snapshot == load.regs.snapshot(),
                "{what}: loaded {saved:x?}, the payload says {:x?}",
                load.regs
            );
            ensure!(
                notes == load.notes,
                "{what}: notes {notes:x?}, the payload's dropped bits are {:x?}",
                load.notes
            );
            return Ok(Some(notes));
        }
        (Ok((saved, _)), Err((errors, _))) => {
            return Err(format!(
                "{what}: loaded {saved:x?}, but the rules refuse it with {errors:?}"
            ));
        }
        (Err(error), Ok(load)) => {
            return Err(format!(
                "{what}: refused with {error:?}, but the rules load {load:x?}"
            ));
        }
        (Err(error), Err((errors, _))) => {
            seen(|| format!("xen load {}", variant(&error)));
            ensure!(
                errors.contains(&error),
                "{what}: refused with {error:?}, the rules refuse with {errors:?}"
            )
        }
    }
    Ok(None)
}

/// The library's `LoadNotes` of a restored record (`load.notes`) name exactly the bits that
/// differ between the raw payload and what the live vCPU holds.
fn check_notes_against_live(what: &str, domain: &TestDomain, load: &XenLoad) -> Check {
    let vcpu = &domain.vcpus()[load.id as usize];
    let state = vcpu.state();
    for bank in 0..2 {
        let live = match vcpu.rdmsr(0x280 + bank as u32) {
            RdmsrOutcome::Handled(value) => value,
            other => return Err(format!("{what}: MC{bank}_CTL2 read {other:?}")),
        };
        ensure!(
            live == state.mci_ctl2[bank].bits(),
            "{what}: MC{bank}_CTL2 reads {live:#x}, state holds {:#x}",
            state.mci_ctl2[bank].bits()
        );
        ensure!(
            load.notes.mci_ctl2_dropped[bank] == load.raw[1 + bank] ^ live,
            "{what}: notes say MC{bank}_CTL2 dropped {:#x}; payload {:#x}, restored {live:#x}",
            load.notes.mci_ctl2_dropped[bank],
            load.raw[1 + bank]
        );
    }
    if !load.notes.is_empty() {
        seen(|| "notes checked against a live vCPU".to_string());
    }
    let live_ext = state.mcg_ext_ctl.bits();
    if let RdmsrOutcome::Handled(read) = vcpu.rdmsr(0x4D0) {
        ensure!(
            read == live_ext,
            "{what}: MCG_EXT_CTL reads {read:#x}, state {live_ext:#x}"
        );
    }
    ensure!(
        load.notes.mcg_ext_ctl_dropped == load.raw[3] ^ live_ext,
        "{what}: notes say MCG_EXT_CTL dropped {:#x}; payload {:#x}, restored {live_ext:#x}",
        load.notes.mcg_ext_ctl_dropped,
        load.raw[3]
    );
    Ok(())
}

/// The registers the raw words say, unmasked (a hostile record).
fn hostile_xen(vendor: Vendor, raw: [u64; 4]) -> Regs {
    let [caps, ctl2_0, ctl2_1, ext_ctl] = raw;
    let mut regs = Regs::defaults(vendor, caps);
    regs.ctl2 = [ctl2_0, ctl2_1];
    regs.ext_ctl = ext_ctl;
    regs
}

/// `xen_record`: one `VMCE_VCPU` record (descriptor and payload).
pub fn check_xen_record(data: &[u8]) -> Check {
    let Some((selector, bytes)) = Selector::split(data) else {
        return Ok(());
    };
    let profile = selector.profile;
    let loader = XenRelease::ALL[selector.release % 3];
    let vcpus = selector.vcpus;
    let library = xen::decode(bytes, profile, vcpus, loader);

    // The framing, plainly.
    let (instance, payload) = match bytes {
        [t0, t1, i0, i1, l0, l1, l2, l3, rest @ ..] => {
            let typecode = u16::from_le_bytes([*t0, *t1]);
            let length = u32::from_le_bytes([*l0, *l1, *l2, *l3]) as usize;
            let framing = if typecode != VMCE_VCPU {
                Some(RecordError::Hvm(HvmError::WrongTypecode {
                    found: typecode,
                }))
            } else if rest.len() < length {
                Some(RecordError::Truncated {
                    needed: 8 + length,
                    available: bytes.len(),
                })
            } else {
                None
            };
            if let Some(refusal) = framing {
                ensure!(
                    library.as_ref().err() == Some(&refusal),
                    "xen_record: {library:x?}, expected {refusal:?}"
                );
                return Ok(());
            }
            (u16::from_le_bytes([*i0, *i1]), &rest[..length])
        }
        _ => {
            let refusal = RecordError::Truncated {
                needed: 8,
                available: bytes.len(),
            };
            ensure!(
                library.as_ref().err() == Some(&refusal),
                "xen_record: {library:x?}, expected {refusal:?}"
            );
            return Ok(());
        }
    };
    let reference = xen_reference(instance, payload, profile, vcpus, loader);
    let what = format!("xen_record {profile}, {loader} loader, {vcpus} vCPUs");
    if let Ok((_, len, _)) = library {
        ensure!(
            len == 8 + payload.len(),
            "{what}: took {len} bytes of {}",
            8 + payload.len()
        );
    }
    let library_notes = compare_xen_load(
        &what,
        library.map(|(saved, _, notes)| (saved, notes)),
        &reference,
    )?;

    // Written back in the loader's own layout, the state loads unchanged; a release's own
    // layout with nothing dropped is written back byte for byte.
    if let Ok(load) = &reference {
        let saved = SavedVcpu {
            id: VcpuId(load.id),
            snapshot: load
                .regs
                .snapshot()
                .check(profile)
                .map_err(|e| format!("{what}: the loaded state is refused: {e}"))?,
        };
        let mut out = [0u8; xen::MAX_RECORD_BYTES];
        let encoding = xen::encode(&saved, loader, LossPolicy::Refuse, &mut out)
            .map_err(|e| format!("{what}: re-encode: {e}"))?;
        let again = xen::decode(&out[..encoding.len], profile, vcpus, loader)
            .map_err(|e| format!("{what}: decode again: {e}"))?;
        ensure!(
            again.0 == saved && again.2.is_empty(),
            "{what}: decoded again as {again:x?}"
        );
        if let Some(release) = XenRelease::from_payload_len(payload.len() as u32)
            && load.notes.is_empty()
            && let Ok(encoding) = xen::encode(&saved, release, LossPolicy::Refuse, &mut out)
        {
            ensure!(
                out[..encoding.len] == bytes[..8 + payload.len()],
                "{what}: re-encoded in {release} as other bytes"
            );
        }
    }

    let targets = Targets::new(profile, vcpus, selector.populate)?;
    targets.restore_checker_domain_record()?;
    let hostile_vendor = selector.hostile_vendor();
    let mut loaded = None;
    if let Ok(load) = &reference {
        let record = Record {
            id: load.id,
            regs: load.regs,
        };
        let library_load = XenLoad {
            notes: library_notes.unwrap_or(load.notes),
            ..*load
        };
        for domain in targets.restore_everywhere(&what, &[record])? {
            check_notes_against_live(&what, &domain, &library_load)?;
        }
        loaded = Some(record);
    }
    // What the payload said before any loader rule, on its own vCPU, and beside the loaded
    // record on the next vCPU: a hostile record fails the whole restore.
    let raw = match &reference {
        Ok(load) => Some(load.raw),
        Err((_, raw)) => *raw,
    };
    if let Some(raw) = raw {
        let hostile = Record {
            id: u32::from(instance),
            regs: hostile_xen(hostile_vendor, raw),
        };
        let what = format!("{what}, hostile");
        targets.restore_everywhere(&what, &[hostile])?;
        if let Some(record) = loaded {
            let neighbour = Record {
                id: (record.id + 1) % vcpus,
                ..hostile
            };
            targets.restore(&what, Entry::Vcpus, &[record, neighbour])?;
        }
    }
    Ok(())
}

// ---- HVM context streams -------------------------------------------------------------------

/// A context stream's header (changeset, CPUID, TSC kHz) and records (typecode, instance,
/// payload).
pub type HvmWalk<'a> = (u64, u32, u32, Vec<(u16, u16, &'a [u8])>);

/// A stream's framing, walked plainly: the header's fields and every record before END.
pub fn hvm_reference(bytes: &[u8]) -> Result<HvmWalk<'_>, RecordError> {
    let descriptor = |at: usize| -> Option<(u16, u16, usize)> {
        let d = bytes.get(at..at + 8)?;
        Some((
            u16::from_le_bytes([d[0], d[1]]),
            u16::from_le_bytes([d[2], d[3]]),
            u32::from_le_bytes([d[4], d[5], d[6], d[7]]) as usize,
        ))
    };
    let (typecode, _, length) = descriptor(0).ok_or(RecordError::Truncated {
        needed: 8,
        available: bytes.len(),
    })?;
    if typecode != 1 {
        return Err(RecordError::Hvm(HvmError::MissingHeader {
            found: typecode,
        }));
    }
    if length != 24 {
        return Err(RecordError::Hvm(HvmError::BadHeaderLength {
            length: length as u32,
        }));
    }
    let header = bytes.get(8..32).ok_or(RecordError::Truncated {
        needed: 32,
        available: bytes.len(),
    })?;
    let u32_at = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let magic = u32_at(0);
    if magic != 0x5438_1286 {
        return Err(RecordError::Hvm(HvmError::BadMagic { found: magic }));
    }
    let version = u32_at(4);
    if version != 1 {
        return Err(RecordError::Hvm(HvmError::BadHeaderVersion {
            found: version,
        }));
    }
    let mut changeset = [0u8; 8];
    changeset.copy_from_slice(&header[8..16]);
    let mut records = Vec::new();
    let mut at = 32;
    loop {
        let Some((typecode, instance, length)) = descriptor(at) else {
            return Err(RecordError::Hvm(HvmError::MissingEnd));
        };
        if typecode == 0 {
            return Ok((
                u64::from_le_bytes(changeset),
                u32_at(16),
                u32_at(20),
                records,
            ));
        }
        let payload = bytes
            .get(at + 8..at + 8 + length)
            .ok_or(RecordError::Truncated {
                needed: 8 + length,
                available: bytes.len() - at,
            })?;
        records.push((typecode, instance, payload));
        at += 8 + length;
    }
}

/// `hvm_context`: a whole HVM context stream, loaded by every loader release.
pub fn check_hvm_context(data: &[u8]) -> Check {
    let Some((selector, bytes)) = Selector::split(data) else {
        return Ok(());
    };
    let profile = selector.profile;
    let vcpus = selector.vcpus;
    let parsed = HvmContext::parse(bytes);
    let reference = hvm_reference(bytes);
    let (context, records) = match (parsed, reference) {
        (Ok(context), Ok((changeset, cpuid, gtsc_khz, records))) => {
            let header = context.header();
            ensure!(
                (
                    header.version,
                    header.changeset,
                    header.cpuid,
                    header.gtsc_khz
                ) == (1, changeset, cpuid, gtsc_khz),
                "hvm_context: header {header:x?}"
            );
            let walked: Vec<_> = context
                .records()
                .map(|r| (r.descriptor.typecode, r.descriptor.instance, r.payload))
                .collect();
            ensure!(
                walked == records,
                "hvm_context: records {walked:x?}, the stream has {records:x?}"
            );
            (context, records)
        }
        (Err(error), Err(refusal)) => {
            ensure!(
                error == refusal,
                "hvm_context: refused with {error:?}, expected {refusal:?}"
            );
            return Ok(());
        }
        (parsed, reference) => {
            return Err(format!(
                "hvm_context: parse {parsed:x?}, plain walk {reference:x?}"
            ));
        }
    };

    // Re-written, the stream keeps its header and records (and its bytes, unless it had what
    // Xen's loader ignores).
    let mut out = vec![0u8; bytes.len()];
    let mut writer =
        HvmWriter::new(&mut out, context.header()).map_err(|e| format!("header: {e}"))?;
    for record in context.records() {
        writer
            .push(
                record.descriptor.typecode,
                record.descriptor.instance,
                record.payload,
            )
            .map_err(|e| format!("push: {e}"))?;
    }
    let len = writer.finish().map_err(|e| format!("finish: {e}"))?.len;
    let again = HvmContext::parse(&out[..len]).map_err(|e| format!("re-parse: {e}"))?;
    ensure!(
        again.header() == context.header(),
        "hvm_context: header re-written differently"
    );
    ensure!(
        again.records().eq(context.records()),
        "hvm_context: records re-written differently"
    );
    let canonical = bytes[2..4] == [0, 0]
        && context.end_offset() == bytes.len()
        && bytes[bytes.len() - 6..] == [0; 6];
    ensure!(
        !canonical || out[..len] == *bytes,
        "hvm_context: canonical stream re-written differently"
    );

    let vmce: Vec<(u16, &[u8])> = records
        .iter()
        .filter(|(typecode, _, _)| *typecode == VMCE_VCPU)
        .map(|&(_, instance, payload)| (instance, payload))
        .collect();
    let targets = Targets::new(profile, vcpus, selector.populate)?;
    let mut restored_lists: Vec<Vec<(u32, Regs)>> = Vec::new();
    for loader in XenRelease::ALL {
        let what = format!("hvm_context {profile}, {loader} loader, {vcpus} vCPUs");
        let library: Vec<_> = context.vmce_vcpus(profile, vcpus, loader).collect();
        ensure!(
            library.len() == vmce.len(),
            "{what}: {} VMCE_VCPU results for {} records",
            library.len(),
            vmce.len()
        );
        let mut loads = Vec::new();
        for (index, (result, &(instance, payload))) in library.into_iter().zip(&vmce).enumerate() {
            let reference = xen_reference(instance, payload, profile, vcpus, loader);
            let library_notes =
                compare_xen_load(&format!("{what}, record {index}"), result, &reference)?;
            // The live check below judges the library's notes.
            loads.push(reference.map(|load| XenLoad {
                notes: library_notes.unwrap_or(load.notes),
                ..load
            }));
        }
        // A toolstack restores a stream only when every record loaded.
        let Some(loads) = loads.into_iter().collect::<Result<Vec<_>, _>>().ok() else {
            continue;
        };
        let list: Vec<(u32, Regs)> = loads.iter().map(|load| (load.id, load.regs)).collect();
        if restored_lists.contains(&list) {
            continue;
        }
        restored_lists.push(list);
        let records: Vec<Record> = loads
            .iter()
            .map(|load| Record {
                id: load.id,
                regs: load.regs,
            })
            .collect();
        for domain in targets.restore(&what, Entry::Vcpus, &records)? {
            for load in &loads {
                // With two records for one vCPU the restore was refused; here each vCPU
                // holds its one record.
                check_notes_against_live(&what, &domain, load)?;
            }
        }
        let domain_record = checker_domain_record(profile, vcpus, selector.populate);
        targets.restore(&what, Entry::Whole(&domain_record), &records)?;
    }
    // Every record whose words can be read, unmasked, restored together.
    let hostile_vendor = selector.hostile_vendor();
    let hostile: Vec<Record> = vmce
        .iter()
        .filter_map(|&(instance, payload)| {
            Some(Record {
                id: u32::from(instance),
                regs: hostile_xen(hostile_vendor, xen_words(payload)?),
            })
        })
        .collect();
    if !hostile.is_empty() {
        let what = format!("hvm_context {profile}, {vcpus} vCPUs, hostile");
        targets.restore(&what, Entry::Vcpus, &hostile)?;
    }
    targets.restore_checker_domain_record()
}

// ---- native records, decoded plainly -------------------------------------------------------

/// A postcard payload reader. Canonical: only what postcard writes (shortest LEB128
/// varints). Lenient: what postcard's deserializer takes (up to 5 or 10 bytes, the last one
/// within the type), which the library then refuses unless it is canonical.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    lenient: bool,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    /// A `u32` (`bits` 32) or `u64` varint.
    fn varint(&mut self, bits: u32) -> Option<u64> {
        let (max_bytes, last_max) = if bits == 32 { (5, 0x0F) } else { (10, 0x01) };
        let mut value: u64 = 0;
        for index in 0..max_bytes {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7F) << (7 * index);
            if byte & 0x80 == 0 {
                if index == max_bytes - 1 && byte > last_max {
                    return None;
                }
                if !self.lenient && index > 0 && byte == 0 {
                    return None;
                }
                return Some(value);
            }
        }
        None
    }

    fn bool(&mut self) -> Option<bool> {
        match self.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
}

/// One native record's fields as the bytes say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NativeFields {
    Vcpu {
        id: u64,
        regs: Regs,
    },
    Domain {
        vendor: u8,
        lmce: bool,
        vcpus: u64,
        frames: Vec<u64>,
    },
}

/// Reads a payload of `kind` and `version`: its fields and the bytes they took. A list of
/// more than [`CAPACITY`] frames is not read.
fn read_payload(
    kind: u8,
    version: u8,
    payload: &[u8],
    vendor: Vendor,
    lenient: bool,
) -> Option<(NativeFields, usize)> {
    let mut reader = Reader {
        bytes: payload,
        at: 0,
        lenient,
    };
    let fields = match (kind, version) {
        (1, 1 | 2) => {
            let id = reader.varint(32)?;
            let mut regs = Regs::defaults(vendor, reader.varint(64)?);
            regs.ctl2 = [reader.varint(64)?, reader.varint(64)?];
            regs.ext_ctl = reader.varint(64)?;
            if version == 2 {
                regs.status = reader.varint(64)?;
                regs.bank1 = [reader.varint(64)?, reader.varint(64)?, reader.varint(64)?];
                regs.pending = reader.bool()?;
            }
            NativeFields::Vcpu { id, regs }
        }
        (2, 2) => {
            let vendor = reader.byte()?;
            let lmce = reader.bool()?;
            let vcpus = reader.varint(32)?;
            let count = reader.varint(64)?;
            if count > CAPACITY as u64 {
                return None;
            }
            let mut frames = Vec::new();
            for _ in 0..count {
                frames.push(reader.varint(64)?);
            }
            NativeFields::Domain {
                vendor,
                lmce,
                vcpus,
                frames,
            }
        }
        _ => return None,
    };
    Some((fields, reader.at))
}

/// The native record at the start of `bytes`, decoded plainly by the documented rules: its
/// fields, or every error a rule refuses it with; and the record's length when its envelope
/// could be read.
pub fn native_reference(
    bytes: &[u8],
    profile: Profile,
    vcpus: u32,
    loader: NativeVersion,
) -> (Result<NativeFields, Vec<RecordError>>, Option<usize>) {
    use native::RecordKind;
    let Some(&[kind_byte, version, l0, l1]) = bytes.first_chunk::<4>() else {
        return (
            Err(vec![RecordError::Truncated {
                needed: 4,
                available: bytes.len(),
            }]),
            None,
        );
    };
    let kind = match kind_byte {
        1 => RecordKind::Vcpu,
        2 => RecordKind::Domain,
        _ => {
            return (
                Err(vec![RecordError::Native(NativeError::UnknownKind {
                    kind: kind_byte,
                })]),
                None,
            );
        }
    };
    let newest = loader as u8;
    if version == 0 || version > newest {
        return (
            Err(vec![RecordError::Native(NativeError::UnsupportedVersion {
                kind,
                version,
                newest,
            })]),
            None,
        );
    }
    let length = usize::from(u16::from_le_bytes([l0, l1]));
    let Some(payload) = bytes.get(4..4 + length) else {
        return (
            Err(vec![RecordError::Truncated {
                needed: 4 + length,
                available: bytes.len(),
            }]),
            None,
        );
    };
    let total = Some(4 + length);
    if (kind, version) == (RecordKind::Domain, 1) {
        return (
            Err(vec![RecordError::Native(NativeError::NoSuchVersion {
                kind,
                version,
            })]),
            total,
        );
    }
    if kind == RecordKind::Domain {
        // The list's length is checked against the capacity before the rest is read.
        let mut prefix = Reader {
            bytes: payload,
            at: 0,
            lenient: true,
        };
        if let (Some(_), Some(_), Some(_), Some(count)) = (
            prefix.byte(),
            prefix.bool(),
            prefix.varint(32),
            prefix.varint(64),
        ) && count > CAPACITY as u64
        {
            return (
                Err(vec![RecordError::Native(
                    NativeError::TooManyBrokenFrames {
                        count,
                        capacity: CAPACITY,
                    },
                )]),
                total,
            );
        }
    }
    match read_payload(kind_byte, version, payload, profile.vendor(), true) {
        None => {
            return (
                Err(vec![RecordError::Native(NativeError::MalformedPayload)]),
                total,
            );
        }
        Some((_, used)) if used < length => {
            return (
                Err(vec![RecordError::Native(NativeError::TrailingBytes {
                    extra: length - used,
                })]),
                total,
            );
        }
        Some(_) => {}
    }
    let fields = match read_payload(kind_byte, version, payload, profile.vendor(), false) {
        Some((fields, used)) if used == length => fields,
        _ => {
            return (
                Err(vec![RecordError::Native(NativeError::MalformedPayload)]),
                total,
            );
        }
    };
    let mut errors = Vec::new();
    match &fields {
        NativeFields::Vcpu { id, regs } => {
            if *id >= u64::from(vcpus) {
                errors.push(RecordError::Restore(RestoreError::NoSuchVcpu {
                    id: *id as u32,
                    vcpus,
                }));
            }
            errors.extend(snapshot_errors(profile, regs));
        }
        NativeFields::Domain {
            vendor,
            lmce,
            vcpus: saved_vcpus,
            frames,
        } => {
            match native_profile(*vendor, *lmce) {
                Ok(saved) if saved != profile => {
                    errors.push(RecordError::Restore(RestoreError::ProfileMismatch {
                        saved,
                        destination: profile,
                    }))
                }
                Ok(_) => {}
                Err(error) => errors.push(error),
            }
            if *saved_vcpus != u64::from(vcpus) {
                errors.push(RecordError::Restore(RestoreError::VcpuCountMismatch {
                    saved: *saved_vcpus as u32,
                    destination: vcpus,
                }));
            }
            for (index, &frame) in frames.iter().enumerate() {
                if frame >= FRAME_LIMIT {
                    errors.push(RecordError::Restore(RestoreError::FrameOutOfRange {
                        frame,
                    }));
                }
                if frames[..index].contains(&frame) {
                    errors.push(RecordError::Native(NativeError::DuplicateBrokenFrame {
                        frame,
                    }));
                }
            }
        }
    }
    if errors.is_empty() {
        (Ok(fields), total)
    } else {
        (Err(errors), total)
    }
}

/// The fields of the native record at the start of `bytes` whatever their values, when its
/// envelope and payload are well-formed; `vendor` for the vCPU state.
fn hostile_fields(bytes: &[u8], vendor: Vendor) -> Option<NativeFields> {
    let &[kind, version, l0, l1] = bytes.first_chunk::<4>()?;
    let length = usize::from(u16::from_le_bytes([l0, l1]));
    let payload = bytes.get(4..4 + length)?;
    match read_payload(kind, version, payload, vendor, false)? {
        (fields, used) if used == length => Some(fields),
        _ => None,
    }
}

fn native_profile(vendor: u8, lmce: bool) -> Result<Profile, RecordError> {
    match (vendor, lmce) {
        (0, false) => Ok(Profile::Intel),
        (0, true) => Ok(Profile::IntelLmce),
        (1, false) => Ok(Profile::Amd),
        (1, true) => Err(RecordError::Native(NativeError::LmceOnAmd)),
        (code, _) => Err(RecordError::Native(NativeError::UnknownVendor { code })),
    }
}

/// Why the checker's native stream walker refuses a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamError {
    /// A record at `offset` does not decode.
    Record { offset: usize, error: RecordError },
    /// A second domain record: the library restores one per domain, and a toolstack cannot
    /// know which of two is the domain's.
    TwoDomainRecords { first: usize, second: usize },
}

/// A native stream as a toolstack reads it before restoring: every record decoded, at most
/// one domain record.
#[derive(Clone, Debug, Default)]
pub struct NativeStream {
    pub domain: Option<SavedDomain>,
    pub vcpus: Vec<SavedVcpu>,
}

/// Walks `bytes` as back-to-back native records.
///
/// # Errors
/// The first record that does not decode, or a second domain record.
pub fn walk_native(
    bytes: &[u8],
    profile: Profile,
    vcpus: u32,
    loader: NativeVersion,
) -> Result<NativeStream, StreamError> {
    let mut stream = NativeStream::default();
    let mut first_domain = None;
    let mut offset = 0;
    while offset < bytes.len() {
        let (record, len) = native::decode(&bytes[offset..], profile, vcpus, loader)
            .map_err(|error| StreamError::Record { offset, error })?;
        match record {
            NativeRecord::Vcpu(saved) => stream.vcpus.push(saved),
            NativeRecord::Domain(saved) => {
                if let Some(first) = first_domain {
                    return Err(StreamError::TwoDomainRecords {
                        first,
                        second: offset,
                    });
                }
                first_domain = Some(offset);
                stream.domain = Some(saved);
            }
        }
        offset += len;
    }
    Ok(stream)
}

/// `native_record`: a stream of native records.
pub fn check_native_record(data: &[u8]) -> Check {
    let Some((selector, bytes)) = Selector::split(data) else {
        return Ok(());
    };
    let profile = selector.profile;
    let loader = NativeVersion::ALL[selector.release % 2];
    let vcpus = selector.vcpus;
    let what = format!("native_record {profile}, {loader} loader, {vcpus} vCPUs");

    // Record by record: the library against the plain decode, each decoded record
    // re-encoded byte for byte; the hostile (undecoded) fields kept for the restores.
    let mut hostile_vcpus = Vec::new();
    let mut hostile_domain: Option<(u8, bool, u64, Vec<u64>)> = None;
    // What the walker must answer, worked out record by record.
    let mut expected_walk: Option<StreamError> = None;
    let mut first_domain = None;
    let mut offset = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let at = format!("{what}, record at {offset}");
        let library = native::decode(rest, profile, vcpus, loader);
        let (reference, total) = native_reference(rest, profile, vcpus, loader);
        match (&library, &reference) {
            (Ok((record, len)), Ok(fields)) => {
                ensure!(
                    Some(*len) == total,
                    "{at}: length {len}, the envelope says {total:?}"
                );
                let version = if rest[1] == 1 {
                    NativeVersion::V1
                } else {
                    NativeVersion::V2
                };
                let mut out = [0u8; native::MAX_DOMAIN_RECORD_BYTES];
                let encoding = match (record, fields) {
                    (NativeRecord::Vcpu(saved), NativeFields::Vcpu { id, regs }) => {
                        ensure!(
                            u64::from(saved.id.0) == *id && *saved.snapshot == regs.snapshot(),
                            "{at}: decoded {saved:x?}, the bytes say vCPU {id} {regs:x?}"
                        );
                        native::encode_vcpu(saved, version, LossPolicy::Refuse, &mut out)
                    }
                    (
                        NativeRecord::Domain(saved),
                        NativeFields::Domain {
                            vcpus: count,
                            frames,
                            ..
                        },
                    ) => {
                        let decoded: Vec<u64> = saved.broken_frames.iter().map(|f| f.0).collect();
                        ensure!(
                            saved.profile == profile
                                && u64::from(saved.vcpus) == *count
                                && decoded == *frames
                                && !saved.broken_frames.overflowed(),
                            "{at}: decoded {saved:x?}, the bytes say {fields:x?}"
                        );
                        match first_domain {
                            None => first_domain = Some(offset),
                            Some(first) => {
                                expected_walk.get_or_insert(StreamError::TwoDomainRecords {
                                    first,
                                    second: offset,
                                });
                            }
                        }
                        native::encode_domain(saved, version, LossPolicy::Refuse, &mut out)
                    }
                    _ => {
                        return Err(format!(
                            "{at}: decoded {record:x?}, the bytes say {fields:x?}"
                        ));
                    }
                }
                .map_err(|e| format!("{at}: re-encode: {e}"))?;
                ensure!(
                    out[..encoding.len] == rest[..*len],
                    "{at}: re-encoded as other bytes"
                );
            }
            (Err(error), Err(errors)) => {
                seen(|| format!("native decode {}", variant(error)));
                ensure!(
                    errors.contains(error),
                    "{at}: refused with {error:?}, the rules refuse with {errors:?}"
                );
                expected_walk.get_or_insert(StreamError::Record {
                    offset,
                    error: *error,
                });
            }
            (library, reference) => {
                return Err(format!(
                    "{at}: decoded {library:x?}, the plain decode says {reference:x?}"
                ));
            }
        }
        // Whatever the fields said, decoded or not, goes to the hostile restores.
        match hostile_fields(rest, selector.hostile_vendor()) {
            Some(NativeFields::Vcpu { id, regs }) => {
                hostile_vcpus.push(Record {
                    id: id.min(u64::from(u32::MAX)) as u32,
                    regs,
                });
            }
            Some(NativeFields::Domain {
                vendor,
                lmce,
                vcpus,
                frames,
            }) => {
                hostile_domain.get_or_insert((vendor, lmce, vcpus, frames));
            }
            None => {}
        }
        let Some(total) = total else { break };
        offset += total;
    }

    // The stream as a toolstack restores it.
    let walked = walk_native(bytes, profile, vcpus, loader);
    let targets = Targets::new(profile, vcpus, selector.populate)?;
    seen(|| {
        format!(
            "walker {}",
            walked.as_ref().map_or_else(variant, |_| "Ok".to_string())
        )
    });
    ensure!(
        walked.as_ref().err() == expected_walk.as_ref(),
        "{what}: the walker answered {walked:x?}, expected {expected_walk:?}"
    );
    if let Ok(stream) = &walked {
        let records: Vec<Record> = stream
            .vcpus
            .iter()
            .map(|saved| Record {
                id: saved.id.0,
                regs: regs_of(&saved.snapshot),
            })
            .collect();
        match &stream.domain {
            Some(saved) => {
                let domain_record = DomainRecord::Default(saved.clone());
                targets.restore(&what, Entry::Whole(&domain_record), &records)?;
                targets.restore(&what, Entry::DomainOnly(&domain_record), &[])?;
            }
            None => {
                targets.restore(&what, Entry::Vcpus, &records)?;
            }
        }
        let domain_record = checker_domain_record(profile, vcpus, selector.populate);
        targets.restore(&what, Entry::Whole(&domain_record), &records)?;
        for record in records.iter().take(2) {
            targets.restore(&what, Entry::OneVcpu, core::slice::from_ref(record))?;
        }
    }

    // What the bytes said, unchecked.
    if !hostile_vcpus.is_empty() {
        let what = format!("{what}, hostile");
        targets.restore(&what, Entry::Vcpus, &hostile_vcpus)?;
        if let Some((vendor, lmce, count, frames)) = &hostile_domain
            && let Ok(saved_profile) = native_profile(*vendor, *lmce)
            && frames.len() <= CAPACITY
            && (!KNOWN_GAP_RESTORE_TAKES_OUT_OF_RANGE_FRAMES
                || frames.iter().all(|&frame| frame < FRAME_LIMIT))
        {
            let domain_record = DomainRecord::Default(SavedDomain {
                profile: saved_profile,
                vcpus: (*count).min(u64::from(u32::MAX)) as u32,
                broken_frames: frames.iter().map(|&f| GuestFrame(f)).collect(),
            });
            targets.restore(&what, Entry::Whole(&domain_record), &hostile_vcpus)?;
        }
        targets.restore(&what, Entry::OneVcpu, &hostile_vcpus[..1])?;
    }
    targets.restore_checker_domain_record()
}

fn regs_of(snapshot: &VcpuSnapshot) -> Regs {
    let state = &snapshot.state;
    let [_, bank1] = state.banks;
    Regs {
        vendor: state.vendor,
        caps: state.mcg_cap.bits(),
        status: state.mcg_status.bits(),
        ext_ctl: state.mcg_ext_ctl.bits(),
        ctl2: state.mci_ctl2.map(|c| c.bits()),
        bank1: [bank1.status.bits(), bank1.addr, bank1.misc],
        pending: snapshot.pending,
    }
}
