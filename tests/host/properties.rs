//! The host side (simulated host → collect → release → classify → most_severe → from_host →
//! inject) against the plain tables of `tests/host_checks`: the stable, bounded mirror of the
//! `host_reflect` fuzz target, plus its seeds replayed.

use crate::host_checks;

use host_checks::{
    Between, CAP_FLAGS, Coverage, GuestVcpu, INTERESTING_MCACOD, MAX_MAPPINGS, MAX_RAISES,
    MAX_VCPUS, Mapping, Raise, STATUS_FLAGS, Scenario, check, flags_from, named_scenarios,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::path::Path;
use vmce::Vendor;

const SER_P: u64 = 1 << 24;
const LMCE_P: u64 = 1 << 27;
const GUEST_FRAME_LIMIT: u64 = 1 << 40;

fn bank_count() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => 6u64..=32,
        1 => Just(0u64),
        1 => 1u64..=5,
        1 => 33u64..=40,
        1 => 0u64..=255,
    ]
}

fn mcg_cap() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => (bank_count(), any::<u8>(), prop::bool::weighted(0.85), prop::bool::weighted(0.7))
            .prop_map(|(count, flags, ser_p, lmce_p)| {
                count
                    | flags_from(u64::from(flags), &CAP_FLAGS)
                    | if ser_p { SER_P } else { 0 }
                    | if lmce_p { LMCE_P } else { 0 }
            }),
        1 => any::<u64>(),
    ]
}

/// Typical statuses, each as often as its weight: SRAO scrub and write-back, SRAR load and
/// fetch, UCNA, corrected, PCC, AMD uncorrected and deferred.
const STATUS_TEMPLATES: [(u64, usize); 9] = [
    (0xBD00_0000_0000_00C0, 3),
    (0xBD20_0000_0000_017A, 2),
    (0xBD80_0000_0000_0134, 3),
    (0xBD80_0000_0000_0150, 2),
    (0xBC00_0000_0000_0090, 1),
    (0x9C00_0000_0000_0090, 1),
    (0xB200_0000_0000_0150, 1),
    (0xBC00_0800_0000_0134, 2),
    (0x9C00_1000_0000_0134, 1),
];

fn status() -> impl Strategy<Value = u64> {
    let built = (
        prop::sample::select(
            STATUS_TEMPLATES
                .iter()
                .flat_map(|&(status, weight)| std::iter::repeat_n(status, weight))
                .collect::<Vec<_>>(),
        ),
        prop::option::weighted(0.2, prop::sample::select(STATUS_FLAGS.to_vec())),
        prop::option::weighted(0.2, prop::sample::select(INTERESTING_MCACOD.to_vec())),
        any::<u16>(),
    )
        .prop_map(|(template, flip, mcacod, mscod)| {
            let mut status = template ^ flip.unwrap_or(0);
            if let Some(code) = mcacod {
                status = (status & !0xFFFF) | u64::from(code);
            }
            (status & !(0xFFFF << 16)) | u64::from(mscod) << 16
        });
    prop_oneof![6 => built, 1 => any::<u64>()]
}

fn misc() -> impl Strategy<Value = u64> {
    prop_oneof![
        // physical, LSB 6, 12, 0, 9: within a page
        8 => prop::sample::select(vec![0x86u64, 0x8C, 0x80, 0x89]),
        // physical, LSB 13, 21, 30, 63: coarser than a page
        2 => prop::sample::select(vec![0x8Du64, 0x95, 0x9E, 0xBF]),
        // linear, generic, segment-offset, reserved mode
        1 => prop::sample::select(vec![0x46u64, 0x1C6, 0x06, 0x106]),
        1 => (0u64..8, 0u64..64).prop_map(|(mode, lsb)| mode << 6 | lsb),
        1 => any::<u64>(),
    ]
}

fn mcg_status() -> impl Strategy<Value = u64> {
    prop_oneof![
        // RIPV|MCIP, RIPV|EIPV|MCIP, the same with LMCE_S
        6 => prop::sample::select(vec![0x5u64, 0x7, 0xF, 0xD]),
        // EIPV only, MCIP only, RIPV only, nothing
        2 => prop::sample::select(vec![0x6u64, 0x4, 0x1, 0x0]),
        1 => 0u64..256,
        1 => any::<u64>(),
    ]
}

fn bank() -> impl Strategy<Value = u8> {
    prop_oneof![5 => 0u8..8, 2 => 0u8..34, 1 => any::<u8>()]
}

/// An address: in the i-th mapping's host frame at an offset (resolved once the memory map
/// is known), or any.
#[derive(Clone, Debug)]
enum AddrChoice {
    Mapped(usize, u64),
    Raw(u64),
}

fn addr() -> impl Strategy<Value = AddrChoice> {
    prop_oneof![
        5 => (0usize..MAX_MAPPINGS, prop_oneof![0u64..0x1000, Just(0xFFF), Just(0)])
            .prop_map(|(index, offset)| AddrChoice::Mapped(index, offset)),
        1 => any::<u64>().prop_map(AddrChoice::Raw),
    ]
}

fn raise() -> impl Strategy<Value = (Raise, AddrChoice)> {
    (
        prop::bool::weighted(0.4),
        bank(),
        status(),
        mcg_status(),
        addr(),
        misc(),
    )
        .prop_map(|(log_only, bank, status, mcg_status, addr, misc)| {
            (
                Raise {
                    log_only,
                    bank,
                    status,
                    mcg_status,
                    addr: 0,
                    misc,
                },
                addr,
            )
        })
}

fn mapping() -> impl Strategy<Value = Mapping> {
    let edges = vec![
        GUEST_FRAME_LIMIT - 2,
        GUEST_FRAME_LIMIT - 1,
        GUEST_FRAME_LIMIT,
        GUEST_FRAME_LIMIT + 1,
        u64::MAX,
    ];
    let host_frame = prop_oneof![
        4 => 0x4000u64..0x4010,
        1 => prop::sample::select(vec![GUEST_FRAME_LIMIT - 1, GUEST_FRAME_LIMIT, (1 << 52) - 1]),
        1 => any::<u64>().prop_map(|addr| addr >> 12),
    ];
    let guest_frame = prop_oneof![
        6 => (0u64..0x1_0000).prop_map(Some),
        1 => Just(None),
        2 => prop::sample::select(edges).prop_map(Some),
        1 => any::<u64>().prop_map(Some),
    ];
    (host_frame, guest_frame).prop_map(|(host_frame, guest_frame)| Mapping {
        host_frame,
        guest_frame,
    })
}

fn vcpu() -> impl Strategy<Value = GuestVcpu> {
    (
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.7),
    )
        .prop_map(|(up, cr4_mce, lmce_en)| GuestVcpu {
            up,
            cr4_mce,
            lmce_en,
        })
}

/// A scenario on a host from `host` (AMD?, `MCG_CAP`) with raises from `raises`, and any
/// memory map, vCPUs and consumers.
fn scenario_with(
    host: impl Strategy<Value = (bool, u64)>,
    raises: impl Strategy<Value = Vec<(Raise, AddrChoice)>>,
) -> impl Strategy<Value = Scenario> {
    let consumer = prop::option::weighted(0.7, prop_oneof![5 => 0u32..4, 1 => 4u32..6]);
    let between = prop::sample::select(vec![
        Between::Nothing,
        Between::ClearMcip,
        Between::ClearMcip,
        Between::ClearAll,
    ]);
    (
        host,
        any::<bool>(),
        raises,
        prop::collection::vec(mapping(), 0..=MAX_MAPPINGS),
        prop::collection::vec(vcpu(), 1..=MAX_VCPUS),
        prop::collection::vec(consumer, MAX_VCPUS),
        between,
    )
        .prop_map(
            |((amd, mcg_cap), lmce_profile, raises, memory, vcpus, consumers, between)| {
                let raises = raises
                    .into_iter()
                    .map(|(raise, addr)| Raise {
                        addr: match addr {
                            AddrChoice::Raw(addr) => addr,
                            AddrChoice::Mapped(index, offset) => {
                                match memory.get(index % memory.len().max(1)) {
                                    Some(mapping) => mapping.host_frame << 12 | offset,
                                    None => (index as u64) << 12 | offset,
                                }
                            }
                        },
                        ..raise
                    })
                    .collect();
                let vendor = if amd { Vendor::Amd } else { Vendor::Intel };
                let host = (vendor, mcg_cap, lmce_profile);
                Scenario::new(host, raises, memory, vcpus, consumers, between)
            },
        )
}

/// Anything: any host, any raises.
fn any_scenario() -> impl Strategy<Value = Scenario> {
    scenario_with(
        (prop::bool::weighted(0.25), mcg_cap()),
        prop::collection::vec(raise(), 0..=MAX_RAISES),
    )
}

/// One event with several recoverable errors at once on a host that can reflect them: an
/// uncorrected error raised, then more banks logged into the same event (each reflectable
/// by its template, though an address, MISC or collision may still make it not so).
fn several_recoverable_banks() -> impl Strategy<Value = Scenario> {
    let host = prop_oneof![
        3 => Just((false, 0x0F00_0C14u64)), // Skylake-SP-like, LMCE_P
        1 => Just((false, 0x0100_010Au64)), // QEMU TCG
        1 => Just((true, 0x17u64)),         // AMD
    ];
    let recoverable = prop::sample::select(vec![
        0xBD00_0000_0000_00C0u64,
        0xBD20_0000_0000_017A,
        0xBD80_0000_0000_0134,
        0xBD80_0000_0000_0150,
        0xBC00_0800_0000_0134,
    ]);
    let first = (
        recoverable.clone(),
        any::<u16>(),
        prop::sample::select(vec![0x5u64, 0x7, 0xF, 0xD]),
        0u8..10,
        addr(),
        misc(),
    );
    let more = (recoverable, any::<u16>(), 0u8..10, addr(), misc());
    (first, prop::collection::vec(more, 1..MAX_RAISES))
        .prop_map(|(first, more)| {
            let (status, mscod, mcg_status, bank, addr, misc) = first;
            let mut raises = vec![(
                Raise {
                    log_only: false,
                    bank,
                    status: status | u64::from(mscod) << 16,
                    mcg_status,
                    addr: 0,
                    misc,
                },
                addr,
            )];
            raises.extend(more.into_iter().map(|(status, mscod, bank, addr, misc)| {
                (
                    Raise {
                        log_only: true,
                        bank,
                        status: status | u64::from(mscod) << 16,
                        mcg_status: 0,
                        addr: 0,
                        misc,
                    },
                    addr,
                )
            }));
            raises
        })
        .prop_flat_map(move |raises| scenario_with(host.clone(), Just(raises)))
}

/// Runs `cases` scenarios from `strategy` through the checker and returns what they covered.
fn run(strategy: impl Strategy<Value = Scenario>, cases: u32) -> Coverage {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let total = std::cell::RefCell::new(Coverage::default());
    let result = runner.run(&strategy, |scenario| {
        let coverage = check(&scenario).map_err(TestCaseError::fail)?;
        total.borrow_mut().add(&coverage);
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    total.into_inner()
}

/// The mirror of the fuzz target: structured scenarios, and the checker must agree with vmce
/// on every one. It also proves it reached every path it judges (each counter is hit in a
/// few percent of the cases at least, so a random run that misses one is a broken
/// strategy, not bad luck).
#[test]
fn host_side_agrees_with_the_plain_tables() {
    let coverage = run(
        prop_oneof![3 => any_scenario(), 1 => several_recoverable_banks()],
        2000,
    );
    eprintln!("{coverage:?}");
    assert!(
        coverage.missing().is_empty(),
        "never exercised: {:?} ({coverage:?})",
        coverage.missing()
    );
}

/// Any byte string is a scenario; random ones (mostly short) must pass too.
#[test]
fn any_bytes_are_a_scenario_that_passes() {
    run(
        prop::collection::vec(any::<u8>(), 0..160).prop_map(|bytes| Scenario::decode(&bytes)),
        500,
    );
}

/// The named scenarios give the verdicts their names promise (written by hand, so the
/// plain tables are themselves anchored), and encode to bytes that decode back to them.
#[test]
fn named_scenarios_give_their_verdicts() {
    for named in named_scenarios() {
        let coverage =
            check(&named.scenario).unwrap_or_else(|error| panic!("{}: {error}", named.name));
        assert_eq!(coverage.most_severe, named.most_severe, "{}", named.name);
        assert_eq!(coverage.injections, named.injections, "{}", named.name);
        let bytes = named.scenario.encode().expect("encodable");
        assert_eq!(Scenario::decode(&bytes), named.scenario, "{}", named.name);
    }
}

/// `fuzz/seeds/host_reflect` holds exactly the named scenarios' bytes (run with
/// `VMCE_WRITE_SEEDS=1` to rewrite them), plus any minimized input a fuzz run found; every
/// file there must pass.
#[test]
fn seeds_are_the_named_scenarios_and_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/host_reflect");
    let write = std::env::var_os("VMCE_WRITE_SEEDS").is_some();
    for named in named_scenarios() {
        let path = dir.join(format!("{}.bin", named.name));
        let bytes = named.scenario.encode().expect("encodable");
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            on_disk,
            bytes,
            "{} is stale: rerun with VMCE_WRITE_SEEDS=1",
            path.display()
        );
    }
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if let Err(error) = check(&Scenario::decode(&bytes)) {
            panic!("{}: {error}", path.display());
        }
        replayed += 1;
    }
    assert!(replayed >= named_scenarios().len());
}
