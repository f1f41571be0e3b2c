//! Walks one host memory error into a 4-vCPU guest and prints what each vCPU sees.
//!
//! ```text
//! cargo run --example host_error            # SRAR data load on vCPU 2 (default)
//! cargo run --example host_error -- srao    # patrol scrub: broadcast, data on vCPU 0
//! cargo run --example host_error -- srar-hv # SRAR the hypervisor consumed: action-optional
//! cargo run --example host_error -- lmce    # local machine check to one vCPU
//! cargo run --example host_error -- amd     # AMD: one vCPU, never broadcast
//! cargo run --example host_error -- ucna    # not reflected
//! cargo run --example host_error -- fatal   # PCC: the host's problem
//! ```
//!
//! The host CPU is simulated at the MSR boundary (`SimulatedHost`), exactly where the real
//! `rdmsr`/`wrmsr` would be; everything above it is the code a hypervisor runs. The guest
//! was given 4 vCPUs and runs 3 (it never started vCPU 3): vmce skips vCPU 3 instead of
//! reporting a shutdown.

use std::process::ExitCode;
use vmce::classify::Disposition;
use vmce::host::{HostCapabilities, SimulatedHost, collect, release};
use vmce::registers::{McgCap, McgStatus, MciStatus};
use vmce::{
    Domain, Event, EventQueue, GuestCpus, GuestFrame, GuestMce, GuestMemory, HostFrame,
    NotReflected, Profile, RdmsrOutcome, Vcpu, VcpuId, VcpuOutcome, Vendor, WrmsrOutcome,
};

const VCPUS: usize = 4;
/// The hypervisor's id for guest "web-1", carried by its events.
const DOMAIN_ID: u32 = 1;
/// The guest's RAM starts at host frame 0x4000 (64 MiB); guest frame g is host frame 0x4000 + g.
const GUEST_RAM_HOST_FRAME: u64 = 0x4000;
const GUEST_RAM_FRAMES: u64 = 0x8000;

struct P2m;
impl GuestMemory for P2m {
    fn guest_frame(&self, host: HostFrame) -> Option<GuestFrame> {
        let guest = host.0.checked_sub(GUEST_RAM_HOST_FRAME)?;
        (guest < GUEST_RAM_FRAMES).then_some(GuestFrame(guest))
    }
}

/// The hypervisor's view of the guest's vCPUs: which it started (vCPU 3 never was, so its
/// CR4 is still 0), and their CR4.MCE.
struct Cpus {
    up: [bool; VCPUS],
}
impl GuestCpus for Cpus {
    fn is_up(&self, vcpu: VcpuId) -> bool {
        self.up.get(vcpu.0 as usize).copied().unwrap_or(false)
    }
    fn machine_check_enabled(&self, vcpu: VcpuId) -> bool {
        self.is_up(vcpu) // a started Linux vCPU sets CR4.MCE; one never started has CR4 = 0
    }
    fn notify(&mut self, vcpu: VcpuId, outcome: VcpuOutcome) {
        println!("  kick {vcpu}: {outcome}");
    }
}

struct Scenario {
    name: &'static str,
    profile: Profile,
    host: HostCapabilities,
    bank: u8,
    status: u64,
    mcg_status: u64,
    misc: u64,
    consumer: Option<VcpuId>,
}

fn scenario(name: &str) -> Option<Scenario> {
    let intel = HostCapabilities::new(Vendor::Intel, McgCap::from_bits_retain(0x0F00_0C14));
    let amd = HostCapabilities::new(Vendor::Amd, McgCap::from_bits_retain(0x17));
    let base = Scenario {
        name: "srar",
        profile: Profile::Intel,
        host: intel,
        bank: 9,
        status: 0xBD80_0000_0012_0134,
        mcg_status: 0x7,
        misc: 0x86,
        consumer: Some(VcpuId(2)),
    };
    Some(match name {
        "srar" => base,
        "srar-hv" => Scenario {
            // The hypervisor itself (or another domain, or a host context) read the poison,
            // so no vCPU of the owner consumed it.
            name: "srar-hv",
            consumer: None,
            ..base
        },
        "srao" => Scenario {
            name: "srao",
            status: 0xBD00_0000_0040_00CF,
            mcg_status: 0x5,
            consumer: None,
            ..base
        },
        "lmce" => Scenario {
            name: "lmce",
            profile: Profile::IntelLmce,
            mcg_status: 0xF,
            ..base
        },
        "amd" => Scenario {
            name: "amd",
            profile: Profile::Amd,
            host: amd,
            bank: 4,
            status: (1 << 63)
                | (1 << 61)
                | (1 << 60)
                | (1 << 58)
                | (1 << 43)
                | (0x1F << 16)
                | 0x0136,
            misc: 0,
            ..base
        },
        "ucna" => Scenario {
            name: "ucna",
            status: 0xBC20_0000_8000_0136,
            mcg_status: 0,
            consumer: None,
            ..base
        },
        "fatal" => Scenario {
            name: "fatal",
            status: 0xBF20_0000_8000_017A,
            mcg_status: 0x5,
            ..base
        },
        _ => return None,
    })
}

/// What a Linux guest's handler does on one vCPU; returns a line describing it.
fn guest_handler(vcpu: &Vcpu, vendor: Vendor) -> String {
    let read = |msr| match vcpu.rdmsr(msr) {
        RdmsrOutcome::Handled(value) => value,
        other => panic!("rdmsr {msr:#x}: {other:?}"),
    };
    let mcg_status = McgStatus::from_bits_retain(read(0x179 + 1));
    let count = McgCap::from_bits_retain(read(0x179)).count();
    let mut line = format!("MCG_STATUS={mcg_status}");
    let mut found = false;
    for bank in 0..count {
        let status = MciStatus::from_bits_retain(read(0x401 + 4 * u32::from(bank)));
        if status.contains(MciStatus::VAL) {
            found = true;
            let addr = read(0x402 + 4 * u32::from(bank));
            line += &format!(
                "\n      bank {bank}: {}\n      addr={addr:#x} misc={:#x}",
                status.describe(vendor),
                read(0x403 + 4 * u32::from(bank))
            );
            assert_eq!(
                vcpu.wrmsr(0x401 + 4 * u32::from(bank), 0),
                WrmsrOutcome::Handled
            );
        }
    }
    if !found {
        line += ", banks empty (joins the rendezvous)";
    }
    assert_eq!(vcpu.wrmsr(0x17A, 0), WrmsrOutcome::Handled, "clear MCIP");
    line
}

fn main() -> ExitCode {
    let name = std::env::args().nth(1).unwrap_or_else(|| "srar".into());
    let Some(scenario) = scenario(&name) else {
        eprintln!("unknown scenario {name:?}; try srar, srar-hv, srao, lmce, amd, ucna or fatal");
        return ExitCode::FAILURE;
    };
    let host_addr = ((GUEST_RAM_HOST_FRAME + 0x123) << 12) | 0xABC;
    println!("== vmce: one host memory error, scenario {}", scenario.name);
    println!(
        "host: {} MCG_CAP {}",
        scenario.host.vendor(),
        scenario.host.mcg_cap()
    );

    let vcpus: Vec<Vcpu> = (0..VCPUS).map(|_| Vcpu::new(scenario.profile)).collect();
    let domain = match Domain::new(scenario.profile, &scenario.host, vcpus) {
        Ok(domain) => domain,
        Err(error) => {
            eprintln!("cannot create the guest: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut cpus = Cpus {
        up: [true, true, true, false],
    };
    println!(
        "guest \"web-1\": profile {}, {VCPUS} vCPUs (runs 3: vCPU 3 never started), guest MCG_CAP {}",
        scenario.profile,
        scenario.profile.mcg_cap()
    );
    if scenario.profile.has_lmce() {
        for vcpu in domain.vcpus() {
            vcpu.wrmsr(0x4D0, 1); // the guest kernel opts in to LMCE
        }
    }

    // The host CPU takes the machine check (what `mce` in QEMU's monitor does).
    let mut host = SimulatedHost::new(scenario.host);
    host.raise(
        scenario.bank,
        scenario.status,
        scenario.mcg_status,
        host_addr,
        scenario.misc,
    );

    // The hypervisor's #MC handler.
    let event = collect(&mut host, &scenario.host);
    release(&mut host, &event);
    println!("\nhost #MC: MCG_STATUS {}", event.mcg_status);
    for bank in event.banks() {
        println!(
            "  bank {}: {}",
            bank.bank,
            bank.status.describe(scenario.host.vendor())
        );
        println!("          addr={:#x} misc={:#x}", bank.addr, bank.misc.0);
    }
    let Some((bank, disposition)) = event.most_severe(&scenario.host) else {
        println!("no valid bank");
        return ExitCode::SUCCESS;
    };
    println!("class: {disposition}");
    // The management plane's view: one event per decision.
    let not_reflected = |why| println!("=> {}", Event::not_reflected(Some(DOMAIN_ID), &bank, why));
    let class = match disposition {
        Disposition::Reflect(class) => class,
        Disposition::HostOnly(reason) => {
            not_reflected(NotReflected::HostOnly(reason));
            return ExitCode::SUCCESS;
        }
        Disposition::Fatal(reason) => {
            not_reflected(NotReflected::Fatal(reason));
            return ExitCode::SUCCESS;
        }
    };
    let error = match GuestMce::from_classified(class, event.mcg_status, &bank, &P2m)
        .map_err(NotReflected::Translate)
    {
        Ok(error) => error,
        Err(reason) => {
            not_reflected(reason);
            return ExitCode::SUCCESS;
        }
    };
    println!(
        "owner: guest \"web-1\"; {} -> {}",
        error.host_addr, error.guest_addr
    );
    match scenario.consumer {
        Some(consumer) => println!("running on the CPU: {consumer} (the consumer)"),
        None => println!("running on the CPU: no vCPU of web-1 (nothing of the guest consumed it)"),
    }
    println!("\ninjecting:");
    let report = match domain.inject(&error, scenario.consumer, &mut cpus) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("injection refused: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Pushed on the injection path, drained by the hypervisor when it likes (here, at once).
    let events = EventQueue::<8>::new();
    events.push_injection(Some(DOMAIN_ID), &report, &error);
    for event in events.drain() {
        println!("event: {event}");
    }

    println!("\nwhat each vCPU sees on its next VM entry:");
    for (id, vcpu) in domain.vcpus().iter().enumerate() {
        if vcpu.take_pending() {
            println!(
                "  vCPU {id}: #MC (vector 18), {}",
                guest_handler(vcpu, scenario.profile.vendor())
            );
        } else if !cpus.up[id] {
            println!("  vCPU {id}: not up, skipped (no shutdown)");
        } else {
            println!("  vCPU {id}: nothing, runs on");
        }
    }
    ExitCode::SUCCESS
}
