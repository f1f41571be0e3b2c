//! A domain driven by arbitrary operations, with the invariants checked after every step.
//! Shared by the property tests (`tests/properties.rs`, bounded, stable) and the fuzz target
//! (`fuzz/fuzz_targets/domain_ops.rs`, nightly), which include this file.
//!
//! Invariants after every step:
//! - nothing panics;
//! - `MCG_CAP` reads the profile's value; bank 0 stays empty; no host `MSCOD` bit is ever
//!   visible in a guest bank; banks 2–31 read zero; `MCG_STATUS` has no reserved bit;
//! - reads change nothing; a #GP or not-ours write changes nothing;
//! - a save is either refused with exactly the state the format cannot carry (and changes
//!   nothing), or a restore from it into a fresh domain gives back the same guest view
//!   (every MCA MSR, the pending flags, the broken frames).
#![allow(dead_code)]

use vmce::classify::{Disposition, classify};
use vmce::host::{HostCapabilities, SimulatedHost, collect, release};
use vmce::record::native::{self, NativeRecord, NativeVersion};
use vmce::record::xen::{self, XenRelease};
use vmce::record::{LossPolicy, RecordError, SavedVcpu, StateFields};
use vmce::registers::MciStatus;
use vmce::{
    Domain, GuestCpus, GuestFrame, GuestMce, HostFrame, Profile, RdmsrOutcome, Vcpu, VcpuId,
    VcpuOutcome, WrmsrOutcome,
};

/// A save format the model can round-trip through.
#[derive(Clone, Copy, Debug)]
pub enum SaveFormat {
    Xen(XenRelease),
    Native(NativeVersion),
}

impl SaveFormat {
    pub const ALL: [SaveFormat; 5] = [
        SaveFormat::Xen(XenRelease::Xen4_2),
        SaveFormat::Xen(XenRelease::Xen4_3),
        SaveFormat::Xen(XenRelease::Xen4_10),
        SaveFormat::Native(NativeVersion::V1),
        SaveFormat::Native(NativeVersion::V2),
    ];
}

#[derive(Clone, Debug)]
pub enum Op {
    Read {
        vcpu: usize,
        msr: u32,
    },
    Write {
        vcpu: usize,
        msr: u32,
        value: u64,
    },
    HostError {
        bank: u8,
        status: u64,
        mcg_status: u64,
        addr: u64,
        misc: u64,
        consumer: Option<u32>,
        cr4_mce: bool,
    },
    TakePending {
        vcpu: usize,
    },
    /// The guest's handler is done: `MCG_STATUS` = 0.
    ClearMcip {
        vcpu: usize,
    },
    Reset {
        vcpu: usize,
    },
    SaveRestore {
        format: SaveFormat,
    },
    /// A guest access to a guest-physical address (a broken frame's, or any).
    BrokenAccess {
        addr: u64,
        vcpu: u32,
    },
}

/// MSR indices worth hitting: every MCA register and a few others.
pub const INTERESTING_MSRS: [u32; 11] = [
    0x0, 0x1, 0x179, 0x17A, 0x17B, 0x4D0, 0x405, 0x406, 0x407, 0x281, 0x280,
];

/// Host `MCi_STATUS` values worth raising (SRAR, SRAO, UCNA, write-back, AMD, ...).
pub const INTERESTING_STATUS: [u64; 8] = [
    0xBD80_0000_0000_0134,
    0xBD00_0000_0000_00C0,
    0xBC00_0000_0001_0090,
    0xBD20_0000_8000_017A,
    0xBD00_0000_0040_00CF,
    0xBC20_0000_8000_0136,
    0xBF20_0000_8000_017A,
    0xBD80_FFFF_FFFF_0150,
];

struct Cpus(bool);
impl GuestCpus for Cpus {
    fn is_up(&self, _: VcpuId) -> bool {
        true
    }
    fn machine_check_enabled(&self, _: VcpuId) -> bool {
        self.0
    }
    fn notify(&mut self, _: VcpuId, _: VcpuOutcome) {}
}

/// Any host memory but every third frame: the low 36 bits of the frame.
struct AnyMemory;
impl vmce::GuestMemory for AnyMemory {
    fn guest_frame(&self, host: HostFrame) -> Option<GuestFrame> {
        (!host.0.is_multiple_of(3)).then_some(GuestFrame(host.0 & 0xF_FFFF_FFFF))
    }
}

fn host_for(profile: Profile) -> HostCapabilities {
    use vmce::registers::McgCap;
    match profile.vendor() {
        vmce::Vendor::Intel => {
            HostCapabilities::new(vmce::Vendor::Intel, McgCap::from_bits_retain(0x0F00_0C14))
        }
        vmce::Vendor::Amd => {
            HostCapabilities::new(vmce::Vendor::Amd, McgCap::from_bits_retain(0x17))
        }
    }
}

fn fresh(profile: Profile, vcpus: usize) -> Domain<Vec<Vcpu>> {
    let list = (0..vcpus).map(|_| Vcpu::new(profile)).collect();
    Domain::new(profile, &host_for(profile), list).expect("host backs the profile")
}

/// A vCPU's registers and pending flag, for before/after comparisons.
fn registers(vcpu: &Vcpu) -> (vmce::VcpuMceState, bool) {
    (vcpu.state(), vcpu.is_pending())
}

/// Every MCA MSR a guest can read, with what it reads.
fn guest_view(vcpu: &Vcpu) -> Vec<(u32, RdmsrOutcome)> {
    let mut indices = vec![0x179u32, 0x17A, 0x17B, 0x4D0, 0x0, 0x1];
    indices.extend(0x400u32..0x480);
    indices.extend(0x280u32..0x2A0);
    indices
        .into_iter()
        .map(|msr| (msr, vcpu.rdmsr(msr)))
        .collect()
}

macro_rules! ensure {
    ($cond:expr, $($message:tt)+) => {
        if !$cond {
            return Err(format!($($message)+));
        }
    };
}

pub struct Model {
    pub profile: Profile,
    pub vcpus: usize,
    host: HostCapabilities,
    pub domain: Domain<Vec<Vcpu>>,
    /// Saves refused and round trips done, for the callers' statistics.
    pub refused_saves: usize,
    pub round_trips: usize,
}

impl Model {
    pub fn new(profile: Profile, vcpus: usize) -> Model {
        Model {
            profile,
            vcpus,
            host: host_for(profile),
            domain: fresh(profile, vcpus),
            refused_saves: 0,
            round_trips: 0,
        }
    }

    pub fn step(&mut self, op: &Op) -> Result<(), String> {
        match *op {
            Op::Read { vcpu, msr } => {
                let vcpu = &self.domain.vcpus()[vcpu % self.vcpus];
                let before = registers(vcpu);
                let outcome = vcpu.rdmsr(msr);
                ensure!(
                    registers(vcpu) == before,
                    "a read of {msr:#x} changed state"
                );
                if vmce::registers::msr::McaMsr::decode(msr).is_none() {
                    ensure!(
                        outcome == RdmsrOutcome::NotOurs,
                        "{msr:#x} is not an MCA MSR"
                    );
                }
            }
            Op::Write { vcpu, msr, value } => {
                let vcpu = &self.domain.vcpus()[vcpu % self.vcpus];
                let before = registers(vcpu);
                let outcome = vcpu.wrmsr(msr, value);
                if matches!(outcome, WrmsrOutcome::RaiseGp(_) | WrmsrOutcome::NotOurs) {
                    ensure!(
                        registers(vcpu) == before,
                        "{outcome:?} on {msr:#x} changed state"
                    );
                }
                if vmce::registers::msr::McaMsr::decode(msr).is_none() {
                    ensure!(
                        outcome == WrmsrOutcome::NotOurs,
                        "{msr:#x} is not an MCA MSR"
                    );
                }
            }
            Op::HostError {
                bank,
                status,
                mcg_status,
                addr,
                misc,
                consumer,
                cr4_mce,
            } => {
                let mut host = SimulatedHost::new(self.host);
                host.raise(bank, status, mcg_status, addr, misc);
                let event = collect(&mut host, &self.host);
                release(&mut host, &event);
                ensure!(
                    host.invalid_accesses() == 0,
                    "collect touched an absent MSR"
                );
                for bank in event.banks() {
                    let disposition =
                        classify(&self.host, event.mcg_status, bank.status, bank.misc);
                    if matches!(disposition, Disposition::Reflect(_)) {
                        ensure!(
                            bank.status
                                .contains(MciStatus::VAL | MciStatus::UC | MciStatus::ADDRV)
                                && !bank.status.contains(MciStatus::PCC),
                            "reflected {:#x}",
                            bank.status.bits()
                        );
                    }
                    if let Ok(error) =
                        GuestMce::from_host(&self.host, event.mcg_status, bank, &AnyMemory)
                    {
                        let result =
                            self.domain
                                .inject(&error, consumer.map(VcpuId), &mut Cpus(cr4_mce));
                        match consumer {
                            Some(id) if id as usize >= self.vcpus => {
                                ensure!(result.is_err(), "bad consumer accepted")
                            }
                            _ => ensure!(result.is_ok(), "injection refused: {result:?}"),
                        }
                    }
                }
            }
            Op::TakePending { vcpu } => {
                let vcpu = &self.domain.vcpus()[vcpu % self.vcpus];
                if vcpu.take_pending() {
                    ensure!(!vcpu.take_pending(), "one injection delivered twice");
                }
            }
            Op::ClearMcip { vcpu } => {
                let outcome = self.domain.vcpus()[vcpu % self.vcpus].wrmsr(0x17A, 0);
                ensure!(
                    outcome == WrmsrOutcome::Handled,
                    "MCG_STATUS=0: {outcome:?}"
                );
            }
            Op::Reset { vcpu } => self.domain.vcpus()[vcpu % self.vcpus].reset(),
            Op::SaveRestore { format } => self.save_restore(format)?,
            Op::BrokenAccess { addr, vcpu } => {
                let addr = vmce::GuestPhysAddr(addr);
                let known = self.domain.is_broken(addr.frame());
                let result = self.domain.inject_broken_access(
                    addr,
                    vmce::Access::DataLoad,
                    VcpuId(vcpu),
                    &mut Cpus(true),
                );
                ensure!(
                    result.is_ok() == (known && (vcpu as usize) < self.vcpus),
                    "broken access to {:#x} on {vcpu}: {result:?}",
                    addr.0
                );
                if let Ok(report) = result {
                    ensure!(
                        report.data_vcpu == Some(VcpuId(vcpu)),
                        "AR data on {:?}",
                        report.data_vcpu
                    );
                }
            }
        }
        self.check_invariants()
    }

    pub fn check_invariants(&self) -> Result<(), String> {
        for (id, vcpu) in self.domain.vcpus().iter().enumerate() {
            ensure!(
                vcpu.rdmsr(0x179) == RdmsrOutcome::Handled(self.profile.mcg_cap().bits()),
                "vCPU {id}: MCG_CAP changed"
            );
            let state = vcpu.state();
            ensure!(
                state.banks[0] == vmce::vcpu::GuestBank::EMPTY,
                "vCPU {id}: bank 0 filled"
            );
            ensure!(
                state.banks[1].status.mscod().0 == 0,
                "vCPU {id}: host MSCOD visible"
            );
            for bank in 2..32u32 {
                for offset in 1..4 {
                    let msr = 0x400 + 4 * bank + offset;
                    ensure!(
                        vcpu.rdmsr(msr) == RdmsrOutcome::Handled(0),
                        "vCPU {id}: {msr:#x} not zero"
                    );
                }
            }
            ensure!(
                state.mcg_status.bits() & !0xF == 0,
                "vCPU {id}: reserved MCG_STATUS bits"
            );
        }
        Ok(())
    }

    /// Saves every vCPU and the domain in `format`; either the save names exactly what it
    /// cannot carry, or a fresh domain restored from it shows the same guest view (and
    /// becomes the model's domain).
    fn save_restore(&mut self, format: SaveFormat) -> Result<(), String> {
        let before: Vec<_> = self
            .domain
            .vcpus()
            .iter()
            .map(|vcpu| (guest_view(vcpu), vcpu.is_pending()))
            .collect();
        let broken_before = self.domain.broken_frames();
        let mut records: Vec<Vec<u8>> = Vec::new();
        let mut lost = StateFields::empty();
        let mut buffer = vec![0u8; native::MAX_DOMAIN_RECORD_BYTES];
        let carried = match format {
            SaveFormat::Xen(release) => release.carries(),
            SaveFormat::Native(version) => version.carries(),
        };
        let domain_version = match format {
            SaveFormat::Xen(_) => NativeVersion::V1, // no domain record
            SaveFormat::Native(version) => version,
        };
        let save = self.domain.save();
        match native::encode_domain(
            &save.domain(),
            domain_version,
            LossPolicy::Refuse,
            &mut buffer,
        ) {
            Ok(encoding) if encoding.len > 0 => records.push(buffer[..encoding.len].to_vec()),
            Ok(_) => {}
            Err(RecordError::WouldLose { fields }) => lost |= fields,
            Err(RecordError::BrokenFramesOverflowed) => lost |= StateFields::BROKEN_FRAMES,
            Err(error) => return Err(format!("domain save: {error}")),
        }
        for saved in save.vcpus() {
            let saved: SavedVcpu = saved;
            let expected_loss = StateFields::present_in(&saved.snapshot).difference(carried);
            let result = match format {
                SaveFormat::Xen(release) => {
                    xen::encode(&saved, release, LossPolicy::Refuse, &mut buffer)
                }
                SaveFormat::Native(version) => {
                    native::encode_vcpu(&saved, version, LossPolicy::Refuse, &mut buffer)
                }
            };
            match result {
                Ok(encoding) => {
                    ensure!(
                        expected_loss.is_empty(),
                        "saved despite losing {expected_loss}"
                    );
                    records.push(buffer[..encoding.len].to_vec());
                }
                Err(RecordError::WouldLose { fields }) => {
                    ensure!(
                        fields == expected_loss,
                        "refused for {fields}, but {expected_loss} is lost"
                    );
                    lost |= fields;
                }
                Err(RecordError::LmceBeforeXen410) => lost |= StateFields::MCG_EXT_CTL,
                Err(error) => return Err(format!("vCPU save: {error}")),
            }
        }
        drop(save);
        if !lost.is_empty() {
            self.refused_saves += 1;
            return Ok(());
        }
        let destination = fresh(self.profile, self.vcpus);
        let count = self.vcpus as u32;
        let mut vcpus = Vec::new();
        for bytes in &records {
            match format {
                SaveFormat::Xen(release) => {
                    let (saved, len, notes) = xen::decode(bytes, self.profile, count, release)
                        .map_err(|e| format!("Xen decode: {e}"))?;
                    ensure!(len == bytes.len(), "Xen record length");
                    ensure!(notes.is_empty(), "Xen decode dropped {notes}");
                    vcpus.push(saved);
                }
                SaveFormat::Native(version) => {
                    match native::decode(bytes, self.profile, count, version) {
                        Ok((NativeRecord::Vcpu(saved), _)) => vcpus.push(saved),
                        Ok((NativeRecord::Domain(saved), _)) => destination
                            .restore_domain(&saved)
                            .map_err(|e| format!("domain restore: {e}"))?,
                        Err(error) => return Err(format!("native decode: {error}")),
                    }
                }
            }
        }
        destination
            .restore_vcpus(&vcpus)
            .map_err(|e| format!("restore: {e}"))?;
        let after: Vec<_> = destination
            .vcpus()
            .iter()
            .map(|vcpu| (guest_view(vcpu), vcpu.is_pending()))
            .collect();
        ensure!(after == before, "guest view changed across {format:?}");
        ensure!(
            destination.broken_frames() == broken_before,
            "broken frames changed across {format:?}"
        );
        self.domain = destination;
        self.round_trips += 1;
        Ok(())
    }
}
