//! A live vmce domain and the reference model side by side: every op goes to both, every
//! answer is compared, and after every op every vCPU's registers, pending flag and the
//! broken-frame list are compared too.
//!
//! Nothing here allocates per op (fixed arrays, reused buffers); a mismatch is returned as a
//! `String` naming what differed.

use super::ops::{GuestAddr, HostAddr, Input, Op, Setup, default_frame};
use super::reference::{
    FRAME_CAPACITY, MAX_VCPUS, RefCpus, RefDomain, RefError, check_restored_caps, is_intel,
    profile_caps,
};
use super::restores::{Stash, frames_of};
use super::stats::Stats;
use crate::common::{Mapping, MemoryMap, host_backs};
use vmce::address::HostPhysAddr;
use vmce::classify::ReflectClass;
use vmce::domain::DomainError;
use vmce::host::HostCapabilities;
use vmce::registers::{McgCap, McgExtCtl, McgStatus, MciCtl2, MciMisc, MciStatus};
use vmce::state::GuestBank;
use vmce::{
    Access, Domain, GuestCpus, GuestMce, GuestPhysAddr, Profile, Vcpu, VcpuId, VcpuMceState,
    VcpuOutcome, Vendor,
};

/// The vCPUs of a domain under test: a fixed array, `len` of them in use.
pub struct Vcpus {
    list: [Vcpu; MAX_VCPUS],
    len: usize,
}

impl AsRef<[Vcpu]> for Vcpus {
    fn as_ref(&self) -> &[Vcpu] {
        &self.list[..self.len]
    }
}

/// The hypervisor's side of `GuestCpus`: the model's up/CR4 flags, and the notifications.
pub(super) struct Cpus {
    pub(super) flags: RefCpus,
    pub(super) notified: [Option<(VcpuId, VcpuOutcome)>; MAX_VCPUS],
    /// Notifications beyond one per vCPU (there must be none).
    pub(super) extra: u32,
}

impl Cpus {
    fn clear(&mut self) {
        self.notified = [None; MAX_VCPUS];
        self.extra = 0;
    }
}

impl GuestCpus for Cpus {
    fn is_up(&self, vcpu: VcpuId) -> bool {
        self.flags.up.get(vcpu.0 as usize).copied().unwrap_or(false)
    }
    fn machine_check_enabled(&self, vcpu: VcpuId) -> bool {
        self.flags
            .cr4_mce
            .get(vcpu.0 as usize)
            .copied()
            .unwrap_or(false)
    }
    fn notify(&mut self, vcpu: VcpuId, outcome: VcpuOutcome) {
        match self.notified.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some((vcpu, outcome)),
            None => self.extra += 1,
        }
    }
}

pub struct Harness {
    pub(super) profile: Profile,
    pub(super) count: usize,
    pub(super) host: HostCapabilities,
    /// The memory map's listed frames (`memory_len` of them); see [`Harness::memory_map`].
    pub(super) memory: [Mapping; 4],
    pub(super) memory_len: usize,
    pub(super) domain: Domain<Vcpus, FRAME_CAPACITY>,
    pub(super) model: RefDomain,
    pub(super) cpus: Cpus,
    pub(super) stash: Option<Stash>,
    pub(super) buffer: [u8; 256],
    /// Read every MCA MSR of every vCPU after every op (the property tests; the fuzz target
    /// reads them in `Op::Sweep`).
    pub sweep_every_op: bool,
    pub stats: Stats,
}

/// The MSRs a sweep reads: every global MCA register and its neighbours, every bank's
/// `MCi_CTL` (where the restored count shows), the error registers and `MCi_CTL2` of the
/// stored banks, of bank 2 and of bank 31, and the first indices past both ranges.
const SWEEP_MSRS: [u32; 64] = {
    let mut list = [0u32; 64];
    let fixed = [
        0x0, 0x1, 0x2, 0x3A, 0x178, 0x179, 0x17A, 0x17B, 0x17C, 0x4CF, 0x4D0, 0x4D1, 0x27F, 0x280,
        0x281, 0x282, 0x29F, 0x2A0, 0x3FF, 0x401, 0x402, 0x403, 0x405, 0x406, 0x407, 0x409, 0x40A,
        0x40B, 0x47D, 0x47E, 0x47F, 0x480,
    ];
    let mut i = 0;
    while i < fixed.len() {
        list[i] = fixed[i];
        i += 1;
    }
    let mut bank = 0;
    while bank < 32 {
        list[fixed.len() + bank] = 0x400 + 4 * bank as u32;
        bank += 1;
    }
    list
};

pub(super) fn vendor(intel: bool) -> Vendor {
    if intel { Vendor::Intel } else { Vendor::Amd }
}

/// What `Harness::build` did.
pub enum Built {
    Ready(Box<Harness>),
    /// vmce refused the setup exactly as the model said it would.
    Refused,
}

impl Harness {
    /// Builds the domain of `setup` in vmce and in the model; both must agree on whether it
    /// can be built.
    pub fn build(setup: &Setup) -> Result<Built, String> {
        let profile = setup.profile;
        let host = HostCapabilities::new(
            vendor(setup.host_intel),
            McgCap::from_bits_retain(setup.host_caps),
        );
        let mut caps = [0u64; MAX_VCPUS];
        let mut list: [Option<Vcpu>; MAX_VCPUS] = Default::default();
        for (id, spec) in setup.vcpus[..setup.count].iter().enumerate() {
            caps[id] = spec.caps.unwrap_or(profile_caps(spec.made_for));
            let vcpu = match spec.caps {
                None => Ok(Vcpu::new(spec.made_for)),
                Some(raw) => Vcpu::with_restored_caps(spec.made_for, McgCap::from_bits_retain(raw)),
            };
            let expected = match spec.caps {
                None => Ok(()),
                Some(raw) => check_restored_caps(spec.made_for, raw),
            };
            ensure!(
                vcpu.as_ref().map(|_| ()).map_err(|e| *e) == expected,
                "vCPU {id} with caps {:?} for {:?}: vmce {:?}, model {expected:?}",
                spec.caps,
                spec.made_for,
                vcpu.as_ref().err()
            );
            match vcpu {
                Ok(vcpu) => list[id] = Some(vcpu),
                Err(_) => return Ok(Built::Refused),
            }
        }
        let expected = host_backs(profile, host.vendor(), setup.host_caps)
            .map_err(DomainError::Profile)
            .and_then(|()| {
                match setup.vcpus[..setup.count]
                    .iter()
                    .zip(caps)
                    .position(|(spec, caps)| {
                        is_intel(spec.made_for) != is_intel(profile)
                            || check_restored_caps(profile, caps).is_err()
                    }) {
                    Some(id) => Err(DomainError::VcpuMismatch(VcpuId(id as u32))),
                    None => Ok(()),
                }
            });
        let vcpus = Vcpus {
            list: list.map(|vcpu| vcpu.unwrap_or_else(|| Vcpu::new(profile))),
            len: setup.count,
        };
        let domain =
            Domain::<Vcpus, FRAME_CAPACITY>::with_broken_frames_capacity(profile, &host, vcpus);
        ensure!(
            domain.as_ref().map(|_| ()).map_err(|e| *e) == expected,
            "Domain::new: vmce {:?}, model {expected:?}",
            domain.as_ref().err()
        );
        let Ok(domain) = domain else {
            return Ok(Built::Refused);
        };
        let mut stats = Stats::default();
        stats.restored_caps += caps[..setup.count]
            .iter()
            .filter(|&&caps| caps != profile_caps(profile))
            .count() as u64;
        let harness = Harness {
            profile,
            count: setup.count,
            host,
            memory: setup.memory.map(|(host_frame, guest_frame)| Mapping {
                host_frame,
                guest_frame: Some(guest_frame),
            }),
            memory_len: setup.memory_len,
            domain,
            model: RefDomain::new(profile, &caps[..setup.count]),
            cpus: Cpus {
                flags: RefCpus {
                    up: [true; MAX_VCPUS],
                    cr4_mce: [true; MAX_VCPUS],
                },
                notified: [None; MAX_VCPUS],
                extra: 0,
            },
            stash: None,
            buffer: [0; 256],
            sweep_every_op: false,
            stats,
        };
        harness.compare_all()?;
        Ok(Built::Ready(Box::new(harness)))
    }

    /// Decodes a setup and ops from `data` and runs them; `Ok` also when the setup was
    /// refused (as the model predicted). Returns the stats.
    pub fn run(data: &[u8], sweep_every_op: bool) -> Result<Stats, String> {
        let mut input = Input::new(data);
        let Some(setup) = input.setup() else {
            return Ok(Stats::default());
        };
        let mut harness =
            match Harness::build(&setup).map_err(|e| format!("setup {setup:?}: {e}"))? {
                Built::Ready(harness) => harness,
                Built::Refused => {
                    return Ok(Stats {
                        setups_refused: 1,
                        ..Stats::default()
                    });
                }
            };
        harness.sweep_every_op = sweep_every_op;
        let mut step = 0;
        while let Some(op) = input.op() {
            harness
                .step(&op)
                .map_err(|e| format!("setup {setup:?}\nstep {step} {op:?}: {e}"))?;
            step += 1;
        }
        Ok(harness.stats)
    }

    pub(super) fn vcpu(&self, index: u8) -> usize {
        usize::from(index) % self.count
    }

    /// Applies `op` to vmce and to the model and compares every answer and then the whole
    /// state.
    pub fn step(&mut self, op: &Op) -> Result<(), String> {
        self.stats.ops += 1;
        match *op {
            Op::Read { vcpu, msr } => {
                let id = self.vcpu(vcpu);
                self.compare_read(id, msr)?;
                self.stats.reads += 1;
            }
            Op::Write { vcpu, msr, value } => self.write(self.vcpu(vcpu), msr, value)?,
            Op::ClearMcip { vcpu } => self.write(self.vcpu(vcpu), 0x17A, 0)?,
            Op::EnableLmce { vcpu } => self.write(self.vcpu(vcpu), 0x4D0, 1)?,
            Op::SetUp { vcpu, up } => {
                let id = self.vcpu(vcpu);
                self.cpus.flags.up[id] = up;
            }
            Op::SetCr4 { vcpu, mce } => {
                let id = self.vcpu(vcpu);
                self.cpus.flags.cr4_mce[id] = mce;
            }
            Op::TakePending { vcpu } => {
                let id = self.vcpu(vcpu);
                let taken = self.domain.vcpus()[id].take_pending();
                let expected = self.model.take_pending(id);
                ensure!(
                    taken == expected,
                    "take_pending on vCPU {id}: vmce {taken}, model {expected}"
                );
            }
            Op::Reset { vcpu } => {
                let id = self.vcpu(vcpu);
                self.domain.vcpus()[id].reset();
                self.model.reset(id);
            }
            Op::Sweep { vcpu } => self.sweep(self.vcpu(vcpu))?,
            Op::HostEvent {
                mcg_status,
                ref errors,
                consumer,
            } => self.host_event(mcg_status, errors, consumer)?,
            Op::DirectInject(direct) => {
                // The classes of the domain's vendor: Intel's four, AMD's one.
                let class = match (self.model.intel(), direct.class) {
                    (false, _) => ReflectClass::AmdUncorrected,
                    (true, ReflectClass::AmdUncorrected) => ReflectClass::SrarDataLoad,
                    (true, class) => class,
                };
                let error = RefError {
                    class,
                    mcg_status: direct.mcg_status,
                    status: direct.status,
                    guest_addr: self.guest_addr(direct.addr),
                    misc: direct.misc,
                };
                self.inject(error, HostPhysAddr(0), direct.consumer)?;
            }
            Op::BrokenAccess { addr, fetch, vcpu } => self.broken_access(addr, fetch, vcpu)?,
            Op::Save { format } => self.save(format)?,
            Op::RestoreStash { loader } => self.restore_stash(loader)?,
            Op::Hostile(ref hostile) => self.hostile(hostile)?,
        }
        self.compare_all()?;
        if self.sweep_every_op {
            for id in 0..self.count {
                self.sweep(id)?;
            }
        }
        Ok(())
    }

    /// Every vCPU's registers and pending flag, and the broken-frame list, as the model has
    /// them.
    pub fn compare_all(&self) -> Result<(), String> {
        let intel = self.model.intel();
        for (id, (vcpu, model)) in self
            .domain
            .vcpus()
            .iter()
            .zip(&self.model.vcpus)
            .enumerate()
        {
            let expected = VcpuMceState {
                vendor: vendor(intel),
                mcg_cap: McgCap::from_bits_retain(model.mcg_cap),
                mcg_status: McgStatus::from_bits_retain(model.mcg_status),
                mcg_ext_ctl: McgExtCtl::from_bits_retain(model.mcg_ext_ctl),
                mci_ctl2: model.ctl2.map(MciCtl2::from_bits_retain),
                banks: [
                    GuestBank::EMPTY,
                    GuestBank {
                        status: MciStatus::from_bits_retain(model.bank1_status),
                        addr: model.bank1_addr,
                        misc: model.bank1_misc,
                    },
                ],
            };
            let state = vcpu.state();
            ensure!(
                state == expected,
                "vCPU {id} registers:\n vmce  {state:x?}\n model {expected:x?}"
            );
            ensure!(
                vcpu.is_pending() == model.pending,
                "vCPU {id} pending: vmce {}, model {}",
                vcpu.is_pending(),
                model.pending
            );
        }
        let frames = self.domain.broken_frames();
        ensure!(
            frames_of(&frames).eq(self.model.frames().iter().copied())
                && frames.overflowed() == self.model.overflowed,
            "broken frames: vmce {frames:x?}, model {:x?} overflowed {}",
            self.model.frames(),
            self.model.overflowed
        );
        Ok(())
    }

    fn compare_read(&self, id: usize, msr: u32) -> Result<(), String> {
        let got = self.domain.vcpus()[id].rdmsr(msr);
        let expected = self.model.vcpus[id].rdmsr(self.model.intel(), msr);
        ensure!(
            got == expected,
            "rdmsr {msr:#x} on vCPU {id}: vmce {got:x?}, model {expected:x?}"
        );
        Ok(())
    }

    fn sweep(&self, id: usize) -> Result<(), String> {
        for msr in SWEEP_MSRS {
            self.compare_read(id, msr)?;
        }
        Ok(())
    }

    fn write(&mut self, id: usize, msr: u32, value: u64) -> Result<(), String> {
        let got = self.domain.vcpus()[id].wrmsr(msr, value);
        let intel = self.model.intel();
        let expected = self.model.vcpus[id].wrmsr(intel, msr, value);
        ensure!(
            got == expected,
            "wrmsr {msr:#x} <- {value:#x} on vCPU {id}: vmce {got:?}, model {expected:?}"
        );
        match got {
            vmce::WrmsrOutcome::RaiseGp(_) => self.stats.writes_gp += 1,
            vmce::WrmsrOutcome::Handled => self.stats.writes_handled += 1,
            vmce::WrmsrOutcome::NotOurs => {}
        }
        Ok(())
    }

    fn guest_addr(&self, addr: GuestAddr) -> u64 {
        match addr {
            GuestAddr::Raw(addr) => addr,
            GuestAddr::Listed { index, offset } => {
                let frames = self.model.frames();
                let offset = u64::from(offset) & 0xFFF;
                if frames.is_empty() {
                    offset
                } else {
                    (frames[usize::from(index) % frames.len()] << 12) | offset
                }
            }
        }
    }

    /// The domain's memory map: the listed frames first, then [`default_frame`].
    pub(super) fn memory_map(&self) -> MemoryMap<'_> {
        MemoryMap {
            listed: &self.memory[..self.memory_len],
            otherwise: default_frame,
        }
    }

    pub(super) fn host_addr(&self, addr: HostAddr) -> u64 {
        match addr {
            HostAddr::Raw(addr) => addr,
            HostAddr::Mapped { index, offset } => {
                let offset = u64::from(offset) & 0xFFF;
                if self.memory_len == 0 {
                    offset
                } else {
                    (self.memory[usize::from(index) % self.memory_len].host_frame << 12) | offset
                }
            }
        }
    }

    /// Injects `error` into both and compares the reports and the notifications.
    pub(super) fn inject(
        &mut self,
        error: RefError,
        host_addr: HostPhysAddr,
        consumer: Option<u32>,
    ) -> Result<(), String> {
        let mce = GuestMce {
            class: error.class,
            host_mcg_status: McgStatus::from_bits_retain(error.mcg_status),
            host_status: MciStatus::from_bits_retain(error.status),
            host_addr,
            guest_addr: GuestPhysAddr(error.guest_addr),
            misc: MciMisc(error.misc),
        };
        self.cpus.clear();
        let got = self
            .domain
            .inject(&mce, consumer.map(VcpuId), &mut self.cpus);
        let expected = self.model.inject(error, consumer, &self.cpus.flags);
        if let Ok(report) = &got
            && report.downgraded.is_none()
            && consumer.is_some()
            && matches!(
                error.class,
                ReflectClass::SrarDataLoad | ReflectClass::SrarInstructionFetch
            )
        {
            self.stats.srar_with_consumer += 1;
        }
        self.compare_delivery(
            got,
            expected,
            &format_args!("inject {error:x?} consumer {consumer:?}"),
        )
    }

    pub(super) fn compare_delivery(
        &mut self,
        got: Result<vmce::InjectionReport, vmce::InjectError>,
        expected: Result<super::reference::Delivery, vmce::InjectError>,
        what: &dyn std::fmt::Display,
    ) -> Result<(), String> {
        match (&got, &expected) {
            (Ok(report), Ok(delivery)) => {
                ensure!(
                    *report == delivery.report,
                    "{what}:\n vmce  {report:?}\n model {:?}",
                    delivery.report
                );
                ensure!(
                    self.cpus.notified == delivery.notified && self.cpus.extra == 0,
                    "{what}: notified\n vmce  {:?} (+{})\n model {:?}",
                    self.cpus.notified,
                    self.cpus.extra,
                    delivery.notified
                );
                self.count_delivery(report);
            }
            (Err(got), Err(expected)) => {
                ensure!(got == expected, "{what}: vmce {got:?}, model {expected:?}");
                ensure!(
                    self.cpus.notified == [None; MAX_VCPUS],
                    "{what}: refused, but notified {:?}",
                    self.cpus.notified
                );
                self.stats.inject_refused += 1;
            }
            _ => {
                return Err(format!(
                    "{what}:\n vmce  {got:?}\n model {:?}",
                    expected.map(|delivery| delivery.report)
                ));
            }
        }
        Ok(())
    }

    fn count_delivery(&mut self, report: &vmce::InjectionReport) {
        use vmce::DeliveryMode;
        let stats = &mut self.stats;
        stats.injections += 1;
        match report.mode {
            DeliveryMode::Broadcast => stats.broadcast += 1,
            DeliveryMode::Local => stats.local += 1,
            DeliveryMode::Single => stats.single += 1,
            other => panic!("unknown delivery mode {other:?}"),
        }
        stats.downgraded += u64::from(report.downgraded.is_some());
        stats.skipped += u64::from(report.skipped != 0);
        stats.shutdown += u64::from(report.shutdown != 0);
        stats.overflow += u64::from(report.overflow);
        stats.list_full +=
            u64::from(report.broken_frame == vmce::broken::BrokenFrameNote::ListFull);
    }

    fn broken_access(&mut self, addr: GuestAddr, fetch: bool, vcpu: u32) -> Result<(), String> {
        let addr = self.guest_addr(addr);
        let access = if fetch {
            Access::InstructionFetch
        } else {
            Access::DataLoad
        };
        self.cpus.clear();
        let got = self.domain.inject_broken_access(
            GuestPhysAddr(addr),
            access,
            VcpuId(vcpu),
            &mut self.cpus,
        );
        let expected = self
            .model
            .inject_broken_access(addr, fetch, vcpu, &self.cpus.flags);
        if got.is_ok() {
            self.stats.broken_access += 1;
        }
        self.compare_delivery(
            got,
            expected,
            &format_args!("broken access {addr:#x} fetch {fetch} vCPU {vcpu}"),
        )
    }
}
