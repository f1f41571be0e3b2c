//! Machine-check events (`vmce::events`): the line each decision prints, the postcard
//! round trip, and the queue's dropped counter, alone and under concurrent fill and drain.
//! One test binary (`cargo test --test events`).

use vmce::classify::Disposition;
use vmce::events::{Action, Recipient};
use vmce::host::{HostCapabilities, SimulatedHost, collect, release};
use vmce::record::xen::{self, XenRelease};
use vmce::record::{Encoding, LossPolicy, RecordError, StateFields};
use vmce::registers::{McgCap, McgStatus};
use vmce::{
    Domain, Event, EventQueue, GuestCpus, GuestFrame, GuestMce, GuestMemory, HostFrame, Profile,
    Vcpu, VcpuId, Vendor,
};

/// Guest frame g is host frame 0x4000 + g.
struct P2m;
impl GuestMemory for P2m {
    fn guest_frame(&self, host: HostFrame) -> Option<GuestFrame> {
        host.0.checked_sub(0x4000).map(GuestFrame)
    }
}

/// vCPUs 0..`up` are up; `mce_clear` has CR4.MCE clear.
struct Cpus {
    up: u32,
    mce_clear: Option<u32>,
}
impl GuestCpus for Cpus {
    fn is_up(&self, vcpu: VcpuId) -> bool {
        vcpu.0 < self.up
    }
    fn machine_check_enabled(&self, vcpu: VcpuId) -> bool {
        Some(vcpu.0) != self.mce_clear
    }
}

fn intel_host() -> HostCapabilities {
    HostCapabilities::new(Vendor::Intel, McgCap::from_bits_retain(0x0100_0C0A))
}

/// Raises `status` at host address 0x0412_3040 in host bank 1 and returns the verdict.
fn host_error(status: u64, mcg_status: u64) -> (vmce::host::HostBank, Disposition) {
    let host = intel_host();
    let mut msrs = SimulatedHost::new(host);
    msrs.raise(1, status, mcg_status, 0x0412_3040, 0x86);
    let event = collect(&mut msrs, &host);
    release(&mut msrs, &event);
    event.most_severe(&host).expect("a valid bank")
}

/// Injects an SRAO scrub error into a 4-vCPU Intel domain with `cpus`; returns its events.
fn srao_events(cpus: &mut Cpus) -> Vec<Event> {
    let host = intel_host();
    let domain = Domain::new(
        Profile::Intel,
        &host,
        [(); 4].map(|()| Vcpu::new(Profile::Intel)),
    )
    .unwrap();
    let (bank, disposition) = host_error(0xBD00_0000_0000_00C0, 0x5);
    let Disposition::Reflect(class) = disposition else {
        panic!("SRAO must reflect: {disposition}");
    };
    let error =
        GuestMce::from_classified(class, McgStatus::from_bits_retain(0x5), &bank, &P2m).unwrap();
    let report = domain.inject(&error, None, cpus).unwrap();
    let queue = EventQueue::<8>::new();
    queue.push_injection(Some(7), &report, &error);
    queue.drain().collect()
}

#[test]
fn reflected_broadcast_prints_one_line_with_every_outcome() {
    let events = srao_events(&mut Cpus {
        up: 3,
        mce_clear: None,
    });
    let lines: Vec<String> = events.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "vmce: reflected domain=7 class=srao-memory-scrub STATUS bd000000000000c0 MCGSTATUS 5 \
             ADDR 4123040 GADDR 123040 MISC 86 mode=broadcast data=vcpu0 mcip-ripv=2 skipped=1 \
             shutdown=0 recipient=guest action=inject flags=none"
        ]
    );
}

#[test]
fn a_vcpu_that_cannot_take_it_adds_a_shutdown_event_and_action_reset() {
    let events = srao_events(&mut Cpus {
        up: 4,
        mce_clear: Some(2),
    });
    let lines: Vec<String> = events.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "vmce: reflected domain=7 class=srao-memory-scrub STATUS bd000000000000c0 MCGSTATUS 5 \
             ADDR 4123040 GADDR 123040 MISC 86 mode=broadcast data=vcpu0 mcip-ripv=2 skipped=0 \
             shutdown=1 first-shutdown=vcpu2:cr4-mce-clear recipient=guest action=reset flags=none",
            "vmce: shutdown domain=7 vcpu=2 cause=cr4-mce-clear vcpus=1 recipient=guest \
             action=reset flags=none",
        ]
    );
}

#[test]
fn srar_without_consumer_prints_the_downgrade_and_is_action_optional() {
    let host = intel_host();
    let domain = Domain::new(
        Profile::Intel,
        &host,
        [Vcpu::new(Profile::Intel), Vcpu::new(Profile::Intel)],
    )
    .unwrap();
    let (bank, disposition) = host_error(0xBD80_0000_0000_0134, 0x7);
    let Disposition::Reflect(class) = disposition else {
        panic!("SRAR must reflect: {disposition}");
    };
    let error =
        GuestMce::from_classified(class, McgStatus::from_bits_retain(0x7), &bank, &P2m).unwrap();
    let report = domain
        .inject(
            &error,
            None,
            &mut Cpus {
                up: 2,
                mce_clear: None,
            },
        )
        .unwrap();
    let event = Event::from_report(None, &report, &error);
    assert_eq!(
        event.to_string(),
        "vmce: reflected class=srar-data-load STATUS bd80000000000134 MCGSTATUS 7 ADDR 4123040 \
         GADDR 123040 MISC 86 mode=broadcast data=vcpu0 mcip-ripv=1 skipped=0 shutdown=0 \
         downgraded=no-consumer recipient=guest action=inject flags=none"
    );
    // The same error consumed by vCPU 1 stays action-required.
    let report = domain.inject(
        &error,
        Some(VcpuId(1)),
        &mut Cpus {
            up: 2,
            mce_clear: None,
        },
    );
    // vCPU 0 and 1 still have MCIP from the first one: both shut down, recursively.
    let event = Event::from_report(None, &report.unwrap(), &error);
    let failure = event.memory_failure().unwrap();
    assert_eq!(
        (failure.recipient, failure.action),
        (Recipient::Guest, Action::Reset)
    );
    assert!(
        failure.flags.action_required && failure.flags.recursive,
        "{event}"
    );
}

#[test]
fn not_reflected_prints_why_and_who_keeps_it() {
    let (bank, disposition) = host_error(0xBC20_0000_8000_0136, 0x5);
    let Disposition::HostOnly(reason) = disposition else {
        panic!("UCNA stays with the host: {disposition}");
    };
    let event = Event::not_reflected(Some(3), &bank, vmce::NotReflected::HostOnly(reason));
    assert_eq!(
        event.to_string(),
        "vmce: not-reflected domain=3 BANK 1 STATUS bc20000080000136 ADDR 4123040 MISC 86 \
         why=ucna recipient=hypervisor action=ignore flags=none"
    );
    let (bank, disposition) = host_error(0xBF80_0000_0000_0134, 0x7);
    let Disposition::Fatal(reason) = disposition else {
        panic!("PCC is fatal: {disposition}");
    };
    let event = Event::not_reflected(None, &bank, vmce::NotReflected::Fatal(reason));
    assert_eq!(
        event.to_string(),
        "vmce: not-reflected BANK 1 STATUS bf80000000000134 ADDR 4123040 MISC 86 why=fatal-pcc \
         recipient=hypervisor action=fatal flags=action-required"
    );
    // An SRAO error in a host frame the domain does not own.
    let (srao, _) = host_error(0xBD00_0000_0000_00C0, 0x5);
    let elsewhere = vmce::host::HostBank {
        addr: 0x1040,
        ..srao
    };
    let why = GuestMce::from_host(
        &intel_host(),
        McgStatus::from_bits_retain(0x5),
        &elsewhere,
        &P2m,
    )
    .unwrap_err();
    let event = Event::not_reflected(Some(3), &elsewhere, why);
    assert_eq!(
        event.to_string(),
        "vmce: not-reflected domain=3 BANK 1 STATUS bd000000000000c0 ADDR 1040 MISC 86 \
         why=not-owned hframe=1 recipient=hypervisor action=ignore flags=none"
    );
}

/// Real saves of an Intel vCPU whose guest set `CMCI_EN`: Xen 4.2's layout has no
/// `MCi_CTL2`, so a lossy save drops it; Xen 4.10's carries it.
fn xen_4_2_save_of_cmci_en() -> (Encoding, Encoding) {
    let domain = Domain::new(Profile::Intel, &intel_host(), [Vcpu::new(Profile::Intel)]).unwrap();
    assert_eq!(
        domain.vcpus()[0].wrmsr(0x281, 0x4000_0001),
        vmce::WrmsrOutcome::Handled
    );
    let saved = domain.save().vcpu(VcpuId(0)).unwrap();
    let mut out = [0u8; xen::MAX_RECORD_BYTES];
    let lossy = xen::encode(&saved, XenRelease::Xen4_2, LossPolicy::Allow, &mut out).unwrap();
    let whole = xen::encode(&saved, XenRelease::Xen4_10, LossPolicy::Allow, &mut out).unwrap();
    (lossy, whole)
}

#[test]
fn record_events_say_what_was_refused_or_dropped() {
    let refused = Event::record_refused(
        Some(4),
        Some(VcpuId(1)),
        RecordError::BufferTooSmall { needed: 40 },
    );
    assert_eq!(
        refused.to_string(),
        "vmce: record-refused domain=4 vcpu=1 why=buffer-too-small needed=40"
    );
    assert!(refused.memory_failure().is_none());
    let (lossy, whole) = xen_4_2_save_of_cmci_en();
    assert_eq!(lossy.dropped, StateFields::MCI_CTL2);
    let event = Event::record_saved_lossily(Some(4), Some(VcpuId(0)), &lossy).unwrap();
    assert_eq!(
        event.to_string(),
        "vmce: record-lossy domain=4 vcpu=0 dropped=\"MCi_CTL2\""
    );
    assert_eq!(Event::record_saved_lossily(Some(4), None, &whole), None);
}

#[test]
fn every_event_round_trips_through_postcard() {
    let mut events = srao_events(&mut Cpus {
        up: 4,
        mce_clear: Some(3),
    });
    let (bank, disposition) = host_error(0xBC20_0000_8000_0136, 0x5);
    let Disposition::HostOnly(reason) = disposition else {
        panic!()
    };
    events.push(Event::not_reflected(
        Some(1),
        &bank,
        vmce::NotReflected::HostOnly(reason),
    ));
    events.push(Event::record_refused(
        None,
        None,
        RecordError::WouldLose {
            fields: StateFields::PENDING,
        },
    ));
    events.push(
        Event::record_saved_lossily(None, Some(VcpuId(9)), &xen_4_2_save_of_cmci_en().0).unwrap(),
    );
    assert_eq!(events.len(), 5);
    for event in events {
        let mut buffer = [0u8; 128];
        let bytes = postcard::to_slice(&event, &mut buffer).unwrap();
        let back: Event = postcard::from_bytes(bytes).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.to_string(), event.to_string());
    }
}

fn numbered(producer: u32, sequence: u64) -> Event {
    Event::record_refused(
        Some(producer),
        None,
        RecordError::BufferTooSmall {
            needed: usize::try_from(sequence).unwrap(),
        },
    )
}

fn number(event: &Event) -> (u32, u64) {
    match event {
        Event::RecordRefused(record) => {
            let Some(producer) = record.domain else {
                panic!("{event}")
            };
            match record.detail {
                vmce::events::RecordRefusal::BufferTooSmall { needed } => (producer, needed),
                other => panic!("{other}"),
            }
        }
        other => panic!("{other}"),
    }
}

#[test]
fn a_full_queue_counts_what_it_drops_and_keeps_the_oldest() {
    let queue = EventQueue::<4>::new();
    let pushed: Vec<bool> = (0..6).map(|n| queue.push(numbered(0, n))).collect();
    assert_eq!(pushed, [true, true, true, true, false, false]);
    assert_eq!(queue.dropped(), 2);
    let kept: Vec<u64> = queue.drain().map(|event| number(&event).1).collect();
    assert_eq!(kept, [0, 1, 2, 3]);
    assert_eq!(queue.take_dropped(), 2);
    assert_eq!(queue.dropped(), 0);
    assert!(queue.push(numbered(0, 6)));
    assert_eq!(queue.pop().map(|event| number(&event)), Some((0, 6)));
}

/// Four producers push while two consumers drain a small queue: every event is either
/// received exactly once or counted as dropped, and each producer's events arrive in order.
#[test]
fn concurrent_fill_and_drain_lose_nothing_silently() {
    const PRODUCERS: u32 = 4;
    const EACH: u64 = 20_000;
    let queue = EventQueue::<8>::new();
    let done = std::sync::atomic::AtomicU32::new(0);
    let received: Vec<Vec<(u32, u64)>> = std::thread::scope(|scope| {
        for producer in 0..PRODUCERS {
            let (queue, done) = (&queue, &done);
            scope.spawn(move || {
                for sequence in 0..EACH {
                    queue.push(numbered(producer, sequence));
                }
                done.fetch_add(1, std::sync::atomic::Ordering::Release);
            });
        }
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let (queue, done) = (&queue, &done);
                scope.spawn(move || {
                    let mut got = Vec::new();
                    loop {
                        let finished = done.load(std::sync::atomic::Ordering::Acquire) == PRODUCERS;
                        match queue.pop() {
                            Some(event) => got.push(number(&event)),
                            None if finished => break,
                            None => std::thread::yield_now(),
                        }
                    }
                    got
                })
            })
            .collect();
        consumers.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let mut per_producer = vec![Vec::new(); PRODUCERS as usize];
    for got in &received {
        let mut last = vec![None; PRODUCERS as usize];
        for &(producer, sequence) in got {
            // One consumer sees each producer's events in the order they were pushed.
            let previous = last[producer as usize].replace(sequence);
            assert!(
                previous < Some(sequence),
                "producer {producer}: {previous:?} then {sequence}"
            );
            per_producer[producer as usize].push(sequence);
        }
    }
    let total: u64 = per_producer.iter().map(|s| s.len() as u64).sum();
    assert_eq!(total + queue.dropped(), u64::from(PRODUCERS) * EACH);
    for sequences in &mut per_producer {
        let count = sequences.len();
        sequences.sort_unstable();
        sequences.dedup();
        assert_eq!(sequences.len(), count, "an event was received twice");
    }
    assert!(total > 0);
}

#[test]
fn a_full_ring_counts_what_it_drops_and_keeps_the_oldest() {
    let mut ring = vmce::EventRing::<4>::new();
    assert_eq!(ring.capacity(), 3);
    let (mut producer, mut consumer) = ring.split();
    let pushed: Vec<bool> = (0..5).map(|n| producer.push(numbered(0, n))).collect();
    assert_eq!(pushed, [true, true, true, false, false]);
    assert_eq!(consumer.dropped(), 2);
    let kept: Vec<u64> = consumer.drain().map(|event| number(&event).1).collect();
    assert_eq!(kept, [0, 1, 2]);
    assert_eq!(consumer.take_dropped(), 2);
    assert_eq!(consumer.take_dropped(), 0);
    assert!(producer.push(numbered(0, 5)));
    assert_eq!(consumer.pop().map(|event| number(&event)), Some((0, 5)));
    assert_eq!(consumer.dropped(), 2);
}

/// One CPU fills a per-CPU ring while another drains it: every event arrives once and in
/// order, or is counted as dropped.
#[test]
fn concurrent_ring_fill_and_drain_lose_nothing_silently() {
    const EACH: u64 = 50_000;
    let mut ring = vmce::EventRing::<8>::new();
    let (mut producer, mut consumer) = ring.split();
    let done = std::sync::atomic::AtomicBool::new(false);
    let got: Vec<u64> = std::thread::scope(|scope| {
        let done = &done;
        scope.spawn(move || {
            for sequence in 0..EACH {
                producer.push(numbered(0, sequence));
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        });
        let consumer = &mut consumer;
        scope
            .spawn(move || {
                let mut got = Vec::new();
                loop {
                    let finished = done.load(std::sync::atomic::Ordering::Acquire);
                    match consumer.pop() {
                        Some(event) => got.push(number(&event).1),
                        None if finished => break,
                        None => std::thread::yield_now(),
                    }
                }
                got
            })
            .join()
            .unwrap()
    });
    assert!(
        got.windows(2).all(|pair| pair[0] < pair[1]),
        "out of order or twice"
    );
    assert_eq!(got.len() as u64 + consumer.dropped(), EACH);
    assert!(!got.is_empty());
}
