//! The lock-free vCPU protocol (src/vcpu.rs, src/domain.rs) under the `loom` model checker:
//! every interleaving of an injection with a guest's lock-free clears and reads, a snapshot,
//! `take_pending` and a domain save, under the C11 memory model (loom explores which store
//! each load may read, not only the order of the threads).
//!
//! Built only with `RUSTFLAGS="--cfg loom"` (src/sync.rs then gives the library loom's
//! atomics and locks): `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test
//! --release --test loom`, as the last step of `./scripts/test.sh`. Without that cfg this
//! file is empty, so a plain `cargo test` runs no model.
//!
//! Each model runs the real `Domain`, `Vcpu` and emulation code; the threads are the CPUs of
//! a hypervisor: the one injecting from its #MC path, the guest vCPU doing MSR exits, the one
//! taking the pending #MC on VM entry, the toolstack saving. Where a model checks "a state
//! that existed", the reference is the set of states the same operations produce when run
//! one at a time, in every order each thread's program allows.
//!
//! Each model bounds the preemptions per execution ([`BOUND`], [`BOUND_SAVES`], none for
//! model 7); `LOOM_MAX_PREEMPTIONS` overrides every bound. Each also asserts that it saw the
//! outcomes it exists for (both orders, a poll that read the new error, every state saved),
//! so a model that stops exploring them fails. `-- --nocapture` prints each model's count
//! of executions.
#![cfg(loom)]

mod common;

use common::{AllUp, intel_host};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use std::collections::HashSet;
use std::hash::Hash;
use vmce::address::{GuestPhysAddr, HostPhysAddr};
use vmce::classify::ReflectClass;
use vmce::registers::{McgStatus, MciCtl2, MciMisc, MciStatus};
use vmce::state::GuestBank;
use vmce::{
    Domain, GuestFrame, GuestMce, InjectError, InjectionReport, Profile, RdmsrOutcome, Vcpu,
    VcpuMceState, VcpuSnapshot, WrmsrOutcome,
};

const MCG_STATUS: u32 = 0x17A;
const MC1_CTL2: u32 = 0x281;
const MC1_STATUS: u32 = 0x405;
const MC1_ADDR: u32 = 0x406;
const MC1_MISC: u32 = 0x407;

/// The two valid `MCi_CTL2` values the guest writes in models 6 and 7: CMCI on, threshold 1
/// or 2.
const CTL2: [u64; 2] = [MciCtl2::CMCI_EN.bits() | 1, MciCtl2::CMCI_EN.bits() | 2];

type TestDomain = Domain<Vec<Vcpu>>;

/// Preemption bounds: the models without a save (the count of executions stops growing
/// at 5 for those with two threads), the save models racing guest clears (three threads,
/// long passes: seconds each at 3), and none at all, for the model of a save's termination.
const BOUND: Option<usize> = Some(5);
const BOUND_SAVES: Option<usize> = Some(3);
const UNBOUNDED: Option<usize> = None;

/// loom's bound on the steps of one execution (its default, 1000, is less than one save
/// and its setup take: every atomic access is a step). A livelock still fails at this bound.
const BRANCHES: usize = 20_000;

/// loom, with these bounds unless the environment sets them.
fn builder(preemptions: Option<usize>) -> loom::model::Builder {
    let mut builder = loom::model::Builder::new();
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        builder.preemption_bound = preemptions;
    }
    if std::env::var_os("LOOM_MAX_BRANCHES").is_none() {
        builder.max_branches = BRANCHES;
    }
    builder
}

/// Runs `f` under loom, every execution with at most `preemptions` preemptions (`None`: any
/// number), and returns what the executions returned. Prints the count of executions.
fn model<O>(preemptions: Option<usize>, f: impl Fn() -> O + Sync + Send + 'static) -> HashSet<O>
where
    O: Hash + Eq + Send + 'static,
{
    let seen = std::sync::Arc::new(std::sync::Mutex::new((0usize, HashSet::new())));
    let sink = seen.clone();
    let started = std::time::Instant::now();
    builder(preemptions).check(move || {
        let outcome = f();
        let mut seen = sink.lock().unwrap();
        seen.0 += 1;
        seen.1.insert(outcome);
    });
    let (executions, outcomes) = std::mem::take(&mut *seen.lock().unwrap());
    println!(
        "{executions} executions, {} outcomes, in {:.1?}",
        outcomes.len(),
        started.elapsed()
    );
    outcomes
}

/// Runs `f` on a new thread (a CPU of the hypervisor). The main thread of a model only sets
/// up, spawns and joins: loom 0.7's partial-order reduction missed interleavings with the
/// main thread's own accesses (with model 2's poll on the main thread, none of its 30
/// executions, at any preemption bound, read the injection's `STATUS`; on a spawned thread,
/// of 392 executions, some do). That is also why every model asserts that it saw the
/// outcomes it is about.
fn spawn<T: Send + 'static>(
    domain: &Arc<TestDomain>,
    f: impl FnOnce(&TestDomain) -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let domain = domain.clone();
    thread::spawn(move || f(&domain))
}

/// A CPU injecting `error` into `domain`, every vCPU up.
fn spawn_injection(
    domain: &Arc<TestDomain>,
    error: GuestMce,
) -> thread::JoinHandle<Result<InjectionReport, InjectError>> {
    spawn(domain, move |domain| {
        domain.inject(&error, None, &mut AllUp)
    })
}

/// The error the guest left in bank 1 before the model starts: valid, not yet cleared.
const PREVIOUS: GuestBank = GuestBank {
    status: MciStatus::from_bits_retain(0xBD00_0000_0000_00C0),
    addr: 0x0000_7000,
    misc: 0x86,
};

/// The previous error after the guest's poll cleared its `STATUS` (`ADDR` and `MISC` stay).
const PREVIOUS_CLEARED: GuestBank = GuestBank {
    status: MciStatus::empty(),
    ..PREVIOUS
};

/// The error the model injects: a patrol-scrub SRAO (broadcast on Intel, data on vCPU 0).
fn new_error() -> GuestMce {
    GuestMce {
        class: ReflectClass::SraoMemoryScrub,
        host_mcg_status: McgStatus::MCIP | McgStatus::RIPV,
        host_status: MciStatus::from_bits_retain(0xBD00_0001_0000_00C0),
        host_addr: HostPhysAddr(0x0412_3040),
        guest_addr: GuestPhysAddr(0x0012_3040),
        misc: MciMisc(0x8C),
    }
}

/// An Intel domain of `vcpus` vCPUs, up and with `MCIP` clear, vCPU 0's bank 1 holding
/// `bank1`, nothing pending.
fn domain(vcpus: usize, bank1: GuestBank) -> TestDomain {
    let list: Vec<Vcpu> = (0..vcpus).map(|_| Vcpu::new(Profile::Intel)).collect();
    let mut state = VcpuMceState::new(Profile::Intel);
    state.banks[1] = bank1;
    list[0].restore(
        &VcpuSnapshot {
            state,
            pending: false,
        }
        .check(Profile::Intel)
        .expect("a valid starting state"),
    );
    Domain::new(Profile::Intel, &intel_host(), list).expect("the host backs the profile")
}

fn read(vcpu: &Vcpu, msr: u32) -> u64 {
    match vcpu.rdmsr(msr) {
        RdmsrOutcome::Handled(value) => value,
        other => panic!("rdmsr {msr:#x}: {other:?}"),
    }
}

/// One operation of a thread's program, the same whether run alone or concurrently.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// `Domain::inject` of [`new_error`], no consumer (broadcast, data on vCPU 0).
    Inject,
    /// A guest `wrmsr` on vCPU 0.
    Wrmsr(u32, u64),
}

/// What an [`Op`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Output {
    Injected(Result<InjectionReport, InjectError>),
    Wrote(WrmsrOutcome),
}

impl Op {
    fn run(self, domain: &TestDomain) -> Output {
        match self {
            Op::Inject => Output::Injected(domain.inject(&new_error(), None, &mut AllUp)),
            Op::Wrmsr(msr, value) => Output::Wrote(domain.vcpus()[0].wrmsr(msr, value)),
        }
    }
}

/// A save of the whole domain: every vCPU's registers and pending flag, the broken frames.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Cut {
    vcpus: Vec<VcpuSnapshot>,
    broken: Vec<GuestFrame>,
}

fn save(domain: &TestDomain) -> Cut {
    let save = domain.save();
    let cut = Cut {
        vcpus: save.vcpus().map(|record| *record.snapshot).collect(),
        broken: save.domain().broken_frames.iter().collect(),
    };
    drop(save);
    cut
}

/// What the programs produce run one operation at a time, in every interleaving that keeps
/// each program's order.
#[derive(Default)]
struct Sequential {
    /// Every state after every prefix of every interleaving (the start included).
    states: HashSet<Cut>,
    /// Every final state with what each program's operations returned.
    finals: HashSet<(Cut, Vec<Vec<Output>>)>,
}

/// Every merge of programs with these lengths: the program index of each step.
fn interleavings(remaining: &mut [usize], prefix: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
    if remaining.iter().all(|&left| left == 0) {
        out.push(prefix.clone());
        return;
    }
    for program in 0..remaining.len() {
        if remaining[program] > 0 {
            remaining[program] -= 1;
            prefix.push(program);
            interleavings(remaining, prefix, out);
            prefix.pop();
            remaining[program] += 1;
        }
    }
}

/// Runs `programs` sequentially from `start()` in every interleaving (one loom execution:
/// loom's atomics exist only inside a model).
fn sequential(start: fn() -> TestDomain, programs: &'static [&'static [Op]]) -> Sequential {
    let result = std::sync::Arc::new(std::sync::Mutex::new(Sequential::default()));
    let sink = result.clone();
    builder(Some(0)).check(move || {
        let mut orders = Vec::new();
        let mut lengths: Vec<usize> = programs.iter().map(|program| program.len()).collect();
        interleavings(&mut lengths, &mut Vec::new(), &mut orders);
        let mut sequential = sink.lock().unwrap();
        for order in orders {
            let domain = start();
            let mut next = vec![0; programs.len()];
            let mut outputs = vec![Vec::new(); programs.len()];
            sequential.states.insert(save(&domain));
            for program in order {
                outputs[program].push(programs[program][next[program]].run(&domain));
                next[program] += 1;
                sequential.states.insert(save(&domain));
            }
            sequential.finals.insert((save(&domain), outputs));
        }
    });
    std::mem::take(&mut *result.lock().unwrap())
}

/// Runs each program on its own thread; returns what each returned, in program order.
fn run_concurrently(domain: &Arc<TestDomain>, programs: &[&'static [Op]]) -> Vec<Vec<Output>> {
    let threads: Vec<_> = programs
        .iter()
        .map(|&program| {
            spawn(domain, move |domain| {
                program.iter().map(|op| op.run(domain)).collect()
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|thread| thread.join().unwrap())
        .collect()
}

/// Model 1: an injection logs bank 1's `STATUS` while the guest's poll clears it without
/// the lock. The outcome is one of the two orders: the clear first (the new error, no
/// `OVER`, the report says no overflow) or the injection first (`OVER` reported, then the
/// guest's clear leaves `STATUS` 0). Never `OVER` stored over an error the guest had
/// already cleared: the `OVER` decision and the store are one compare-and-swap.
#[test]
fn injection_against_a_guest_clearing_status() {
    const PROGRAMS: &[&[Op]] = &[&[Op::Inject], &[Op::Wrmsr(MC1_STATUS, 0)]];
    let start = || domain(1, PREVIOUS);
    let finals = sequential(start, PROGRAMS).finals;
    assert_eq!(finals.len(), 2, "two orders, two outcomes: {finals:#?}");
    let expected = finals.clone();
    let seen = model(BOUND, move || {
        let domain = Arc::new(start());
        let outputs = run_concurrently(&domain, PROGRAMS);
        let end = (save(&domain), outputs);
        assert!(
            finals.contains(&end),
            "an outcome no order of the two gives: {end:#?}"
        );
        end
    });
    assert_eq!(seen, expected, "both orders explored");
}

/// Model 2: a guest polls bank 1 (`STATUS`, then `ADDR`, then `MISC`, as Linux does) while an
/// injection fills it. Bank 1 starts with a cleared `STATUS` beside the previous error's
/// `ADDR` and `MISC`; a poll that reads the new `STATUS` must read the new `ADDR` and
/// `MISC` (stored before it, released by it, acquired by the read).
#[test]
fn guest_polling_bank_1_during_an_injection() {
    let error = new_error();
    let seen = model(BOUND, move || {
        let domain = Arc::new(domain(1, PREVIOUS_CLEARED));
        let injector = spawn_injection(&domain, error);
        let guest = spawn(&domain, |domain| {
            let vcpu = &domain.vcpus()[0];
            let status = read(vcpu, MC1_STATUS);
            [status, read(vcpu, MC1_ADDR), read(vcpu, MC1_MISC)]
        });
        let [status, addr, misc] = guest.join().unwrap();
        let report = injector.join().unwrap().unwrap();
        assert!(!report.overflow);
        let new = status & MciStatus::VAL.bits() != 0;
        if new {
            assert_eq!(status, error.guest_status().bits());
            assert_eq!(
                (addr, misc),
                (error.guest_addr.0, error.misc.0),
                "the new STATUS beside another error's ADDR/MISC"
            );
        } else {
            assert_eq!(status, 0);
        }
        (new, addr == PREVIOUS.addr)
    });
    assert!(
        seen.contains(&(true, false)),
        "a poll read the new STATUS: {seen:?}"
    );
    assert!(
        seen.contains(&(false, true)),
        "a poll read the old bank: {seen:?}"
    );
}

/// Model 3: a save (the two-pass snapshot under the locks) while an injection lands and the
/// guest clears bank 1's `STATUS` then `ADDR` without the lock. Every save is a state the
/// operations produce one at a time, never a mix (the previous `STATUS` beside a cleared
/// `ADDR`), every one of those states is saved in some execution, and every save finishes
/// (loom fails an execution that runs past its step bound).
#[test]
fn save_during_an_injection_and_guest_clears() {
    const PROGRAMS: &[&[Op]] = &[
        &[Op::Inject],
        &[Op::Wrmsr(MC1_STATUS, 0), Op::Wrmsr(MC1_ADDR, 0)],
    ];
    let start = || domain(1, PREVIOUS);
    let Sequential { states, finals } = sequential(start, PROGRAMS);
    let expected = states.clone();
    let seen = model(BOUND_SAVES, move || {
        let domain = Arc::new(start());
        let saver = spawn(&domain, save);
        let outputs = run_concurrently(&domain, PROGRAMS);
        let cut = saver.join().unwrap();
        let end = (save(&domain), outputs);
        assert!(
            states.contains(&cut),
            "a save of a state that never existed: {cut:#?}"
        );
        assert!(finals.contains(&end), "an outcome no order gives: {end:#?}");
        cut
    });
    assert_eq!(seen, expected, "every state saved in some execution");
}

/// Model 4: the vCPU takes the pending #MC on VM entry while the injection is under way,
/// and a second CPU tries to take it too. Whoever takes the flag sees the injection's
/// `MCG_STATUS` and bank 1 (the flag is released after them); the injection is taken
/// exactly once over both takers and a last check after both.
#[test]
fn take_pending_during_an_injection() {
    let error = new_error();
    let seen = model(BOUND, move || {
        let domain = Arc::new(domain(1, PREVIOUS_CLEARED));
        let injector = spawn_injection(&domain, error);
        let taker = move |domain: &TestDomain| {
            let vcpu = &domain.vcpus()[0];
            if !vcpu.take_pending() {
                return false;
            }
            assert_eq!(
                read(vcpu, MCG_STATUS),
                (McgStatus::MCIP | McgStatus::RIPV).bits(),
                "the #MC taken before its MCG_STATUS"
            );
            assert_eq!(
                [
                    read(vcpu, MC1_STATUS),
                    read(vcpu, MC1_ADDR),
                    read(vcpu, MC1_MISC)
                ],
                [
                    error.guest_status().bits(),
                    error.guest_addr.0,
                    error.misc.0
                ],
                "the #MC taken before its bank 1"
            );
            true
        };
        let vcpu = spawn(&domain, taker);
        let other = spawn(&domain, taker);
        let report = injector.join().unwrap().unwrap();
        assert_eq!(report.delivered, 1);
        let takers = [vcpu.join().unwrap(), other.join().unwrap()];
        let last = domain.vcpus()[0].take_pending();
        let taken = takers.iter().chain([&last]).filter(|&&taken| taken).count();
        assert_eq!(
            taken, 1,
            "taken by the two CPUs {takers:?}, after them {last}"
        );
        (takers, last)
    });
    for taken in [
        ([true, false], false),
        ([false, true], false),
        ([false, false], true),
    ] {
        assert!(seen.contains(&taken), "{taken:?} explored: {seen:?}");
    }
}

/// Model 5: a domain save while an injection is broadcast to 2 vCPUs. The save holds the
/// domain lock, as the injection does from its first vCPU to its last, so the save is the
/// domain before the delivery or after all of it: never one vCPU with the #MC and the
/// other without, nor the broken frame without the #MC.
#[test]
fn domain_save_during_a_broadcast() {
    const PROGRAMS: &[&[Op]] = &[&[Op::Inject]];
    let start = || domain(2, PREVIOUS_CLEARED);
    let states = sequential(start, PROGRAMS).states;
    assert_eq!(states.len(), 2, "before and after: {states:#?}");
    let expected = states.clone();
    let seen = model(BOUND, move || {
        let domain = Arc::new(start());
        let saver = spawn(&domain, save);
        let outputs = run_concurrently(&domain, PROGRAMS);
        let cut = saver.join().unwrap();
        let Output::Injected(Ok(report)) = outputs[0][0] else {
            panic!("{outputs:?}");
        };
        assert_eq!(report.delivered, 2);
        assert!(
            states.contains(&cut),
            "a save with part of the delivery: {cut:#?}"
        );
        cut
    });
    assert_eq!(seen, expected, "saves before and after the delivery");
}

/// Model 6: the guest writes `MCi_CTL2` without the lock, over and over until a save ends,
/// and clears bank 1's `STATUS` and `ADDR` on the way. Every register of the save but
/// `MCi_CTL2` is a state that existed, and `MCi_CTL2` is a value the guest wrote. (That the
/// save ends however the guest's writes fall is the next model.)
#[test]
fn save_during_guest_ctl2_writes() {
    const PROGRAMS: &[&[Op]] = &[&[
        Op::Wrmsr(MC1_CTL2, CTL2[0]),
        Op::Wrmsr(MC1_STATUS, 0),
        Op::Wrmsr(MC1_CTL2, CTL2[1]),
        Op::Wrmsr(MC1_ADDR, 0),
    ]];
    let start = || domain(1, PREVIOUS);
    let without_ctl2 = |mut cut: Cut| {
        for vcpu in &mut cut.vcpus {
            vcpu.state.mci_ctl2 = [MciCtl2::empty(); 2];
        }
        cut
    };
    let states: HashSet<Cut> = sequential(start, PROGRAMS)
        .states
        .into_iter()
        .map(without_ctl2)
        .collect();
    assert_eq!(states.len(), 3, "{states:#?}");
    let expected = states.clone();
    let seen = model(BOUND_SAVES, move || {
        let domain = Arc::new(start());
        let saved = Arc::new(AtomicBool::new(false));
        let guest = {
            let saved = saved.clone();
            spawn(&domain, move |domain| {
                for op in PROGRAMS[0] {
                    assert_eq!(op.run(domain), Output::Wrote(WrmsrOutcome::Handled));
                }
                // The guest keeps rewriting MCi_CTL2 until the save is done.
                rewrite_ctl2_until(domain, &saved);
            })
        };
        let saver = spawn(&domain, move |domain| {
            let cut = save(domain);
            saved.store(true, Ordering::Release);
            cut
        });
        let cut = saver.join().unwrap();
        guest.join().unwrap();
        let ctl2 = cut.vcpus[0].state.mci_ctl2[1].bits();
        assert!(
            ctl2 == 0 || CTL2.contains(&ctl2),
            "MCi_CTL2 {ctl2:#x} never written"
        );
        assert!(
            states.contains(&without_ctl2(cut.clone())),
            "a save of a state that never existed: {cut:#?}"
        );
        cut
    });
    let ctl2: HashSet<u64> = seen
        .iter()
        .map(|cut| cut.vcpus[0].state.mci_ctl2[1].bits())
        .collect();
    assert_eq!(
        ctl2,
        HashSet::from([0, CTL2[0], CTL2[1]]),
        "every MCi_CTL2 saved"
    );
    let states: HashSet<Cut> = seen.into_iter().map(without_ctl2).collect();
    assert_eq!(states, expected, "every state saved in some execution");
}

/// The guest's side of models 6 and 7: writes `MCi_CTL2` of bank 1, alternating two valid
/// values, until `saved` is set; a save still running after [`GUEST_CTL2_WRITES`] writes
/// fails the model. Returns how many writes it made.
fn rewrite_ctl2_until(domain: &TestDomain, saved: &AtomicBool) -> usize {
    let vcpu = &domain.vcpus()[0];
    let mut writes = 0;
    while !saved.load(Ordering::Acquire) {
        assert!(
            writes < GUEST_CTL2_WRITES,
            "a save outlasted {GUEST_CTL2_WRITES} MCi_CTL2 writes: it waits for the guest"
        );
        assert_eq!(
            vcpu.wrmsr(MC1_CTL2, CTL2[writes % 2]),
            WrmsrOutcome::Handled
        );
        writes += 1;
        thread::yield_now();
    }
    writes
}

/// More `MCi_CTL2` writes than a save that does not wait for them lets through (at most 4
/// in model 7, with loom 0.7) and as many as a save's passes are bounded to.
const GUEST_CTL2_WRITES: usize = 8;

/// Model 7: a save against a guest that writes `MCi_CTL2` for as long as the save runs,
/// with no preemption bound, so the guest's writes can fall between any two of the save's
/// steps, as often as the guest likes. The save ends in every execution before the guest
/// has written [`GUEST_CTL2_WRITES`] times: its passes are compared without `MCi_CTL2`, so
/// they agree whatever the guest writes. A snapshot that waited for two passes to agree on
/// `MCi_CTL2` too would spin for as long as the guest writes.
#[test]
fn save_ends_however_often_the_guest_writes_ctl2() {
    let seen = model(UNBOUNDED, || {
        let domain = Arc::new(domain(1, PREVIOUS));
        let saved = Arc::new(AtomicBool::new(false));
        let guest = {
            let saved = saved.clone();
            spawn(&domain, move |domain| rewrite_ctl2_until(domain, &saved))
        };
        let saver = spawn(&domain, move |domain| {
            let cut = save(domain);
            saved.store(true, Ordering::Release);
            cut
        });
        saver.join().unwrap();
        guest.join().unwrap()
    });
    assert!(
        seen.iter().any(|&writes| writes >= 2),
        "guest writes during a save explored: {seen:?}"
    );
}
