//! The hypervisor's entry points ([`bsp_main`], [`ap_main`], called by `boot.rs`), the vCPU
//! loop with its #VMEXIT handlers, the scenarios' host errors and the panic handler.

#![cfg(target_os = "none")]

use crate::svm::Pages;
use crate::{boot, guest, hvprintln, hw, svm};
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use vmce::classify::Disposition;
use vmce::host::{HostCapabilities, SimulatedHost, collect, release};
use vmce::registers::McgCap;
use vmce::{
    Access, Domain, GuestCpus, GuestFrame, GuestMce, GuestMemory, GuestPhysAddr, HostFrame,
    Profile, RdmsrOutcome, Vcpu, VcpuId, VcpuOutcome, WrmsrOutcome,
};
use vmce_qemu_protocol::linux::{LinuxProfile, console, params};

/// The scenario of this run: what the hypervisor does once the guest is ready.
pub use vmce_qemu_protocol::linux::LinuxScenario as Scenario;

fn param(addr: u64) -> u64 {
    // SAFETY: identity-mapped host memory that `-device loader` filled (or zero).
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}

/// Per physical CPU = per vCPU state.
struct PerCpu {
    vmcb: Pages<4096>,
    hsave: Pages<4096>,
    /// Set once the vCPU has entered the guest: [`GuestCpus::is_up`].
    up: AtomicBool,
    /// Set by a CPU that sends this one the kick NMI.
    kicked: AtomicBool,
    /// Set when the nested page tables lost a mapping: flush this vCPU's TLB at VMRUN.
    flush_tlb: AtomicBool,
}

static CPUS: [PerCpu; boot::MAX_CPUS] = [const {
    PerCpu {
        vmcb: Pages::new(),
        hsave: Pages::new(),
        up: AtomicBool::new(false),
        kicked: AtomicBool::new(false),
        flush_tlb: AtomicBool::new(false),
    }
}; boot::MAX_CPUS];

static INTEL_VCPUS: [Vcpu; boot::MAX_CPUS] = [const { Vcpu::new(Profile::Intel) }; boot::MAX_CPUS];
static AMD_VCPUS: [Vcpu; boot::MAX_CPUS] = [const { Vcpu::new(Profile::Amd) }; boot::MAX_CPUS];

type GuestDomain = Domain<&'static [Vcpu]>;
static DOMAIN: spin::Once<GuestDomain> = spin::Once::new();
static HOST: spin::Once<HostCapabilities> = spin::Once::new();
static SCENARIO: spin::Once<Scenario> = spin::Once::new();
static VCPU_COUNT: AtomicU32 = AtomicU32::new(1);
static STARTED: AtomicU32 = AtomicU32::new(0);
static MSR_EXITS: AtomicU32 = AtomicU32::new(0);
static GP_INJECTED: AtomicU32 = AtomicU32::new(0);

fn domain() -> &'static GuestDomain {
    DOMAIN
        .get()
        .expect("domain is created before any vCPU runs")
}

/// The guest's memory as vmce translates it: guest-physical 0 is host-physical
/// [`guest::RAM_HPA`], [`guest::RAM_SIZE`] bytes.
struct GuestRam;

impl GuestMemory for GuestRam {
    fn guest_frame(&self, host: HostFrame) -> Option<GuestFrame> {
        let first = guest::RAM_HPA >> 12;
        let last = (guest::RAM_HPA + guest::RAM_SIZE) >> 12;
        (first..last)
            .contains(&host.0)
            .then(|| GuestFrame(host.0 - first))
    }
}

/// What vmce cannot see: which vCPUs are up, their CR4 (from their VMCB), and the kick.
struct Cpus {
    self_id: u32,
}

impl GuestCpus for Cpus {
    fn is_up(&self, vcpu: VcpuId) -> bool {
        CPUS.get(vcpu.0 as usize)
            .is_some_and(|cpu| cpu.up.load(Ordering::Acquire))
    }

    /// CR4.MCE as the vCPU's VMCB holds it: exact for the calling vCPU, as of its last
    /// #VMEXIT for the others (CR4 writes are not intercepted).
    fn machine_check_enabled(&self, vcpu: VcpuId) -> bool {
        CPUS.get(vcpu.0 as usize)
            .is_some_and(|cpu| cpu.vmcb.read::<u64>(svm::CR4) & (1 << 6) != 0)
    }

    fn notify(&mut self, vcpu: VcpuId, outcome: VcpuOutcome) {
        hvprintln!("  {vcpu}: {outcome}");
        match outcome {
            VcpuOutcome::Delivered { .. } if vcpu.0 != self.self_id => {
                if let Some(cpu) = CPUS.get(vcpu.0 as usize) {
                    cpu.kicked.store(true, Ordering::Release);
                    hw::send_nmi(vcpu.0);
                }
            }
            _ => {}
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn bsp_main() -> ! {
    hvprintln!("vmce-svm-hypervisor up");
    let features = hw::cpuid(0x8000_0001, 0)[2];
    let svm_features = hw::cpuid(0x8000_000A, 0)[3];
    if features & (1 << 2) == 0 || svm_features & 1 == 0 {
        hvprintln!("FATAL: this CPU has no SVM with nested paging (QEMU: -cpu max)");
        hw::qemu_exit(0x10);
    }
    setup_idt();
    let scenario = *SCENARIO.call_once(|| Scenario::from_code(param(params::SCENARIO)));
    let vcpus = (param(params::VCPUS) as u32).clamp(1, boot::MAX_CPUS as u32);
    VCPU_COUNT.store(vcpus, Ordering::Release);
    let profile = match LinuxProfile::from_code(param(params::PROFILE)) {
        LinuxProfile::Amd => Profile::Amd,
        _ => Profile::Intel,
    };
    // The host's machine-check registers, at the MSR boundary: TCG's CPU is AMD and raises
    // nothing on its own, so host errors come from vmce's simulated host (see README).
    let host = *HOST.call_once(|| match profile {
        Profile::Amd => {
            HostCapabilities::new(vmce::Vendor::Amd, McgCap::from_bits_retain(0x0000_0006))
        }
        _ => HostCapabilities::new(vmce::Vendor::Intel, McgCap::from_bits_retain(0x0100_0C0A)),
    });
    let storage: &'static [Vcpu] = match profile {
        Profile::Amd => &AMD_VCPUS[..vcpus as usize],
        _ => &INTEL_VCPUS[..vcpus as usize],
    };
    match Domain::new(profile, &host, storage) {
        Ok(domain) => {
            DOMAIN.call_once(|| domain);
        }
        Err(error) => {
            hvprintln!("FATAL: cannot create the domain: {error}");
            hw::qemu_exit(0x11);
        }
    }
    hvprintln!(
        "scenario {scenario:?}, profile {profile:?} (MCG_CAP {:#x}), {vcpus} vCPU(s)",
        profile.mcg_cap().bits()
    );
    svm::intercept_port(0x3f8);
    for msr in guest::MCA_MSRS.iter().flat_map(|range| range.clone()) {
        svm::intercept_msr(msr);
    }
    // AMD's deferred-error LVT offset (MSR_CU_DEF_ERR): #GP, see guest::DEFERRED_ERROR_MSR.
    svm::intercept_msr(guest::DEFERRED_ERROR_MSR);
    let entry = guest::load(scenario, vcpus, param(params::INITRD_SIZE));
    if vcpus > 1 {
        guest::start_application_processors();
    }
    run_vcpu(0, Some(entry))
}

#[unsafe(no_mangle)]
pub extern "C" fn ap_main(apic_id: u32) -> ! {
    setup_idt();
    if apic_id >= VCPU_COUNT.load(Ordering::Acquire) {
        loop {
            // SAFETY: a CPU with no vCPU parks.
            unsafe { core::arch::asm!("cli; hlt") }
        }
    }
    let entry = guest::wait_for_wakeup(apic_id);
    run_vcpu(apic_id, Some(entry))
}

/// Host IDT: NMI returns (the kick), everything else reports and stops.
fn setup_idt() {
    static IDT: Pages<4096> = Pages::new();
    static ONCE: spin::Once<()> = spin::Once::new();
    ONCE.call_once(|| {
        let stubs = &raw const boot::host_fault_stubs as u64;
        let nmi = &raw const boot::host_nmi as u64;
        for vector in 0..32usize {
            let handler = if vector == 2 {
                nmi
            } else {
                stubs + 16 * vector as u64
            };
            let low = (handler & 0xFFFF)
                | (0x08 << 16)
                | (0x8E00u64 << 32)
                | ((handler >> 16) & 0xFFFF) << 48;
            IDT.write(vector * 16, low);
            IDT.write(vector * 16 + 8, handler >> 32);
        }
    });
    let pointer: [u8; 10] = {
        let mut p = [0u8; 10];
        p[..2].copy_from_slice(&(32u16 * 16 - 1).to_le_bytes());
        p[2..].copy_from_slice(&IDT.addr().to_le_bytes());
        p
    };
    // SAFETY: the IDT lives for the whole run; its gates point at the stubs in boot.rs.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) pointer.as_ptr()) }
}

#[unsafe(no_mangle)]
pub extern "C" fn host_fault(vector: u64, frame: *const u64) -> ! {
    // SAFETY: the stub passes the stack pointer at exception entry; the first words are the
    // CPU's exception frame (error code first for vectors that have one).
    let words = unsafe { core::slice::from_raw_parts(frame, 4) };
    hvprintln!(
        "HOST EXCEPTION vector {vector} frame {:#x} {:#x} {:#x} {:#x}",
        words[0],
        words[1],
        words[2],
        words[3]
    );
    hw::qemu_exit(0x12)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    hvprintln!("HOST PANIC: {info}");
    hw::qemu_exit(0x13)
}

/// Which of this CPU's guest lines the host acts on (the guest's console goes through here).
struct ConsoleLine {
    bytes: [u8; 512],
    len: usize,
}

static CONSOLE: spin::Mutex<ConsoleLine> = spin::Mutex::new(ConsoleLine {
    bytes: [0; 512],
    len: 0,
});
static FIRED: AtomicBool = AtomicBool::new(false);

/// A byte of the guest's COM1 output: passed on, and a finished line that asks for the
/// scenario's error triggers it (once).
fn guest_console_byte(id: u32, byte: u8) {
    hw::guest_putc(byte);
    let (ready, victim) = {
        let mut line = CONSOLE.lock();
        if byte == b'\n' {
            let text = &line.bytes[..line.len];
            let ready = text.starts_with(console::READY.as_bytes());
            let victim = text.starts_with(console::VICTIM.as_bytes());
            line.len = 0;
            (ready, victim)
        } else {
            if line.len < line.bytes.len() {
                let at = line.len;
                line.bytes[at] = byte;
                line.len += 1;
            }
            (false, false)
        }
    };
    let scenario = *SCENARIO.get().expect("set at boot");
    if victim && matches!(scenario, Scenario::BrokenFrame | Scenario::SraoUserMode) {
        hunt_user_mode(id);
    }
    if ready && scenario != Scenario::SraoUserMode && !FIRED.swap(true, Ordering::AcqRel) {
        scenario_error(id, None);
    }
}

/// The search for the guest process in user mode (scenario 3, `srao-user`): [`HUNT_IDLE`], then
/// [`HUNT_ON`] from the guest's first `VMCE-GUEST victim` line until a vCPU is found at CPL 3,
/// then [`HUNT_DONE`] (one frame breaks, once).
static HUNT: AtomicU8 = AtomicU8::new(HUNT_IDLE);
const HUNT_IDLE: u8 = 0;
const HUNT_ON: u8 = 1;
const HUNT_DONE: u8 = 2;

/// While the guest's process spins in user mode (pinned to the last vCPU; the guest's shell
/// and its children are pinned to vCPU 0, and repeat the line once a second): the last vCPU
/// is kicked out of the guest, and when it exits at CPL 3 it acts ([`check_hunt`]).
fn hunt_user_mode(id: u32) {
    if HUNT.load(Ordering::Acquire) == HUNT_DONE {
        return;
    }
    let _ = HUNT.compare_exchange(HUNT_IDLE, HUNT_ON, Ordering::AcqRel, Ordering::Acquire);
    let last = VCPU_COUNT.load(Ordering::Acquire) - 1;
    if let Some(cpu) = CPUS.get(last as usize)
        && last != id
        && cpu.up.load(Ordering::Acquire)
    {
        cpu.kicked.store(true, Ordering::Release);
        hw::send_nmi(last);
    }
}

/// After a #VMEXIT of vCPU `id`: if the hunt is on, `id` is the last vCPU (where only the
/// guest's spinning process runs user code) and the guest was in user mode, scenario 3
/// breaks the frame under its stack pointer, and `srao-user` raises the host error with this
/// vCPU as the consumer (it was running when the host took the error).
fn check_hunt(id: u32, vmcb: &Pages<4096>) {
    if HUNT.load(Ordering::Acquire) != HUNT_ON
        || id + 1 != VCPU_COUNT.load(Ordering::Acquire)
        || vmcb.read::<u8>(svm::CPL) != 3
    {
        return;
    }
    let rsp: u64 = vmcb.read(svm::RSP);
    let rip: u64 = vmcb.read(svm::RIP);
    let Some(gpa) = guest::translate(vmcb.read(svm::CR3), rsp) else {
        return;
    };
    if HUNT
        .compare_exchange(HUNT_ON, HUNT_DONE, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        hvprintln!(
            "vCPU {id}: guest user mode at RIP {rip:#x}, RSP {rsp:#x} (guest-physical {gpa:#x})"
        );
        if *SCENARIO.get().expect("set at boot") == Scenario::SraoUserMode {
            scenario_error(id, Some(VcpuId(id)));
        } else {
            break_frames(id, &[gpa & !0xFFF]);
        }
    }
}

/// Scenario 3: guest frames break. Each goes on the domain's
/// broken-frame list the way vmce lists a frame that broke while the domain lived on another
/// host (a domain record naming it, `Domain::restore_domain`), and is unmapped from the nested
/// page tables; every vCPU flushes its TLB (the others are kicked). Linux is not told: the
/// process finds out when it next touches the page.
fn break_frames(id: u32, frames: &[u64]) {
    let mut saved = domain().save().domain();
    for &gpa in frames {
        let note = saved.broken_frames.insert(GuestFrame(gpa >> 12));
        hvprintln!("guest frame {gpa:#x} breaks: {note:?}");
    }
    if let Err(error) = domain().restore_domain(&saved) {
        hvprintln!("FATAL: cannot list the broken frames: {error}");
        hw::qemu_exit(0x16);
    }
    for &gpa in frames {
        guest::unmap_frame(gpa);
    }
    for (other, cpu) in CPUS.iter().enumerate() {
        cpu.flush_tlb.store(true, Ordering::Release);
        if other as u32 != id && cpu.up.load(Ordering::Acquire) {
            cpu.kicked.store(true, Ordering::Release);
            hw::send_nmi(other as u32);
        }
    }
    hvprintln!(
        "{} frame(s) unmapped in the nested page tables; the domain lists {} broken frame(s)",
        frames.len(),
        domain().broken_frames().len()
    );
}

/// The guest page the scenarios' memory error hits: free in a freshly booted guest.
const ERROR_GPA: u64 = 0x0900_0000;

/// Raises the scenario's host error on the simulated host, runs vmce's host path (collect,
/// classify, translate), and injects into the domain, `consumer` being the vCPU that was
/// running when the host took it (if any). Runs on vCPU `id`'s CPU in host mode.
fn scenario_error(id: u32, consumer: Option<VcpuId>) {
    let scenario = *SCENARIO.get().expect("set at boot");
    if matches!(scenario, Scenario::Boot | Scenario::BrokenFrame) {
        hvprintln!("guest ready; scenario has no host error to raise");
        return;
    }
    let host = *HOST.get().expect("set at boot");
    let mut msrs = SimulatedHost::new(host);
    let host_addr = guest::RAM_HPA + ERROR_GPA;
    let (status, mcg_status, misc) = match (scenario, host.vendor()) {
        // VAL EN MISCV ADDRV, UC clear, MCACOD 0x00C0: a corrected memory-scrub error.
        (Scenario::Corrected, _) => (0x8C00_0000_0000_00C0u64, 0x0, 0x86),
        // VAL UC EN MISCV ADDRV S, AR clear, MCACOD 0x00C0 (memory scrub): SRAO.
        (_, vmce::Vendor::Intel) => (0xBD00_0000_0000_00C0, 0x5, 0x86),
        // AMD: VAL UC EN MISCV ADDRV, PCC clear, MCACOD 0x00C0.
        (_, vmce::Vendor::Amd) => (0xBC00_0000_0000_00C0, 0x5, 0x86),
    };
    let raised = msrs.raise(1, status, mcg_status, host_addr, misc);
    hvprintln!(
        "host error raised (simulated host bank 1): MCi_STATUS {status:#x} MCG_STATUS {mcg_status:#x} ADDR {host_addr:#x} MISC {misc:#x}: {raised:?}"
    );
    let event = collect(&mut msrs, &host);
    release(&mut msrs, &event);
    let Some((bank, disposition)) = event.most_severe(&host) else {
        hvprintln!("vmce: no valid bank in the host event: nothing reflected");
        return;
    };
    hvprintln!("vmce: host bank {} classified {disposition:?}", bank.bank);
    // Classified once (most_severe): translate the bank as that class.
    let class = match disposition {
        Disposition::Reflect(class) => class,
        Disposition::HostOnly(reason) => {
            hvprintln!("vmce: not reflected, host only: {reason}");
            return;
        }
        Disposition::Fatal(reason) => {
            hvprintln!("vmce: not reflected, fatal: {reason}");
            return;
        }
    };
    let error = match GuestMce::from_classified(class, event.mcg_status, &bank, &GuestRam) {
        Ok(error) => error,
        Err(reason) => {
            hvprintln!("vmce: not reflected: {reason}");
            return;
        }
    };
    hvprintln!(
        "vmce: reflected as {:?}: guest address {:#x}, guest MCi_STATUS {:#x}",
        error.class,
        error.guest_addr.0,
        error.guest_status().bits()
    );
    let mut cpus = Cpus { self_id: id };
    let rounds = if scenario == Scenario::McipStillSet {
        2
    } else {
        1
    };
    for _ in 0..rounds {
        let result = if scenario == Scenario::LegacyVcpu0 {
            legacy_vcpu0_delivery(&error, &mut cpus)
        } else {
            domain().inject(&error, consumer, &mut cpus)
        };
        match result {
            Ok(report) => {
                hvprintln!("vmce: injected: {report}");
                if let Some((vcpu, reason)) = report.first_shutdown {
                    // A vCPU that is up cannot take the #MC: architecturally a shutdown.
                    hvprintln!(
                        "DOMAIN SHUTDOWN: {vcpu} cannot take the machine check ({reason}); {} vCPU(s) affected",
                        report.shutdown
                    );
                    hw::qemu_exit(0x30);
                }
            }
            Err(error) => hvprintln!("vmce: injection refused: {error}"),
        }
    }
}

/// Scenario 5: the pre-fix Xen behaviour, vCPU 0 only, for comparison. vmce always
/// broadcasts on Intel, so this injects through a one-vCPU view of the same domain state:
/// vCPU 0 gets the error; the other vCPUs get nothing.
fn legacy_vcpu0_delivery(
    error: &GuestMce,
    cpus: &mut Cpus,
) -> Result<vmce::InjectionReport, vmce::InjectError> {
    struct OnlyVcpu0<'a>(&'a mut Cpus);
    impl GuestCpus for OnlyVcpu0<'_> {
        fn is_up(&self, vcpu: VcpuId) -> bool {
            vcpu.0 == 0 && self.0.is_up(vcpu)
        }
        fn machine_check_enabled(&self, vcpu: VcpuId) -> bool {
            self.0.machine_check_enabled(vcpu)
        }
        fn notify(&mut self, vcpu: VcpuId, outcome: VcpuOutcome) {
            if vcpu.0 == 0 {
                self.0.notify(vcpu, outcome);
            }
        }
    }
    domain().inject(error, None, &mut OnlyVcpu0(cpus))
}

/// The vCPU loop of physical CPU `id`: VMRUN, handle the exit, repeat.
fn run_vcpu(id: u32, entry: Option<guest::Entry>) -> ! {
    let cpu = &CPUS[id as usize];
    let vcpu = &domain().vcpus()[id as usize];
    hw::wrmsr(0xC001_0117, cpu.hsave.addr());
    let vmcb = &cpu.vmcb;
    guest::init_vmcb(vmcb, entry.expect("every vCPU starts at an entry"));
    let mut regs = boot::GuestRegs {
        rbx: guest::boot_rbx(id),
        ..boot::GuestRegs::default()
    };
    cpu.up.store(true, Ordering::Release);
    let started = STARTED.fetch_add(1, Ordering::AcqRel) + 1;
    hvprintln!(
        "vCPU {id} entering the guest at {:#x} ({started} up)",
        vmcb.read::<u64>(svm::RIP)
    );
    loop {
        if vmcb.read::<u64>(svm::EVENT_INJ) & svm::EVENT_VALID == 0 && vcpu.take_pending() {
            vmcb.write::<u64>(svm::EVENT_INJ, 18 | svm::EVENT_EXCEPTION | svm::EVENT_VALID);
            hvprintln!(
                "vCPU {id}: #MC (vector 18) injected at VMRUN, guest RIP {:#x}",
                vmcb.read::<u64>(svm::RIP)
            );
        }
        let flush = cpu.flush_tlb.swap(false, Ordering::AcqRel);
        vmcb.write::<u8>(svm::TLB_CONTROL, u8::from(flush));
        // SAFETY: the VMCB, host save area, permission maps and nested page tables are set up
        // (init_vmcb, guest::load); `regs` is this vCPU's register block.
        unsafe { boot::vmrun_guest(vmcb.addr(), &raw mut regs) };
        check_hunt(id, vmcb);
        let code: u64 = vmcb.read(svm::EXIT_CODE);
        let info1: u64 = vmcb.read(svm::EXIT_INFO1);
        let info2: u64 = vmcb.read(svm::EXIT_INFO2);
        let rip: u64 = vmcb.read(svm::RIP);
        vmcb.write::<u64>(svm::EVENT_INJ, 0);
        let pending_event: u64 = vmcb.read(svm::EXIT_INT_INFO);
        if pending_event & svm::EVENT_VALID != 0 {
            // An event whose delivery the exit interrupted: deliver it again.
            vmcb.write::<u64>(svm::EVENT_INJ, pending_event);
        }
        match code {
            svm::EXIT_MSR => {
                MSR_EXITS.fetch_add(1, Ordering::Relaxed);
                let index = regs.rcx as u32;
                let ok = if info1 == 0 {
                    match vcpu.rdmsr(index) {
                        RdmsrOutcome::Handled(value) => {
                            vmcb.write::<u64>(svm::RAX, value & 0xFFFF_FFFF);
                            regs.rdx = value >> 32;
                            true
                        }
                        RdmsrOutcome::NotOurs | RdmsrOutcome::RaiseGp(_) => false,
                    }
                } else {
                    let value = (regs.rdx << 32) | (vmcb.read::<u64>(svm::RAX) & 0xFFFF_FFFF);
                    matches!(vcpu.wrmsr(index, value), WrmsrOutcome::Handled)
                };
                if ok {
                    vmcb.write::<u64>(svm::RIP, rip + 2);
                } else {
                    // Not an MCA register of this dialect (the hypervisor has nothing else in
                    // these ranges), or vmce's #GP outcome: #GP(0), RIP unchanged.
                    GP_INJECTED.fetch_add(1, Ordering::Relaxed);
                    vmcb.write::<u64>(
                        svm::EVENT_INJ,
                        13 | svm::EVENT_EXCEPTION | svm::EVENT_ERROR_CODE | svm::EVENT_VALID,
                    );
                }
            }
            svm::EXIT_CPUID => {
                let leaf = vmcb.read::<u64>(svm::RAX) as u32;
                let out = guest::cpuid(domain().profile(), leaf, regs.rcx as u32);
                vmcb.write::<u64>(svm::RAX, u64::from(out[0]));
                regs.rbx = u64::from(out[1]);
                regs.rcx = u64::from(out[2]);
                regs.rdx = u64::from(out[3]);
                vmcb.write::<u64>(svm::RIP, rip + 2);
            }
            svm::EXIT_IOIO => {
                let port = (info1 >> 16) as u16;
                let is_in = info1 & 1 == 1;
                let rax: u64 = vmcb.read(svm::RAX);
                if is_in {
                    let value = hw::inb(port);
                    vmcb.write::<u64>(svm::RAX, (rax & !0xFF) | u64::from(value));
                } else {
                    guest_console_byte(id, rax as u8);
                }
                // No NRIP save under TCG: EXITINFO2 is the next RIP.
                vmcb.write::<u64>(svm::RIP, info2);
            }
            svm::EXIT_NMI => {
                if !cpu.kicked.swap(false, Ordering::AcqRel) {
                    // Not our kick: the guest's own NMI, handed back to it.
                    vmcb.write::<u64>(svm::EVENT_INJ, 2 | svm::EVENT_NMI | svm::EVENT_VALID);
                }
            }
            svm::EXIT_VMRUN => {
                vmcb.write::<u64>(svm::EVENT_INJ, 6 | svm::EVENT_EXCEPTION | svm::EVENT_VALID);
            }
            svm::EXIT_SHUTDOWN => {
                hvprintln!(
                    "vCPU {id}: guest SHUTDOWN (triple fault) at RIP {rip:#x}; MSR exits {}",
                    MSR_EXITS.load(Ordering::Relaxed)
                );
                hw::qemu_exit(0x20);
            }
            svm::EXIT_NPF => nested_page_fault(id, info1, info2, vmcb),
            _ => {
                hvprintln!(
                    "vCPU {id}: unexpected #VMEXIT {code:#x} info1 {info1:#x} info2 {info2:#x} RIP {rip:#x}"
                );
                hw::qemu_exit(0x22);
            }
        }
    }
}

/// A nested page fault: an access to a broken frame becomes an action-required machine
/// check on this vCPU (`Domain::inject_broken_access`), delivered at the next VMRUN with RIP
/// unchanged; any other is a hypervisor failure.
fn nested_page_fault(id: u32, info1: u64, gpa: u64, vmcb: &Pages<4096>) {
    let rip: u64 = vmcb.read(svm::RIP);
    let cpl: u8 = vmcb.read(svm::CPL);
    if !domain().is_broken(GuestFrame(gpa >> 12)) {
        hvprintln!(
            "vCPU {id}: unexpected nested page fault at guest-physical {gpa:#x} (error {info1:#x}), RIP {rip:#x}, CPL {cpl}"
        );
        hw::qemu_exit(0x21);
    }
    // EXITINFO1 bit 4: the access was an instruction fetch.
    let access = if info1 & (1 << 4) != 0 {
        Access::InstructionFetch
    } else {
        Access::DataLoad
    };
    hvprintln!(
        "vCPU {id}: nested page fault on broken frame at guest-physical {gpa:#x} ({access:?}, error {info1:#x}), RIP {rip:#x}, CPL {cpl}"
    );
    let mut cpus = Cpus { self_id: id };
    match domain().inject_broken_access(GuestPhysAddr(gpa), access, VcpuId(id), &mut cpus) {
        Ok(report) => {
            hvprintln!("vmce: broken-frame access injected: {report}");
            if let Some((vcpu, reason)) = report.first_shutdown {
                hvprintln!(
                    "DOMAIN SHUTDOWN: {vcpu} cannot take the machine check ({reason}); {} vCPU(s) affected",
                    report.shutdown
                );
                hw::qemu_exit(0x30);
            }
        }
        Err(error) => {
            hvprintln!("FATAL: vmce refused the broken-frame access: {error}");
            hw::qemu_exit(0x17);
        }
    }
}
