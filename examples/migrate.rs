//! A live migration with a host memory error arriving between pre-copy and stop-and-copy.
//!
//! ```text
//! cargo run --example migrate             # native V2 destination: the error arrives
//! cargo run --example migrate -- xen-4.10 # a Xen 4.10 destination: the save is refused
//! cargo run --example migrate -- v1       # an older vmce (native V1): refused too
//! ```
//!
//! Both hosts are simulated at the MSR boundary; the records are the real bytes a toolstack
//! would send.

use std::process::ExitCode;
use vmce::host::{HostCapabilities, SimulatedHost, collect, release};
use vmce::record::native::{self, NativeRecord, NativeVersion};
use vmce::record::xen::{self, XenRelease};
use vmce::record::{Encoding, LossPolicy, RecordError, SavedVcpu, StateFields};
use vmce::registers::McgCap;
use vmce::{
    Access, Domain, Event, GuestCpus, GuestFrame, GuestMce, GuestMemory, GuestPhysAddr, HostFrame,
    Profile, RdmsrOutcome, Vcpu, VcpuId, VcpuOutcome, Vendor,
};

const VCPUS: u32 = 4;
/// The hypervisor's id for "web-1" on each host, carried by its events.
const SOURCE_ID: u32 = 1;
const DESTINATION_ID: u32 = 2;
const GUEST_RAM_HOST_FRAME: u64 = 0x4000;

struct P2m;
impl GuestMemory for P2m {
    fn guest_frame(&self, host: HostFrame) -> Option<GuestFrame> {
        host.0.checked_sub(GUEST_RAM_HOST_FRAME).map(GuestFrame)
    }
}

struct Cpus;
impl GuestCpus for Cpus {
    fn is_up(&self, _: VcpuId) -> bool {
        true
    }
    fn machine_check_enabled(&self, _: VcpuId) -> bool {
        true
    }
    fn notify(&mut self, vcpu: VcpuId, outcome: VcpuOutcome) {
        println!("    {vcpu}: {outcome}");
    }
}

#[derive(Clone, Copy)]
enum Destination {
    Native(NativeVersion),
    Xen(XenRelease),
}

fn domain(host: &HostCapabilities) -> Domain<Vec<Vcpu>> {
    let vcpus = (0..VCPUS).map(|_| Vcpu::new(Profile::Intel)).collect();
    Domain::new(Profile::Intel, host, vcpus).expect("the host backs the Intel profile")
}

/// Every record of one save, as bytes on the wire; a refusal names everything that would be
/// lost, across all records.
fn save(domain: &Domain<Vec<Vcpu>>, to: Destination) -> Result<Vec<Vec<u8>>, RecordError> {
    let mut records = Vec::new();
    let mut lost = StateFields::empty();
    let mut buffer = [0u8; native::MAX_DOMAIN_RECORD_BYTES];
    let mut keep = |result: Result<Encoding, RecordError>, buffer: &[u8]| match result {
        Ok(encoding) if encoding.len > 0 => {
            records.push(buffer[..encoding.len].to_vec());
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(RecordError::WouldLose { fields }) => {
            lost |= fields;
            Ok(())
        }
        Err(error) => Err(error),
    };
    let version = match to {
        Destination::Native(version) => version,
        Destination::Xen(_) => NativeVersion::V1, // Xen has no domain record
    };
    // One consistent cut: no injection lands between two of these records.
    let save = domain.save();
    let result = native::encode_domain(&save.domain(), version, LossPolicy::Refuse, &mut buffer);
    keep(result, &buffer)?;
    for saved in save.vcpus() {
        let result = match to {
            Destination::Native(version) => {
                native::encode_vcpu(&saved, version, LossPolicy::Refuse, &mut buffer)
            }
            Destination::Xen(release) => {
                xen::encode(&saved, release, LossPolicy::Refuse, &mut buffer)
            }
        };
        keep(result, &buffer)?;
    }
    if lost.is_empty() {
        Ok(records)
    } else {
        Err(RecordError::WouldLose { fields: lost })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn main() -> ExitCode {
    let to = match std::env::args().nth(1).as_deref() {
        None | Some("v2") => Destination::Native(NativeVersion::V2),
        Some("v1") => Destination::Native(NativeVersion::V1),
        Some("xen-4.10") => Destination::Xen(XenRelease::Xen4_10),
        Some(other) => {
            eprintln!("unknown destination {other:?}; try v2, v1 or xen-4.10");
            return ExitCode::FAILURE;
        }
    };
    let host = HostCapabilities::new(Vendor::Intel, McgCap::from_bits_retain(0x0F00_0C14));
    let source = domain(&host);
    println!("== live migration of \"web-1\" (Intel profile, {VCPUS} vCPUs)");

    let precopy = save(&source, to).map(|records| records.len());
    println!("1. pre-copy save: {precopy:?} records (no machine check yet)");

    println!("2. while memory is copied, the host's patrol scrubber finds a bad line:");
    let mut msrs = SimulatedHost::new(host);
    let host_addr = ((GUEST_RAM_HOST_FRAME + 0x123) << 12) | 0xABC;
    msrs.raise(7, 0xBD00_0000_0040_00CF, 0x5, host_addr, 0x86);
    let event = collect(&mut msrs, &host);
    release(&mut msrs, &event);
    let Some((bank, _)) = event.most_severe(&host) else {
        return ExitCode::FAILURE;
    };
    let error = GuestMce::from_host(&host, event.mcg_status, &bank, &P2m).expect("reflectable");
    let report = source.inject(&error, None, &mut Cpus).expect("vCPUs exist");
    println!(
        "   {}",
        Event::from_report(Some(SOURCE_ID), &report, &error)
    );
    println!(
        "   {}: {} vCPUs have a #MC pending; the vCPUs are paused before taking it",
        report.broken_frame, report.delivered
    );

    print!("3. stop-and-copy save for ");
    match to {
        Destination::Native(version) => println!("{version}:"),
        Destination::Xen(release) => println!("{release}:"),
    }
    let records = match save(&source, to) {
        Ok(records) => records,
        Err(error) => {
            println!(
                "   REFUSED: {}",
                Event::record_refused(Some(SOURCE_ID), None, error)
            );
            println!(
                "   the migration is aborted and the guest resumes on the source, where it takes the #MC"
            );
            return ExitCode::SUCCESS;
        }
    };
    for bytes in &records {
        println!("   {} bytes: {}", bytes.len(), hex(bytes));
    }

    println!("4. restore on the destination:");
    let destination = domain(&host);
    let mut vcpus: Vec<SavedVcpu> = Vec::new();
    let mut domain_record = None;
    for bytes in &records {
        let loaded = match to {
            Destination::Native(version) => {
                native::decode(bytes, Profile::Intel, VCPUS, version).map(|(record, _)| record)
            }
            Destination::Xen(release) => xen::decode(bytes, Profile::Intel, VCPUS, release)
                .map(|(saved, _, _)| NativeRecord::Vcpu(saved)),
        };
        match loaded {
            Ok(NativeRecord::Domain(saved)) => {
                let frames: Vec<_> = saved
                    .broken_frames
                    .iter()
                    .map(|frame| format!("{:#x}", frame.0))
                    .collect();
                println!(
                    "   broken guest frames handed to the toolstack (keep them unmapped): {}",
                    frames.join(", ")
                );
                domain_record = Some(saved);
            }
            Ok(NativeRecord::Vcpu(saved)) => vcpus.push(saved),
            Err(error) => {
                println!(
                    "   refused: {}",
                    Event::record_refused(Some(DESTINATION_ID), None, error)
                );
                return ExitCode::FAILURE;
            }
        }
    }
    // All or nothing: the domain record and every vCPU, checked before anything changes.
    if let Err(error) = destination.restore(domain_record.as_ref(), &vcpus) {
        println!(
            "   refused: {}",
            Event::record_refused(Some(DESTINATION_ID), None, error.into())
        );
        return ExitCode::FAILURE;
    }
    let read = |vcpu: &Vcpu, msr| match vcpu.rdmsr(msr) {
        RdmsrOutcome::Handled(value) => value,
        _ => 0,
    };
    for (id, vcpu) in destination.vcpus().iter().enumerate() {
        println!(
            "   vCPU {id}: #MC pending {}, MCG_STATUS {:#x}, MC1_STATUS {:#018x}, MC1_ADDR {:#x}",
            vcpu.take_pending(),
            read(vcpu, 0x17A),
            read(vcpu, 0x405),
            read(vcpu, 0x406)
        );
        vcpu.wrmsr(0x405, 0); // the guest's handler records and clears the bank
        vcpu.wrmsr(0x17A, 0); // and clears MCIP
    }

    println!(
        "5. later, vCPU 3 touches the broken frame (the toolstack's fault handler calls vmce):"
    );
    let addr = GuestPhysAddr(0x0012_3040);
    match destination.inject_broken_access(addr, Access::DataLoad, VcpuId(3), &mut Cpus) {
        Ok(report) => println!(
            "   action-required #MC ({report}): MC1_STATUS {:#018x}, MC1_ADDR {:#x}",
            read(&destination.vcpus()[3], 0x405),
            read(&destination.vcpus()[3], 0x406)
        ),
        Err(error) => println!("   {error}"),
    }
    ExitCode::SUCCESS
}
