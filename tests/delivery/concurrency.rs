//! Guest MSR traffic on every vCPU while another CPU injects: no deadlock, no lost or
//! duplicated #MC, no torn bank.

use crate::common;

use common::AllUp;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;
use vmce::address::{GuestPhysAddr, HostPhysAddr};
use vmce::classify::ReflectClass;
use vmce::registers::{McgStatus, MciMisc, MciStatus};
use vmce::{
    Domain, GuestCpus, GuestMce, Profile, RdmsrOutcome, Vcpu, VcpuId, VcpuOutcome, WrmsrOutcome,
};

const VCPUS: usize = 4;
const ROUNDS: u64 = 20_000;

/// Error number `seq`, recognisable in both ADDR and MISC so a torn bank shows.
fn error(seq: u64) -> GuestMce {
    let (class, status, mcg) = if seq.is_multiple_of(2) {
        (ReflectClass::SraoMemoryScrub, 0xBD00_0000_0000_00C0, 0x5)
    } else {
        (ReflectClass::SrarDataLoad, 0xBD80_0000_0000_0134, 0x7)
    };
    GuestMce {
        class,
        host_mcg_status: McgStatus::from_bits_retain(mcg),
        host_status: MciStatus::from_bits_retain(status),
        host_addr: HostPhysAddr(0),
        guest_addr: GuestPhysAddr(seq << 12),
        misc: MciMisc(0x86 | (seq << 9)),
    }
}

#[derive(Default)]
struct Ledger {
    delivered: [AtomicU32; VCPUS],
    shutdown: [AtomicU32; VCPUS],
    data: Mutex<Vec<Vec<u64>>>,
}

struct Injector<'a> {
    ledger: &'a Ledger,
    seq: u64,
}

impl GuestCpus for Injector<'_> {
    fn is_up(&self, _: VcpuId) -> bool {
        true
    }

    fn machine_check_enabled(&self, _: VcpuId) -> bool {
        true
    }

    fn notify(&mut self, vcpu: VcpuId, outcome: VcpuOutcome) {
        let index = vcpu.0 as usize;
        match outcome {
            VcpuOutcome::Delivered {
                with_data,
                overflow,
            } => {
                assert!(
                    !overflow,
                    "the guest clears STATUS before MCIP, so no overflow"
                );
                self.ledger.delivered[index].fetch_add(1, Ordering::SeqCst);
                if with_data {
                    self.ledger.data.lock().unwrap()[index].push(self.seq);
                }
            }
            VcpuOutcome::Shutdown(_) => {
                self.ledger.shutdown[index].fetch_add(1, Ordering::SeqCst);
            }
            VcpuOutcome::Skipped => panic!("vCPU {index} skipped, but every vCPU is up"),
            other => panic!("vCPU {index}: unknown outcome {other:?}"),
        }
    }
}

fn read(vcpu: &Vcpu, index: u32) -> u64 {
    match vcpu.rdmsr(index) {
        RdmsrOutcome::Handled(value) => value,
        other => panic!("{index:#x}: {other:?}"),
    }
}

/// One guest vCPU: background MSR traffic, and a Linux-like handler for each #MC taken.
fn guest(vcpu: &Vcpu, id: usize, stop: &AtomicBool) -> (u32, Vec<u64>) {
    let mut taken = 0;
    let mut seen = Vec::new();
    let mut tick = 0u64;
    loop {
        tick += 1;
        assert_eq!(read(vcpu, 0x179), 0x0100_0C02);
        assert_eq!(read(vcpu, 0x409), 0, "bank 2 is always empty");
        assert_eq!(
            vcpu.wrmsr(0x280 + (tick % 2) as u32, (1 << 30) | (tick & 0x7FFF)),
            WrmsrOutcome::Handled
        );
        assert_eq!(
            vcpu.wrmsr(0x179, 0),
            WrmsrOutcome::RaiseGp(vmce::GpCause::ReadOnly)
        );
        if vcpu.take_pending() {
            taken += 1;
            let mcg_status = read(vcpu, 0x17A);
            assert!(mcg_status & 0x4 != 0, "vCPU {id}: #MC without MCIP");
            let status = read(vcpu, 0x405);
            if status >> 63 == 1 {
                let addr = read(vcpu, 0x406);
                let misc = read(vcpu, 0x407);
                let seq = addr >> 12;
                assert_eq!(
                    misc >> 9,
                    seq,
                    "vCPU {id}: torn bank (ADDR from {seq}, MISC from {})",
                    misc >> 9
                );
                let expected = error(seq).guest_status().bits();
                assert_eq!(
                    status, expected,
                    "vCPU {id}: STATUS does not belong to error {seq}"
                );
                seen.push(seq);
                assert_eq!(vcpu.wrmsr(0x405, 0), WrmsrOutcome::Handled);
            }
            assert_eq!(vcpu.wrmsr(0x17A, 0), WrmsrOutcome::Handled);
        } else if stop.load(Ordering::SeqCst) && !vcpu.is_pending() {
            return (taken, seen);
        }
        if tick.is_multiple_of(16) {
            thread::yield_now();
        }
    }
}

fn run() {
    let host = common::intel_host();
    let domain = Arc::new(
        Domain::new(
            Profile::Intel,
            &host,
            (0..VCPUS)
                .map(|_| Vcpu::new(Profile::Intel))
                .collect::<Vec<_>>(),
        )
        .unwrap(),
    );
    let ledger = Arc::new(Ledger {
        data: Mutex::new(vec![Vec::new(); VCPUS]),
        ..Ledger::default()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let guests: Vec<_> = (0..VCPUS)
        .map(|id| {
            let (domain, stop) = (Arc::clone(&domain), Arc::clone(&stop));
            thread::spawn(move || guest(&domain.vcpus()[id], id, &stop))
        })
        .collect();
    for seq in 0..ROUNDS {
        if !seq.is_multiple_of(3) {
            // Mostly wait for the guests to re-arm; every third round fires regardless, to
            // exercise the MCIP-still-set path under contention.
            while domain
                .vcpus()
                .iter()
                .any(|vcpu| vcpu.state().mcg_status.contains(McgStatus::MCIP))
            {
                thread::yield_now();
            }
        }
        let consumer = VcpuId((seq % VCPUS as u64) as u32);
        let report = domain
            .inject(
                &error(seq),
                Some(consumer),
                &mut Injector {
                    ledger: &ledger,
                    seq,
                },
            )
            .unwrap();
        assert_eq!(
            report.delivered + report.shutdown,
            VCPUS as u32,
            "every vCPU accounted for"
        );
    }
    stop.store(true, Ordering::SeqCst);
    let mut total_delivered = 0;
    for (id, handle) in guests.into_iter().enumerate() {
        let (taken, seen) = handle.join().unwrap();
        let delivered = ledger.delivered[id].load(Ordering::SeqCst);
        assert_eq!(
            taken, delivered,
            "vCPU {id}: every delivered #MC taken exactly once"
        );
        assert_eq!(
            seen,
            ledger.data.lock().unwrap()[id],
            "vCPU {id}: saw exactly the errors it was given"
        );
        total_delivered += delivered;
    }
    let total_shutdown: u32 = ledger
        .shutdown
        .iter()
        .map(|count| count.load(Ordering::SeqCst))
        .sum();
    assert_eq!(
        u64::from(total_delivered + total_shutdown),
        ROUNDS * VCPUS as u64
    );
    eprintln!("delivered {total_delivered}, shutdown reports {total_shutdown}");
    assert!(total_delivered > 0);
}

#[test]
fn injection_races_guest_msr_traffic() {
    let (done, finished) = mpsc::channel();
    let worker = thread::spawn(move || {
        run();
        let _ = done.send(());
    });
    match finished.recv_timeout(Duration::from_secs(120)) {
        Ok(()) => worker.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("deadlock: no progress for 120 s"),
    }
}

/// A save taken while another CPU injects never sees an injection's registers without its
/// pending #MC (the state a migration must not lose).
#[test]
fn snapshots_never_split_an_injection_from_its_pending_flag() {
    let host = common::intel_host();
    let domain =
        Arc::new(Domain::new(Profile::Intel, &host, vec![Vcpu::new(Profile::Intel)]).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let saver = {
        let (domain, stop) = (Arc::clone(&domain), Arc::clone(&stop));
        thread::spawn(move || {
            let mut checked = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let snapshot = domain.save().vcpu(VcpuId(0)).unwrap().snapshot;
                if snapshot.state.mcg_status.contains(McgStatus::MCIP) {
                    assert!(
                        snapshot.pending,
                        "MCIP without the pending #MC: {snapshot:?}"
                    );
                }
                checked += 1;
            }
            checked
        })
    };
    for seq in 0..200_000 {
        domain.inject(&error(seq), None, &mut AllUp).unwrap();
        // Reset clears MCIP and the pending flag together, so the saver may only ever see
        // (MCIP, pending) = (clear, clear) or (set, set).
        domain.vcpus()[0].reset();
    }
    stop.store(true, Ordering::SeqCst);
    assert!(saver.join().unwrap() > 0);
}

/// A guest that clears `MC1_STATUS` outside its #MC handler (it re-arms first, as an OS
/// clearing banks at boot or from a poll does) races injections that log into the same bank.
/// The clear takes no lock, and the injection's overflow decision must still be atomic with
/// its store: a bank the guest has just cleared may hold a new error, never one marked as
/// overflowing the error the guest cleared.
#[test]
fn lock_free_bank_clears_never_split_an_overflow_decision() {
    const MC1_STATUS: u32 = 0x405;
    const VAL: u64 = 1 << 63;
    const OVER: u64 = 1 << 62;
    const CLEARS: u64 = 1_000_000;
    let host = common::intel_host();
    let domain =
        Arc::new(Domain::new(Profile::Intel, &host, vec![Vcpu::new(Profile::Intel)]).unwrap());
    let guest = {
        let domain = Arc::clone(&domain);
        thread::spawn(move || {
            let vcpu = &domain.vcpus()[0];
            let (mut clears, mut refilled) = (0u64, 0u64);
            while clears < CLEARS {
                // Re-arm, then clear: from the re-arm to the next one at most one injection
                // logs into the bank (it sets MCIP), and if it lands after the clear it
                // found the bank empty. So until the next re-arm the bank holds 0 or an
                // error without OVER.
                assert_eq!(vcpu.wrmsr(0x17A, 0), WrmsrOutcome::Handled);
                assert_eq!(vcpu.wrmsr(MC1_STATUS, 0), WrmsrOutcome::Handled);
                clears += 1;
                vcpu.take_pending();
                // Give an injection that read the bank before the clear time to store.
                for _ in 0..32 {
                    std::hint::spin_loop();
                }
                let status = read(vcpu, MC1_STATUS);
                assert!(
                    status & (VAL | OVER) != VAL | OVER,
                    "after clear {clears}: {status:#x} claims to overflow the cleared error"
                );
                refilled += u64::from(status & VAL != 0);
            }
            (clears, refilled)
        })
    };
    let (mut delivered, mut overflowed) = (0u32, 0u32);
    let mut seq = 0;
    while !guest.is_finished() {
        let report = domain.inject(&error(seq), None, &mut AllUp).unwrap();
        delivered += report.delivered;
        overflowed += u32::from(report.overflow);
        seq += 1;
    }
    let (clears, refilled) = guest.join().unwrap();
    eprintln!(
        "{delivered} delivered ({overflowed} over a valid error), {clears} clears, \
         {refilled} refilled between clear and read"
    );
    assert!(delivered > 0 && clears > 0);
}
