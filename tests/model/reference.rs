//! The reference model: the guest-visible behaviour of one domain, written from
//! docs/behaviour.md §3–§5, the README's "Compatibility" section and the module docs of
//! `src/domain.rs`, `src/record/`, `src/profile.rs`, `src/broken.rs`, as plainly as
//! possible: a struct of `u64`s per vCPU and a `match` per table.
//!
//! Nothing here calls vmce's emulation, delivery, records or checks: vmce's types appear only
//! as the *answers* the model expects (an `RdmsrOutcome`, an `InjectionReport`, a
//! `RecordError`, ...), built field by field, so that the harness can compare them with `==`.
//! Record bytes are written by hand (`super::records`).

use crate::common::{data_mcg_status, uncounted_report};
use vmce::classify::ReflectClass;
use vmce::delivery::{DeliveryMode, DowngradeReason, ShutdownReason};
use vmce::profile::CapsError;
use vmce::record::{RecordError, StateFields};
use vmce::record::{RestoreError, StateError};
use vmce::{
    GpCause, GuestFrame, GuestPhysAddr, InjectError, InjectionReport, Profile, RdmsrOutcome,
    VcpuId, VcpuOutcome, WrmsrOutcome,
};

/// The most vCPUs a model domain has (small domains keep the fuzz target fast).
pub const MAX_VCPUS: usize = 4;
/// The broken-frame capacity of the domains under test (`Domain<_, FRAME_CAPACITY>`): small,
/// so that a full list, an overflow and a restore that does not fit are all reachable.
pub const FRAME_CAPACITY: usize = 4;
/// The first guest frame beyond the 52-bit physical address space.
pub const FRAME_LIMIT: u64 = 1 << 40;

// MCG_CAP (docs/behaviour.md §1).
pub const COUNT_MASK: u64 = 0xFF;
pub const CTL_P: u64 = 1 << 8;
pub const SER_P: u64 = 1 << 24;
pub const LMCE_P: u64 = 1 << 27;
// MCG_STATUS.
pub const RIPV: u64 = 1 << 0;
pub const EIPV: u64 = 1 << 1;
pub const MCIP: u64 = 1 << 2;
pub const LMCE_S: u64 = 1 << 3;
// MCi_STATUS.
pub const VAL: u64 = 1 << 63;
pub const OVER: u64 = 1 << 62;
pub const AR: u64 = 1 << 55;
pub const MSCOD: u64 = 0xFFFF << 16;
pub const MCACOD: u64 = 0xFFFF;
// MCi_CTL2: CMCI_EN and the threshold.
pub const CTL2_WRITABLE: u64 = (1 << 30) | 0x7FFF;
// MCG_EXT_CTL.
pub const LMCE_EN: u64 = 1;

/// docs/behaviour.md §2: the guest's `MCG_CAP` per profile.
pub fn profile_caps(profile: Profile) -> u64 {
    match profile {
        Profile::Intel => 0x0100_0C02,
        Profile::IntelLmce => 0x0900_0C02,
        Profile::Amd => 0x0000_0002,
    }
}

pub fn is_intel(profile: Profile) -> bool {
    profile != Profile::Amd
}

/// README "Compatibility": a restored `MCG_CAP` may carry any bank count and `CTL_P`; any
/// other bit outside the profile's is refused.
pub fn check_restored_caps(profile: Profile, caps: u64) -> Result<(), CapsError> {
    let allowed = (profile_caps(profile) & !COUNT_MASK) | CTL_P;
    let refused = caps & !COUNT_MASK & !allowed;
    if refused != 0 {
        return Err(CapsError::UnsupportedBits {
            profile,
            bits: refused,
        });
    }
    Ok(())
}

/// One vCPU's guest-visible machine-check state. Bank 0 is not here: no access the guest
/// can make, no delivery and no accepted restore ever puts anything in it, so it reads 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefVcpu {
    pub mcg_cap: u64,
    pub mcg_status: u64,
    pub mcg_ext_ctl: u64,
    pub ctl2: [u64; 2],
    pub bank1_status: u64,
    pub bank1_addr: u64,
    pub bank1_misc: u64,
    pub pending: bool,
}

impl RefVcpu {
    pub fn power_on(mcg_cap: u64) -> RefVcpu {
        RefVcpu {
            mcg_cap,
            ..RefVcpu::default()
        }
    }

    fn count(&self) -> u64 {
        self.mcg_cap & COUNT_MASK
    }

    fn has(&self, cap: u64) -> bool {
        self.mcg_cap & cap != 0
    }

    /// docs/behaviour.md §3, row by row (and README "Compatibility" for restored counts and
    /// `CTL_P`).
    pub fn rdmsr(&self, intel: bool, index: u32) -> RdmsrOutcome {
        use RdmsrOutcome::{Handled, NotOurs, RaiseGp};
        match index {
            // P5_MC_ADDR / P5_MC_TYPE: bank 1 ADDR / STATUS on Intel, not ours on AMD.
            0x0 | 0x1 if !intel => NotOurs,
            0x0 => Handled(self.bank1_addr),
            0x1 => Handled(self.bank1_status),
            0x179 => Handled(self.mcg_cap),
            0x17A => Handled(self.mcg_status),
            // MCG_CTL: 0 without CTL_P, all-ones with a restored CTL_P.
            0x17B if self.has(CTL_P) => Handled(u64::MAX),
            0x17B => Handled(0),
            0x4D0 if self.has(LMCE_P) => Handled(self.mcg_ext_ctl),
            0x4D0 => RaiseGp(GpCause::NotAdvertised),
            // MCi_CTL2: Intel banks 0 and 1 stored; everything else reads 0.
            0x280..=0x29F => {
                let bank = (index - 0x280) as usize;
                if intel && bank < 2 {
                    Handled(self.ctl2[bank])
                } else {
                    Handled(0)
                }
            }
            // Banks 0..32: CTL all-ones below the count; STATUS/ADDR/MISC of bank 1 stored,
            // of every other bank 0.
            0x400..=0x47F => {
                let bank = u64::from((index - 0x400) / 4);
                match (index - 0x400) % 4 {
                    0 if bank < self.count() => Handled(u64::MAX),
                    0 => Handled(0),
                    _ if bank != 1 => Handled(0),
                    1 => Handled(self.bank1_status),
                    2 => Handled(self.bank1_addr),
                    _ => Handled(self.bank1_misc),
                }
            }
            // Everything else, banks ≥ 32 (0x480 on) included, is the hypervisor's.
            _ => NotOurs,
        }
    }

    /// docs/behaviour.md §3, row by row. A #GP or not-ours write changes nothing.
    pub fn wrmsr(&mut self, intel: bool, index: u32, value: u64) -> WrmsrOutcome {
        use WrmsrOutcome::{Handled, NotOurs, RaiseGp};
        match index {
            0x0 | 0x1 if !intel => NotOurs,
            0x0 | 0x1 => RaiseGp(GpCause::ReadOnly),
            0x179 => RaiseGp(GpCause::ReadOnly),
            0x17A => {
                let writable = RIPV | EIPV | MCIP | if self.has(LMCE_P) { LMCE_S } else { 0 };
                let reserved = value & !writable;
                if reserved != 0 {
                    return RaiseGp(GpCause::ReservedBits { bits: reserved });
                }
                self.mcg_status = value;
                Handled
            }
            0x17B => Handled,
            0x4D0 if !self.has(LMCE_P) => RaiseGp(GpCause::NotAdvertised),
            0x4D0 => {
                let reserved = value & !LMCE_EN;
                if reserved != 0 {
                    return RaiseGp(GpCause::ReservedBits { bits: reserved });
                }
                self.mcg_ext_ctl = value;
                Handled
            }
            0x280..=0x29F => {
                let bank = (index - 0x280) as usize;
                if !intel || bank >= 2 {
                    return Handled;
                }
                let reserved = value & !CTL2_WRITABLE;
                if reserved != 0 {
                    return RaiseGp(GpCause::ReservedBits { bits: reserved });
                }
                self.ctl2[bank] = value;
                Handled
            }
            0x400..=0x47F => {
                let bank = (index - 0x400) / 4;
                let register = (index - 0x400) % 4;
                if register == 0 {
                    return Handled;
                }
                if value != 0 {
                    return RaiseGp(GpCause::NonZeroBankWrite);
                }
                if bank == 1 {
                    match register {
                        1 => self.bank1_status = 0,
                        2 => self.bank1_addr = 0,
                        _ => self.bank1_misc = 0,
                    }
                }
                Handled
            }
            _ => NotOurs,
        }
    }

    /// The state groups that hold something (for what a save format loses).
    pub fn present(&self) -> StateFields {
        let mut fields = StateFields::empty();
        if self.ctl2 != [0, 0] {
            fields |= StateFields::MCI_CTL2;
        }
        if self.mcg_ext_ctl != 0 {
            fields |= StateFields::MCG_EXT_CTL;
        }
        if self.mcg_status != 0 {
            fields |= StateFields::MCG_STATUS;
        }
        if (self.bank1_status, self.bank1_addr, self.bank1_misc) != (0, 0, 0) {
            fields |= StateFields::BANK1;
        }
        if self.pending {
            fields |= StateFields::PENDING;
        }
        fields
    }
}

/// A reflected error as the domain receives it (a `GuestMce`'s fields, as numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefError {
    pub class: ReflectClass,
    pub mcg_status: u64,
    pub status: u64,
    pub guest_addr: u64,
    pub misc: u64,
}

impl RefError {
    /// `src/reflect.rs`' table: the error a vCPU gets for touching a known-broken frame.
    pub fn broken_access(intel: bool, fetch: bool, guest_addr: u64) -> RefError {
        let mcacod = if fetch { 0x0150 } else { 0x0134 };
        let (class, flags) = match (intel, fetch) {
            (true, false) => (ReflectClass::SrarDataLoad, 0xBD80_0000_0000_0000),
            (true, true) => (ReflectClass::SrarInstructionFetch, 0xBD80_0000_0000_0000),
            (false, _) => (ReflectClass::AmdUncorrected, 0xBC00_0800_0000_0000),
        };
        RefError {
            class,
            mcg_status: MCIP | RIPV | EIPV,
            status: flags | mcacod,
            guest_addr,
            misc: 0x8C,
        }
    }
}

/// Which vCPUs are up and have `CR4.MCE` set: what the hypervisor answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefCpus {
    pub up: [bool; MAX_VCPUS],
    pub cr4_mce: [bool; MAX_VCPUS],
}

/// What one injection did: the report and the per-vCPU notifications, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub report: InjectionReport,
    pub notified: [Option<(VcpuId, VcpuOutcome)>; MAX_VCPUS],
}

/// A vCPU record as the model sees it (what a `SavedVcpu` holds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefRecord {
    pub id: u32,
    pub intel: bool,
    pub vcpu: RefVcpu,
    /// Bank 0's STATUS, ADDR, MISC (always 0 in a record vmce writes).
    pub bank0: [u64; 3],
}

/// A domain record as the model sees it (what a `SavedDomain` holds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefDomainRecord {
    pub profile: Profile,
    pub vcpus: u32,
    pub frames: [u64; 64],
    pub frames_len: usize,
    pub overflowed: bool,
}

impl RefDomainRecord {
    pub fn frames(&self) -> &[u64] {
        &self.frames[..self.frames_len]
    }
}

/// One domain: profile, vCPUs, broken frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefDomain {
    pub profile: Profile,
    pub count: usize,
    pub vcpus: [RefVcpu; MAX_VCPUS],
    pub frames: [u64; FRAME_CAPACITY],
    pub frames_len: usize,
    pub overflowed: bool,
}

/// What the broken-frame list did with an error's frame (`BrokenFrameNote`).
pub use vmce::broken::BrokenFrameNote as FrameNote;

impl RefDomain {
    pub fn new(profile: Profile, caps: &[u64]) -> RefDomain {
        let mut vcpus = [RefVcpu::default(); MAX_VCPUS];
        for (vcpu, &cap) in vcpus.iter_mut().zip(caps) {
            *vcpu = RefVcpu::power_on(cap);
        }
        RefDomain {
            profile,
            count: caps.len(),
            vcpus,
            frames: [0; FRAME_CAPACITY],
            frames_len: 0,
            overflowed: false,
        }
    }

    pub fn intel(&self) -> bool {
        is_intel(self.profile)
    }

    pub fn frames(&self) -> &[u64] {
        &self.frames[..self.frames_len]
    }

    pub fn is_broken(&self, frame: u64) -> bool {
        self.frames().contains(&frame)
    }

    fn insert_frame(&mut self, frame: u64) -> FrameNote {
        if self.is_broken(frame) {
            FrameNote::AlreadyKnown
        } else if self.frames_len < FRAME_CAPACITY {
            self.frames[self.frames_len] = frame;
            self.frames_len += 1;
            FrameNote::Recorded
        } else {
            self.overflowed = true;
            FrameNote::ListFull
        }
    }

    /// INIT: capabilities kept, everything else cleared.
    pub fn reset(&mut self, vcpu: usize) {
        self.vcpus[vcpu] = RefVcpu::power_on(self.vcpus[vcpu].mcg_cap);
    }

    pub fn take_pending(&mut self, vcpu: usize) -> bool {
        std::mem::replace(&mut self.vcpus[vcpu].pending, false)
    }

    /// docs/behaviour.md §4 and the delivery table of `src/domain.rs`.
    pub fn inject(
        &mut self,
        error: RefError,
        consumer: Option<u32>,
        cpus: &RefCpus,
    ) -> Result<Delivery, InjectError> {
        if let Some(id) = consumer
            && id as usize >= self.count
        {
            return Err(InjectError::NoSuchVcpu(VcpuId(id)));
        }
        if error.guest_addr >> 52 != 0 {
            return Err(InjectError::AddressOutOfRange(GuestPhysAddr(
                error.guest_addr,
            )));
        }
        let up = |id: usize| cpus.up[id];
        // A consumer that is not up consumed nothing.
        let (consumer, no_consumer) = match consumer {
            Some(id) if !up(id as usize) => {
                (None, Some(DowngradeReason::ConsumerNotUp(VcpuId(id))))
            }
            Some(id) => (Some(id as usize), None),
            None => (None, Some(DowngradeReason::NoConsumer)),
        };
        // An Intel SRAR nobody in the domain consumed becomes action-optional: AR cleared,
        // MCACOD the memory-scrub 0x00C0, MCG_STATUS MCIP|RIPV.
        let intel_srar = matches!(
            error.class,
            ReflectClass::SrarDataLoad | ReflectClass::SrarInstructionFetch
        );
        let downgraded = if intel_srar { no_consumer } else { None };
        // The data goes to the consumer of an SRAR (one that is up: else it was downgraded).
        let srar_consumed = intel_srar && downgraded.is_none();
        let (host_mcg, status) = if downgraded.is_some() {
            (MCIP | RIPV, (error.status & !MCACOD & !AR) | 0x00C0)
        } else {
            (error.mcg_status, error.status)
        };
        let first_up = (0..self.count).find(|&id| up(id));
        let mode = if !self.intel() {
            DeliveryMode::Single
        } else if host_mcg & LMCE_S != 0
            && consumer.is_some_and(|id| self.vcpus[id].mcg_ext_ctl & LMCE_EN != 0)
        {
            DeliveryMode::Local
        } else {
            DeliveryMode::Broadcast
        };
        let data = match mode {
            DeliveryMode::Local => consumer,
            DeliveryMode::Single => consumer.or(first_up),
            DeliveryMode::Broadcast if srar_consumed => consumer,
            DeliveryMode::Broadcast => first_up,
            other => unreachable!("the model never picks {other:?}"),
        };
        let broken_frame = self.insert_frame(error.guest_addr >> 12);
        let data_mcg = data_mcg_status(mode, host_mcg);
        let data_vcpu = data.map(|id| id as u32);
        let mut report = uncounted_report(mode, data_vcpu, downgraded, broken_frame);
        let mut notified = [None; MAX_VCPUS];
        let targets = match (mode, data) {
            (DeliveryMode::Broadcast, _) => 0..self.count,
            (_, Some(id)) => id..id + 1,
            (_, None) => 0..0,
        };
        for id in targets {
            let with_data = Some(id) == data;
            let vcpu = &mut self.vcpus[id];
            let outcome = if !up(id) {
                VcpuOutcome::Skipped
            } else if !cpus.cr4_mce[id] {
                VcpuOutcome::Shutdown(ShutdownReason::MachineCheckDisabled)
            } else if vcpu.mcg_status & MCIP != 0 {
                VcpuOutcome::Shutdown(ShutdownReason::MachineCheckInProgress)
            } else if with_data {
                let overflow = vcpu.bank1_status & VAL != 0;
                vcpu.bank1_addr = error.guest_addr;
                vcpu.bank1_misc = error.misc;
                vcpu.bank1_status = (status & !MSCOD) | if overflow { OVER } else { 0 };
                vcpu.mcg_status = data_mcg;
                vcpu.pending = true;
                VcpuOutcome::Delivered {
                    with_data: true,
                    overflow,
                }
            } else {
                vcpu.bank1_status = 0;
                vcpu.bank1_addr = 0;
                vcpu.bank1_misc = 0;
                vcpu.mcg_status = MCIP | RIPV;
                vcpu.pending = true;
                VcpuOutcome::Delivered {
                    with_data: false,
                    overflow: false,
                }
            };
            match outcome {
                VcpuOutcome::Delivered { overflow, .. } => {
                    report.delivered += 1;
                    if with_data {
                        report.overflow = overflow;
                    }
                }
                VcpuOutcome::Skipped => {
                    report.skipped += 1;
                    if with_data {
                        report.data_vcpu = None;
                    }
                }
                VcpuOutcome::Shutdown(reason) => {
                    report.shutdown += 1;
                    if report.first_shutdown.is_none() {
                        report.first_shutdown = Some((VcpuId(id as u32), reason));
                    }
                }
                other => unreachable!("the model never makes {other:?}"),
            }
            let slot = notified.iter().position(Option::is_none).unwrap();
            notified[slot] = Some((VcpuId(id as u32), outcome));
        }
        Ok(Delivery { report, notified })
    }

    /// A guest access to a known-broken frame: a fresh action-required error on that vCPU.
    pub fn inject_broken_access(
        &mut self,
        addr: u64,
        fetch: bool,
        vcpu: u32,
        cpus: &RefCpus,
    ) -> Result<Delivery, InjectError> {
        if addr >> 52 != 0 {
            return Err(InjectError::AddressOutOfRange(GuestPhysAddr(addr)));
        }
        if !self.is_broken(addr >> 12) {
            return Err(InjectError::FrameNotBroken(GuestFrame(addr >> 12)));
        }
        let error = RefError::broken_access(self.intel(), fetch, addr);
        self.inject(error, Some(vcpu), cpus)
    }

    /// What restoring `record` under `profile` refuses, first field first (the record
    /// module docs: every field a vCPU of the profile cannot hold).
    pub fn check_record(profile: Profile, record: &RefRecord) -> Result<(), RecordError> {
        let vcpu = &record.vcpu;
        if record.intel != is_intel(profile) {
            return Err(RecordError::State(StateError::VendorMismatch {
                destination: profile,
            }));
        }
        check_restored_caps(profile, vcpu.mcg_cap)
            .map_err(|error| RecordError::State(StateError::Caps(error)))?;
        for (bank, ctl2) in vcpu.ctl2.into_iter().enumerate() {
            let reserved = if record.intel {
                ctl2 & !CTL2_WRITABLE
            } else {
                ctl2
            };
            if reserved != 0 {
                return Err(RecordError::State(StateError::Ctl2Reserved {
                    bank: bank as u8,
                    bits: reserved,
                }));
            }
        }
        if vcpu.mcg_ext_ctl & !LMCE_EN != 0 {
            return Err(RecordError::State(StateError::ExtCtlReserved {
                bits: vcpu.mcg_ext_ctl & !LMCE_EN,
            }));
        }
        if vcpu.mcg_ext_ctl != 0 && vcpu.mcg_cap & LMCE_P == 0 {
            return Err(RecordError::State(StateError::ExtCtlWithoutLmce));
        }
        let writable = RIPV
            | EIPV
            | MCIP
            | if vcpu.mcg_cap & LMCE_P != 0 {
                LMCE_S
            } else {
                0
            };
        if vcpu.mcg_status & !writable != 0 {
            return Err(RecordError::State(StateError::McgStatusReserved {
                bits: vcpu.mcg_status & !writable,
            }));
        }
        if record.bank0 != [0, 0, 0] {
            return Err(RecordError::State(StateError::Bank0NotEmpty));
        }
        if vcpu.bank1_status & MSCOD != 0 {
            return Err(RecordError::State(StateError::MscodInRecord {
                bits: vcpu.bank1_status & MSCOD,
            }));
        }
        Ok(())
    }

    fn check_domain_record(&self, saved: &RefDomainRecord) -> Result<(), RecordError> {
        if saved.profile != self.profile {
            return Err(RecordError::Restore(RestoreError::ProfileMismatch {
                saved: saved.profile,
                destination: self.profile,
            }));
        }
        if saved.vcpus as usize != self.count {
            return Err(RecordError::Restore(RestoreError::VcpuCountMismatch {
                saved: saved.vcpus,
                destination: self.count as u32,
            }));
        }
        // broken.rs: frames beyond the 52-bit space are never listed, whatever the entry
        // point.
        if let Some(&frame) = saved.frames().iter().find(|&&frame| frame >= FRAME_LIMIT) {
            return Err(RecordError::Restore(RestoreError::FrameOutOfRange {
                frame,
            }));
        }
        Ok(())
    }

    /// The broken-frame list after taking in `saved`'s frames, or how many it would need.
    fn merged_frames(
        &self,
        saved: &RefDomainRecord,
    ) -> Result<([u64; FRAME_CAPACITY], usize), RecordError> {
        let mut frames = [0u64; FRAME_CAPACITY];
        frames[..self.frames_len].copy_from_slice(self.frames());
        let mut len = self.frames_len;
        let mut needed = self.frames_len;
        for &frame in saved.frames() {
            if frames[..len.min(FRAME_CAPACITY)].contains(&frame) {
                continue;
            }
            needed += 1;
            if len < FRAME_CAPACITY {
                frames[len] = frame;
                len += 1;
            }
        }
        if needed > FRAME_CAPACITY {
            return Err(RecordError::Restore(RestoreError::BrokenFramesCapacity {
                needed,
                capacity: FRAME_CAPACITY,
            }));
        }
        Ok((frames, len))
    }

    /// Building the records (`VcpuSnapshot::check`, each record's state against the
    /// profile, in order), then `Domain::restore`: every vCPU record checked (in order: known
    /// vCPU, not named twice), then the domain record (profile, vCPU count, frames in range,
    /// a record for every vCPU, the frames fit), then all of it applied; on an error nothing
    /// changes.
    pub fn restore(
        &mut self,
        domain: Option<&RefDomainRecord>,
        records: &[RefRecord],
    ) -> Result<(), RecordError> {
        for record in records {
            Self::check_record(self.profile, record)?;
        }
        for (index, record) in records.iter().enumerate() {
            if record.id as usize >= self.count {
                return Err(RecordError::Restore(RestoreError::NoSuchVcpu {
                    id: record.id,
                    vcpus: self.count as u32,
                }));
            }
            if records[..index]
                .iter()
                .any(|earlier| earlier.id == record.id)
            {
                return Err(RecordError::Restore(RestoreError::DuplicateVcpu {
                    id: record.id,
                }));
            }
        }
        let mut merged = None;
        if let Some(saved) = domain {
            self.check_domain_record(saved)?;
            if let Some(missing) =
                (0..self.count as u32).find(|&id| !records.iter().any(|record| record.id == id))
            {
                return Err(RecordError::Restore(RestoreError::MissingVcpu {
                    id: missing,
                }));
            }
            merged = Some(self.merged_frames(saved)?);
        }
        if let (Some((frames, len)), Some(saved)) = (merged, domain) {
            self.frames = frames;
            self.frames_len = len;
            self.overflowed |= saved.overflowed;
        }
        for record in records {
            self.vcpus[record.id as usize] = record.vcpu;
        }
        Ok(())
    }

    /// `Domain::restore_domain`: the domain record alone; no vCPU changes.
    pub fn restore_domain(&mut self, saved: &RefDomainRecord) -> Result<(), RecordError> {
        self.check_domain_record(saved)?;
        let (frames, len) = self.merged_frames(saved)?;
        self.frames = frames;
        self.frames_len = len;
        self.overflowed |= saved.overflowed;
        Ok(())
    }

    /// `Vcpu::restore` of one vCPU under the domain's profile.
    pub fn restore_one(&mut self, vcpu: usize, record: &RefRecord) -> Result<(), RecordError> {
        Self::check_record(self.profile, record)?;
        self.vcpus[vcpu] = record.vcpu;
        Ok(())
    }
}
