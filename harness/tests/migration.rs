//! Live migration between two QEMU machines, with a real machine check raised in the middle
//! of it.
//!
//! The source machine (`scenario=migrate-source`, `-smp 4`, Intel) runs its guests; the
//! harness drives it through the migration channel (COM2 on a socket chardev, protocol in
//! `kernel/src/migration.rs`): a pre-copy save while the guests run, `stop` (every vCPU
//! parked: stop-and-copy), then a real host machine check through QEMU's monitor, which the
//! kernel reflects into the stopped domain: pending #MCs, `MCIP` and bank 1 are in flight,
//! the frame is on the broken list. The final save carries them; the harness takes the
//! record stream to a second machine (`scenario=migrate-dest`), which restores it before any
//! guest runs. Machines run one after the other (the harness's machine lock).

use vmce::record::native::{self, NativeRecord, NativeVersion};
use vmce::record::xen::{self, XenRelease};
use vmce::record::{LossPolicy, RecordError, SavedDomain, StateFields};
use vmce::{BrokenFrames, GuestFrame, Profile};
use vmce_qemu_harness::channel::RecordStream;
use vmce_qemu_harness::{
    BootArgs, ExitCode, GUEST_ADDR, HOST_ADDR, INTEL_CPU, Injection, Qemu, Scenario, data_line,
};
use vmce_qemu_protocol::migration::{FINAL, PRECOPY, RESUME, RecordFormat, STOP};

/// The guest frame of [`HOST_ADDR`].
const GUEST_FRAME: u64 = 0x123;
const CPUS: u32 = 4;

/// The source's `MC1_CTL2` for `vcpu`: CMCI enabled, threshold `vcpu + 1`.
fn source_ctl2(vcpu: u32) -> u64 {
    0x4000_0000 | u64::from(vcpu + 1)
}

/// Boots the source, takes a pre-copy save while the guests run, stops the domain, raises
/// `injection` (data on `data_vcpu`) and waits until vmce has it in flight. Returns the
/// running source and the pre-copy stream.
fn source_stopped_with_error_in_flight(
    precopy_format: RecordFormat,
    injection: Injection,
    data_vcpu: u32,
) -> (Qemu, RecordStream) {
    let mut source = Qemu::start_on(Scenario::MigrateSource, CPUS, INTEL_CPU);
    source.wait_until_ready(4);
    source.wait_for_line("MIG source: listening on the migration channel");
    source.send_migration_line(&format!("{PRECOPY} {precopy_format}"));
    let precopy = source.receive_record_stream();
    source.send_migration_line(STOP);
    source.wait_for_migration_line("STOPPED vcpus=4");
    for vcpu in 0..CPUS {
        source.wait_for_line(&format!("HV vcpu {vcpu} paused"));
    }
    source.inject_mce(&injection);
    source.wait_for_line(&format!(
        "HV injected: broadcast to every vCPU, data on vCPU {data_vcpu}, delivered=4 shutdown=0"
    ));
    (source, precopy)
}

/// Runs a source through pre-copy (native V2), stop-and-copy with an SRAO in flight, and a
/// successful final save; returns the pre-copy and final streams.
fn migrate_out_with_srao_in_flight() -> (RecordStream, RecordStream) {
    let (mut source, precopy) = source_stopped_with_error_in_flight(
        RecordFormat::NativeV2,
        Injection::srao(1, HOST_ADDR),
        0,
    );
    source.send_migration_line(&format!("{FINAL} {}", RecordFormat::NativeV2));
    let last = source.receive_record_stream();
    source.wait_for_line("MIG source: final records sent: the domain now lives on the destination");
    source.expect_exit(ExitCode::Success);
    for vcpu in 0..CPUS {
        source.wait_for_line(&format!(
            "MIG final: saved vCPU {vcpu}: MCG_STATUS=0x5 MC1_STATUS={:#x} MC1_ADDR={:#x} MC1_MISC={:#x} MC1_CTL2={:#x} pending=yes",
            if vcpu == 0 { 0xBD00_0000_0000_00CF_u64 } else { 0 },
            if vcpu == 0 { GUEST_ADDR } else { 0 },
            if vcpu == 0 { 0x86 } else { 0 },
            source_ctl2(vcpu)
        ));
    }
    source.wait_for_line("MIG final: saved domain: profile Intel, 4 vCPUs, broken frames [0x123]");
    assert!(
        source.lines_containing(" MC mcg_status=").is_empty(),
        "no guest took the machine check on the source: it was in flight"
    );
    (precopy, last)
}

/// Decodes a native stream on the host with vmce, as the destination will.
fn decode_native(stream: &RecordStream) -> (Vec<vmce::record::SavedVcpu>, Option<SavedDomain>) {
    let mut vcpus = Vec::new();
    let mut domain = None;
    for record in stream.records() {
        let (decoded, used) =
            native::decode(&record, Profile::Intel, CPUS, NativeVersion::V2).expect("valid record");
        assert_eq!(used, record.len());
        match decoded {
            NativeRecord::Vcpu(saved) => vcpus.push(saved),
            NativeRecord::Domain(saved) => domain = Some(saved),
        }
    }
    (vcpus, domain)
}

/// Boots the destination, sends it `stream`, and waits for the restore.
fn destination_restoring(stream: &RecordStream, touch: u64) -> Qemu {
    let mut destination = Qemu::start_on(
        BootArgs::new(Scenario::MigrateDest).touch(touch),
        CPUS,
        INTEL_CPU,
    );
    destination.wait_for_line("MIG destination: waiting for the record stream");
    destination.send_record_stream(stream);
    destination.wait_for_migration_line(&format!("RESTORED records={}", stream.records().len()));
    destination
}

/// The whole story: an SRAO found by the patrol scrubber while the domain is stopped for the
/// final copy is carried by the native V2 records and delivered on the destination exactly as
/// it would have been on the source; the broken frame stays unmapped there, and the guest's
/// next access to it is a fresh action-required machine check on the accessing vCPU.
#[test]
fn an_error_raised_during_stop_and_copy_is_delivered_on_the_destination() {
    let (_, last) = migrate_out_with_srao_in_flight();
    assert_eq!(last.begin(), "BEGIN final format=native-v2 vcpus=4");
    assert_eq!(last.end(), "END records=5");
    let (vcpus, domain) = decode_native(&last);
    assert!(vcpus.iter().all(|saved| saved.snapshot.pending));
    let [_, bank1] = vcpus[0].snapshot.state.banks;
    assert_eq!(bank1.addr, GUEST_ADDR, "bank 1 in flight, guest address");
    let domain = domain.expect("a domain record");
    assert!(domain.broken_frames.contains(GuestFrame(GUEST_FRAME)));

    let mut destination = destination_restoring(&last, GUEST_ADDR);
    destination.wait_for_line("MIG destination: BEGIN final format=native-v2 vcpus=4");
    destination.wait_for_line(
        "MIG restore: record for vCPU 0: MCG_STATUS=0x5 MC1_STATUS=0xbd000000000000cf MC1_ADDR=0x123abc \
         MC1_MISC=0x86 MC1_CTL2=0x40000001 pending=yes",
    );
    destination
        .wait_for_line("MIG restore: domain record: profile Intel, 4 vCPUs, broken frames [0x123]");
    destination.wait_for_line(
        "MIG destination: guest frame 0x123 is broken: kept unmapped (host 0x4123000)",
    );
    // Every vCPU takes the #MC that was pending; vCPU 0 has the data (MSCOD cleared,
    // translated address); the rendezvous completes and the guest clears MCIP.
    destination.wait_for_line(&data_line(0, 0x5, 0xBD00_0000_0000_00CF, GUEST_ADDR, 0x86));
    for vcpu in 1..CPUS {
        destination.wait_for_line(&format!("VCPU {vcpu} MC mcg_status=0x5 no-bank"));
    }
    destination.assert_rendezvous(CPUS, 1);
    for vcpu in 0..CPUS {
        destination.wait_for_line(&format!(
            "VCPU {vcpu} RESUMED machine_checks=1 mcg_status=0x0 mc1_ctl2={:#x}",
            source_ctl2(vcpu)
        ));
    }
    // The last vCPU touches the broken frame: a fresh action-required error, with the data on
    // the accessing vCPU (AR, EIPV), the others signalled.
    destination.wait_for_line("VCPU 3 TOUCH reading guest 0x123abc");
    destination.wait_for_line(
        "HV vcpu 3 faulted on host 0x4123abc = guest 0x123abc: frame 0x123 is broken, \
         raising an action-required machine check (data load)",
    );
    destination.wait_for_line(
        "HV injected: broadcast to every vCPU, data on vCPU 3, delivered=4 shutdown=0",
    );
    destination.wait_for_line(&data_line(3, 0x7, 0xBD80_0000_0000_0134, GUEST_ADDR, 0x8C));
    destination.assert_rendezvous(CPUS, 2);
    destination.wait_for_line("VCPU 3 MC action required: resuming at the recovery point");
    destination.wait_for_line("VCPU 3 TOUCH machine check: read abandoned");
    destination.expect_done();
    assert_eq!(
        destination.lines_containing(" bank1 status=").len(),
        2,
        "the data once per machine check: the migrated one on vCPU 0, the fresh one on vCPU 3"
    );
}

/// The pre-copy records were taken before the error: they carry none of it. A destination
/// restored from them alone never takes the machine check and reads the broken frame as if
/// nothing had happened. The final save is what keeps the error.
#[test]
fn the_pre_copy_records_alone_would_lose_the_error() {
    let (precopy, last) = migrate_out_with_srao_in_flight();
    assert_eq!(precopy.begin(), "BEGIN precopy format=native-v2 vcpus=4");
    let (vcpus, domain) = decode_native(&precopy);
    assert_eq!(vcpus.len(), 4);
    for saved in &vcpus {
        assert!(!saved.snapshot.pending, "no #MC pending before the error");
        assert!(saved.snapshot.state.mcg_status.is_empty());
        assert_eq!(
            saved.snapshot.state.mci_ctl2[1].bits(),
            source_ctl2(saved.id.0),
            "the registers the guest set are carried"
        );
    }
    assert!(domain.expect("a domain record").broken_frames.is_empty());
    assert_ne!(precopy.records(), last.records());

    let mut destination = destination_restoring(&precopy, GUEST_ADDR);
    for vcpu in 0..CPUS {
        destination.wait_for_line(&format!(
            "VCPU {vcpu} RESUMED machine_checks=0 mcg_status=0x0 mc1_ctl2={:#x}",
            source_ctl2(vcpu)
        ));
    }
    destination.wait_for_line("VCPU 3 TOUCH read ok value=0x0: no machine check");
    destination.expect_done();
    assert!(destination.lines_containing(" MC ").is_empty());
    assert!(destination.lines_containing("kept unmapped").is_empty());
}

/// A destination that only reads Xen 4.10's layout or native V1 cannot receive an error in
/// flight: the source's final save refuses, loudly and per record, with vmce's reason,
/// instead of dropping it. The migration is abandoned, and the error is delivered on the
/// source. The same format saved fine before the error.
#[test]
fn a_destination_format_that_cannot_carry_the_error_refuses_the_final_save() {
    let (mut source, precopy) = source_stopped_with_error_in_flight(
        RecordFormat::Xen4_10,
        Injection::srar(2, HOST_ADDR),
        2,
    );
    assert_eq!(
        precopy.end(),
        "END records=4",
        "Xen layout: one record per vCPU"
    );
    for (vcpu, record) in (0u32..).zip(precopy.records()) {
        let (saved, _, _) = xen::decode(&record, Profile::Intel, CPUS, XenRelease::Xen4_10)
            .expect("a valid VMCE_VCPU record");
        assert_eq!(saved.id.0, vcpu);
        assert_eq!(saved.snapshot.state.mci_ctl2[1].bits(), source_ctl2(vcpu));
    }

    // vmce's own words for each refusal.
    let refused = |fields: StateFields| RecordError::WouldLose { fields }.to_string();
    let signal_only = StateFields::MCG_STATUS | StateFields::PENDING;
    let with_data = signal_only | StateFields::BANK1;
    assert!(refused(with_data).contains("cannot carry MCG_STATUS, bank 1, the pending #MC"));
    for format in [RecordFormat::Xen4_10, RecordFormat::NativeV1] {
        source.send_migration_line(&format!("{FINAL} {format}"));
        let stream = source.receive_record_stream();
        assert_eq!(
            stream.begin(),
            format!("BEGIN final format={format} vcpus=4")
        );
        assert_eq!(stream.end(), "END refused=5");
        assert!(stream.records().is_empty(), "nothing sent: {stream:?}");
        let mut expected: Vec<String> = (0..CPUS)
            .map(|vcpu| {
                let fields = if vcpu == 2 { with_data } else { signal_only };
                format!("vCPU {vcpu}: {}", refused(fields))
            })
            .collect();
        expected.push(format!("domain: {}", refused(StateFields::BROKEN_FRAMES)));
        assert_eq!(stream.refusals(), expected, "{format}");
        source.wait_for_line(&format!(
            "MIG final: {format} refused for vCPU 2: {}",
            refused(with_data)
        ));
    }
    source.wait_for_line("MIG source: final save refused: the domain stays paused here");

    // Abandoned: the error was never lost, the guests take it here.
    source.send_migration_line(RESUME);
    source.wait_for_migration_line("RESUMED");
    source.wait_for_line(&data_line(2, 0x7, 0xBD80_0000_0000_0134, GUEST_ADDR, 0x86));
    for vcpu in [0, 1, 3] {
        source.wait_for_line(&format!("VCPU {vcpu} MC mcg_status=0x5 no-bank"));
    }
    source.assert_rendezvous(CPUS, 1);
    source.expect_done();
}

/// Records come over the wire: a destination checks them against itself. Records of a
/// 4-vCPU domain (made on the host with vmce) do not restore into a 2-vCPU destination,
/// which says why and never runs a guest.
#[test]
fn a_destination_refuses_records_of_another_domain() {
    let saved: SavedDomain = SavedDomain {
        profile: Profile::Intel,
        vcpus: 4,
        broken_frames: BrokenFrames::new(),
    };
    let mut buffer = [0u8; native::MAX_DOMAIN_RECORD_BYTES];
    let encoding =
        native::encode_domain(&saved, NativeVersion::V2, LossPolicy::Refuse, &mut buffer)
            .expect("encodes");
    let stream = RecordStream::from_records(
        "final format=native-v2 vcpus=4",
        &[buffer[..encoding.len].to_vec()],
    );
    let mut destination = Qemu::start_on(Scenario::MigrateDest, 2, INTEL_CPU);
    destination.wait_for_line("MIG destination: waiting for the record stream");
    destination.send_record_stream(&stream);
    destination
        .wait_for_migration_line("FAILED record 0: saved domain has 4 vCPUs, the destination 2");
    destination.wait_for_line("KERNEL PANIC cpu=0: panicked at");
    destination.expect_exit(ExitCode::KernelFailure);
    assert!(destination.lines_containing("READY").is_empty());
}
