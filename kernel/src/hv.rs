//! The kernel's virtual MCA: the vmce crate, wired into this tiny hypervisor.
//!
//! | kernel hook                  | vmce                                                       |
//! |------------------------------|------------------------------------------------------------|
//! | [`init`]                     | `Domain::new` (checks the host) over static `Vcpu`s        |
//! | [`emulate_rdmsr`]            | `Vcpu::rdmsr` (`NotOurs` is a #GP: the kernel has no other MSRs) |
//! | [`emulate_wrmsr`]            | `Vcpu::wrmsr`                                              |
//! | [`take_pending_mce`]         | `Vcpu::take_pending`                                       |
//! | [`reflect_host_mce`]         | `HostMce::most_severe` + `GuestMce::from_classified` + `Domain::inject` |
//! | [`broken_frame_access`]      | `Domain::inject_broken_access`                             |
//! | [`for_each_broken_frame`]    | `Domain::broken_frames`                                    |
//! | [`records`]                  | save and restore records (live migration)                  |
//! | [`set_vcpu_up`]              | what `GuestCpus::is_up` answers: a vCPU not up is skipped  |
//!
//! vCPU `n` runs on CPU `n`, so the vCPU that was running when CPU `n` took a host machine
//! check (the consumer of an SRAR) is vCPU `n`; a CPU beyond the domain's vCPUs runs no guest,
//! and an SRAR it takes has no consumer. Guest RAM is host frames `0x4000..`, mapped at guest
//! frame 0 ([`GuestRam`]). Each vCPU has a virtual `CR4.MCE` that the guest may clear through
//! a hypercall; vmce reports a vCPU that cannot take a #MC and the kernel then shuts the
//! domain down, as Xen does. A guest takes a vCPU offline through another hypercall
//! ([`set_vcpu_up`]); vmce skips it, whatever its `CR4.MCE`.
//!
//! [`Delivery::LegacyVcpu0`] reproduces Xen's behaviour before its vMCE rework (every error
//! to vCPU 0 alone) by giving vmce a domain view of vCPU 0 only: the other vCPUs never
//! take the #MC, so a guest that rendezvouses all CPUs in its handler times out.
//!
//! A frame restored as broken by a migration is kept unmapped by the destination
//! (`paging::unmap_guest_frame`); a guest access to it faults, and [`broken_frame_access`]
//! turns the fault into a fresh action-required machine check on the accessing vCPU.

#![cfg(target_os = "none")]

pub mod records;

use crate::exit::{ExitCode, exit_qemu};
use crate::percpu::MAX_CPUS;
use crate::{kprintln, paging, smp};
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use vmce::classify::Disposition;
use vmce::delivery::InjectError;
use vmce::host::{HostCapabilities, HostMce};
use vmce::{
    Access, Domain, Event, EventQueue, GuestCpus, GuestFrame, GuestMce, GuestMemory, GuestPhysAddr,
    HostFrame, InjectionReport, NotReflected, Profile, RdmsrOutcome, Vcpu, VcpuId, VcpuOutcome,
    WrmsrOutcome,
};

/// The management plane's events (`vmce::events`): pushed on the injection path, drained and
/// printed (`HV event: vmce: ...`) once the decision is complete ([`print_events`]).
static EVENTS: EventQueue<16> = EventQueue::new();

/// Prints every queued event, and how many did not fit, if any.
fn print_events() {
    for event in EVENTS.drain() {
        kprintln!("HV event: {event}");
    }
    let dropped = EVENTS.take_dropped();
    if dropped != 0 {
        kprintln!("HV event: {dropped} events dropped (queue full)");
    }
}

/// Result of emulating a guest `rdmsr` / `wrmsr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Emulated; for `rdmsr` the value read (for `wrmsr` always 0).
    Handled(u64),
    /// The guest must receive #GP(0).
    RaiseGp,
}

/// Who receives a reflected error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Delivery {
    /// vmce's rules: every vCPU on Intel, the data on the consumer (SRAR) or vCPU 0.
    Architectural = 0,
    /// Xen before its vMCE rework: vCPU 0 only.
    LegacyVcpu0 = 1,
}

static VCPUS_INTEL: [Vcpu; MAX_CPUS] = [const { Vcpu::new(Profile::Intel) }; MAX_CPUS];
static VCPUS_INTEL_LMCE: [Vcpu; MAX_CPUS] = [const { Vcpu::new(Profile::IntelLmce) }; MAX_CPUS];
static VCPUS_AMD: [Vcpu; MAX_CPUS] = [const { Vcpu::new(Profile::Amd) }; MAX_CPUS];
static DOMAIN: spin::Once<Domain<&'static [Vcpu]>> = spin::Once::new();
static LEGACY_VIEW: spin::Once<Domain<&'static [Vcpu]>> = spin::Once::new();
static DELIVERY: AtomicU8 = AtomicU8::new(Delivery::Architectural as u8);
/// Each vCPU's virtual `CR4.MCE`.
static CR4_MCE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(true) }; MAX_CPUS];
/// Whether each vCPU is up: the kernel starts every vCPU of the domain with its CPU, and the
/// guest may take one offline ([`set_vcpu_up`]).
static VCPU_UP: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(true) }; MAX_CPUS];

/// Creates the domain's virtual MCA: `nr_vcpus` vCPUs under `profile`, on a host with
/// `host` capabilities.
///
/// A host that cannot back the profile stops the kernel with vmce's reason.
pub fn init(nr_vcpus: usize, host: HostCapabilities, profile: Profile, delivery: Delivery) {
    kprintln!(
        "HV host {} MCG_CAP {}; guest profile {profile} MCG_CAP {}; delivery {delivery:?}",
        host.vendor(),
        host.mcg_cap(),
        profile.mcg_cap()
    );
    let all: &'static [Vcpu] = match profile {
        Profile::Intel => &VCPUS_INTEL,
        Profile::IntelLmce => &VCPUS_INTEL_LMCE,
        Profile::Amd => &VCPUS_AMD,
    };
    let (vcpus, first) = (
        all.get(..nr_vcpus.clamp(1, MAX_CPUS)).unwrap_or(all),
        all.get(..1).unwrap_or(all),
    );
    let domain = match Domain::new(profile, &host, vcpus) {
        Ok(domain) => domain,
        Err(error) => panic!("cannot create the guest's vMCE: {error}"),
    };
    DOMAIN.call_once(|| domain);
    if let Ok(view) = Domain::new(profile, &host, first) {
        LEGACY_VIEW.call_once(|| view);
    }
    DELIVERY.store(delivery as u8, Ordering::Release);
}

fn vcpu(index: usize) -> Option<&'static Vcpu> {
    DOMAIN.get()?.vcpus().get(index)
}

/// Emulates `rdmsr` of `msr` by vCPU `vcpu`.
pub fn emulate_rdmsr(vcpu_index: usize, msr: u32) -> Outcome {
    match vcpu(vcpu_index).map(|vcpu| vcpu.rdmsr(msr)) {
        Some(RdmsrOutcome::Handled(value)) => Outcome::Handled(value),
        Some(RdmsrOutcome::RaiseGp(cause)) => {
            kprintln!("HV vcpu {vcpu_index} rdmsr {msr:#x}: #GP ({cause})");
            Outcome::RaiseGp
        }
        Some(RdmsrOutcome::NotOurs) | None => {
            kprintln!(
                "HV vcpu {vcpu_index} rdmsr {msr:#x}: #GP (not an MCA register; this kernel has no others)"
            );
            Outcome::RaiseGp
        }
    }
}

/// Emulates `wrmsr` of `value` to `msr` by vCPU `vcpu`.
pub fn emulate_wrmsr(vcpu_index: usize, msr: u32, value: u64) -> Outcome {
    match vcpu(vcpu_index).map(|vcpu| vcpu.wrmsr(msr, value)) {
        Some(WrmsrOutcome::Handled) => Outcome::Handled(0),
        Some(WrmsrOutcome::RaiseGp(cause)) => {
            kprintln!("HV vcpu {vcpu_index} wrmsr {msr:#x}={value:#x}: #GP ({cause})");
            Outcome::RaiseGp
        }
        Some(WrmsrOutcome::NotOurs) | None => {
            kprintln!(
                "HV vcpu {vcpu_index} wrmsr {msr:#x}: #GP (not an MCA register; this kernel has no others)"
            );
            Outcome::RaiseGp
        }
    }
}

/// Whether vCPU `vcpu` must now receive a virtual #MC; consumes the pending flag.
pub fn take_pending_mce(vcpu_index: usize) -> bool {
    vcpu(vcpu_index).is_some_and(Vcpu::take_pending)
}

/// Sets vCPU `vcpu`'s virtual `CR4.MCE` (a guest hypercall).
pub fn set_cr4_mce(vcpu_index: usize, enabled: bool) {
    if let Some(flag) = CR4_MCE.get(vcpu_index) {
        flag.store(enabled, Ordering::Release);
    }
}

/// Marks vCPU `vcpu` up or offline (a guest hypercall): a vCPU that is not up is skipped by
/// every delivery.
pub fn set_vcpu_up(vcpu_index: usize, up: bool) {
    if let Some(flag) = VCPU_UP.get(vcpu_index) {
        flag.store(up, Ordering::Release);
    }
}

/// The guest's RAM as vmce sees it: host frames `0x4000..` at guest frames `0..`.
struct GuestRam;

impl GuestMemory for GuestRam {
    fn guest_frame(&self, host: HostFrame) -> Option<GuestFrame> {
        paging::host_to_guest_frame(host.0).map(GuestFrame)
    }
}

/// The vCPUs' side of an injection: virtual CR4.MCE, and the CPUs to kick afterwards.
struct GuestCpuSet {
    kick: u32,
}

impl GuestCpus for GuestCpuSet {
    fn is_up(&self, vcpu: VcpuId) -> bool {
        VCPU_UP
            .get(vcpu.0 as usize)
            .is_some_and(|flag| flag.load(Ordering::Acquire))
    }

    fn machine_check_enabled(&self, vcpu: VcpuId) -> bool {
        CR4_MCE
            .get(vcpu.0 as usize)
            .is_some_and(|flag| flag.load(Ordering::Acquire))
    }

    fn notify(&mut self, vcpu: VcpuId, outcome: VcpuOutcome) {
        kprintln!("HV {vcpu}: {outcome}");
        if matches!(outcome, VcpuOutcome::Delivered { .. }) {
            self.kick |= 1 << vcpu.0;
        }
    }
}

/// Reflects the host machine check `event`, taken on CPU `cpu` of a host with `host`
/// capabilities (already released on the host), into the domain.
pub fn reflect_host_mce(cpu: u32, host: &HostCapabilities, event: &HostMce) {
    let Some(domain) = DOMAIN.get() else {
        return;
    };
    let Some((bank, disposition)) = event.most_severe(host) else {
        kprintln!("HV cpu={cpu}: no valid bank, nothing to reflect");
        return;
    };
    kprintln!("HV cpu={cpu} bank={} class: {disposition}", bank.bank);
    let class = match disposition {
        Disposition::Reflect(class) => class,
        Disposition::HostOnly(reason) => {
            EVENTS.push(Event::not_reflected(
                None,
                &bank,
                NotReflected::HostOnly(reason),
            ));
            print_events();
            return;
        }
        Disposition::Fatal(reason) => {
            EVENTS.push(Event::not_reflected(
                None,
                &bank,
                NotReflected::Fatal(reason),
            ));
            print_events();
            panic!("fatal host machine check: {reason}")
        }
    };
    let error = match GuestMce::from_classified(class, event.mcg_status, &bank, &GuestRam)
        .map_err(NotReflected::Translate)
    {
        Ok(error) => error,
        Err(reason) => {
            kprintln!("HV cpu={cpu} bank={}: {reason}", bank.bank);
            EVENTS.push(Event::not_reflected(None, &bank, reason));
            print_events();
            return;
        }
    };
    let target = if DELIVERY.load(Ordering::Acquire) == Delivery::LegacyVcpu0 as u8 {
        kprintln!("HV legacy delivery: vmce is handed a view of the domain holding vCPU 0 only");
        LEGACY_VIEW.get().unwrap_or(domain)
    } else {
        domain
    };
    let consumer = (cpu as usize) < target.vcpus().len();
    let mut cpus = GuestCpuSet { kick: 0 };
    kprintln!(
        "HV reflect cpu={cpu} owner=guest {} -> {} consumer={}",
        error.host_addr,
        error.guest_addr,
        if consumer { cpu as i64 } else { -1 }
    );
    let result = target.inject(&error, consumer.then_some(VcpuId(cpu)), &mut cpus);
    finish_injection(result, &error, &cpus);
}

/// Reports an injection, kicks the vCPUs it reached, and shuts the domain down when a vCPU
/// could not take the machine check.
fn finish_injection(
    result: Result<InjectionReport, InjectError>,
    error: &GuestMce,
    cpus: &GuestCpuSet,
) {
    match result {
        Ok(report) => {
            kprintln!(
                "HV injected: {}, data on {}, delivered={} shutdown={} skipped={}",
                report.mode,
                ShowVcpu(report.data_vcpu),
                report.delivered,
                report.shutdown,
                report.skipped
            );
            if let Some(reason) = report.downgraded {
                kprintln!("HV {reason}");
            }
            EVENTS.push_injection(None, &report, error);
            print_events();
            smp::kick_cpus(cpus.kick);
            if let Some((vcpu, reason)) = report.first_shutdown {
                kprintln!("HV {vcpu} cannot take the machine check ({reason}): domain shutdown");
                exit_qemu(ExitCode::GuestCrash);
            }
        }
        Err(error) => kprintln!("HV injection refused: {error}"),
    }
}

/// `vCPU n`, or `no vCPU`.
struct ShowVcpu(Option<VcpuId>);

impl core::fmt::Display for ShowVcpu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(vcpu) => vcpu.fmt(f),
            None => f.write_str("no vCPU"),
        }
    }
}

/// vCPU `cpu` faulted on host address `host_address`, in a page that is not mapped. When
/// that is a guest frame on the domain's broken-frame list, raises a fresh action-required
/// machine check on the vCPU (a data load, or an instruction fetch when `fetch`) and returns
/// `true`; otherwise returns `false` and the caller treats the fault as the guest's own.
pub fn broken_frame_access(cpu: u32, host_address: u64, fetch: bool) -> bool {
    let Some(domain) = DOMAIN.get() else {
        return false;
    };
    let Some(guest_frame) = paging::host_to_guest_frame(host_address >> 12) else {
        return false;
    };
    let guest_addr = GuestPhysAddr((guest_frame << 12) | (host_address & 0xFFF));
    if !domain.is_broken(guest_addr.frame()) {
        return false;
    }
    let (access, what) = if fetch {
        (Access::InstructionFetch, "instruction fetch")
    } else {
        (Access::DataLoad, "data load")
    };
    kprintln!(
        "HV vcpu {cpu} faulted on host {host_address:#x} = {guest_addr}: frame {guest_frame:#x} \
         is broken, raising an action-required machine check ({what})"
    );
    let mut cpus = GuestCpuSet { kick: 0 };
    let result = domain.inject_broken_access(guest_addr, access, VcpuId(cpu), &mut cpus);
    let error = GuestMce::broken_frame_access(domain.profile().vendor(), access, guest_addr);
    finish_injection(result, &error, &cpus);
    true
}

/// Calls `each` with every guest frame on the domain's broken-frame list.
pub fn for_each_broken_frame(mut each: impl FnMut(u64)) {
    if let Some(domain) = DOMAIN.get() {
        domain
            .broken_frames()
            .iter()
            .for_each(|frame| each(frame.0));
    }
}
