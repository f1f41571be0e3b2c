//! vmce against the reference model of `tests/model`, on the same ops and bytes as the
//! `domain_ops` fuzz target: random inputs (proptest), a fixed set of generated inputs that
//! must reach every path the model knows, and the fuzz seeds, each of which must reach its
//! own path. Plus the classifier's totality.

use crate::model;

use model::ops::{
    Base, DirectError, Encoder, Entry, GuestAddr, HostAddr, HostBankError, Hostile, Input,
    Mutation, Op, Setup, VcpuSpec,
};
use model::records::Format;
use model::{Harness, Stats};

use proptest::prelude::*;
use vmce::Profile;
use vmce::Vendor;
use vmce::classify::{Disposition, ReflectClass, classify};
use vmce::host::HostCapabilities;
use vmce::record::RestoreError;
use vmce::record::native::NativeVersion;
use vmce::record::xen::XenRelease;
use vmce::registers::{McgCap, McgStatus, MciMisc, MciStatus};

fn run(bytes: &[u8]) -> Stats {
    match Harness::run(bytes, true) {
        Ok(stats) => stats,
        Err(violation) => panic!("{violation}\ninput: {bytes:02x?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any bytes: vmce answers every op as the model does, and its state stays the model's.
    #[test]
    fn any_input_matches_the_model(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Err(violation) = Harness::run(&bytes, true) {
            return Err(TestCaseError::fail(violation));
        }
    }

    /// The seed encoder writes exactly what the decoder reads: any decoded setup and ops
    /// re-encode to bytes that decode to the same setup and ops.
    #[test]
    fn encoder_inverts_decoder(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut input = Input::new(&bytes);
        let Some(setup) = input.setup() else { return Ok(()) };
        let mut ops = Vec::new();
        while let Some(op) = input.op() {
            ops.push(op);
        }
        let mut encoder = Encoder::default();
        encoder.setup(&setup);
        for op in &ops {
            encoder.op(op);
        }
        let mut again = Input::new(&encoder.bytes);
        prop_assert_eq!(again.setup(), Some(setup));
        for op in &ops {
            prop_assert_eq!(again.op(), Some(*op));
        }
        prop_assert!(again.is_empty());
    }

    /// The classifier is total over every input and never reflects a PCC or address-less error,
    /// nor (Intel) an address coarser than a page.
    #[test]
    fn classify_is_total(raw_cap in any::<u64>(), amd in any::<bool>(), mcg in any::<u64>(), status in any::<u64>(), misc in any::<u64>()) {
        let host = HostCapabilities::new(if amd { Vendor::Amd } else { Vendor::Intel }, McgCap::from_bits_retain(raw_cap));
        let status = MciStatus::from_bits_retain(status);
        let disposition = classify(&host, McgStatus::from_bits_retain(mcg), status, MciMisc(misc));
        if let Disposition::Reflect(_) = disposition {
            prop_assert!(status.contains(MciStatus::VAL | MciStatus::UC | MciStatus::ADDRV));
            prop_assert!(!status.contains(MciStatus::PCC));
            prop_assert!(mcg & 0x3 != 0);
            if !amd {
                prop_assert!(MciMisc(misc).address_lsb() <= vmce::classify::COARSEST_REFLECTED_ADDRESS_LSB);
            }
        }
    }
}

/// xorshift64*: a fixed stream of bytes, so the coverage test below is the same every run.
struct Bytes(u64);

impl Bytes {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fill(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// The generated inputs reach every path the model knows (each counter of `Stats` is
/// non-zero): no part of the model is dead weight, and the fuzz target starts from the same
/// reach.
#[test]
fn generated_inputs_reach_every_path() {
    let mut bytes = Bytes(0x5EED_0F0D_E10A_7E11);
    let mut total = Stats::default();
    for round in 0..1500 {
        let len = 40 + (bytes.next() % 400) as usize;
        let input = bytes.fill(len);
        let stats = match Harness::run(&input, round % 8 == 0) {
            Ok(stats) => stats,
            Err(violation) => panic!("{violation}\ninput: {input:02x?}"),
        };
        total.add(&stats);
    }
    assert!(
        total.unreached().is_empty(),
        "never reached: {:?}\n{total:?}",
        total.unreached()
    );
}

// ---- Seeds: the inputs of fuzz/seeds/domain_ops, each with the path it must reach. ----

/// Intel host frame 0x4123 holds guest frame 0x123; 0x4124 guest frame 2^40 - 1 (the last
/// frame of the 52-bit space).
fn setup(profile: Profile, count: usize) -> Setup {
    let intel = profile != Profile::Amd;
    Setup {
        profile,
        host_intel: intel,
        host_caps: if intel { 0x0F00_0C14 } else { 0x17 },
        vcpus: [VcpuSpec {
            made_for: profile,
            caps: None,
        }; 4],
        count,
        memory: [(0x4123, 0x123), (0x4124, (1 << 40) - 1), (0, 0), (0, 0)],
        memory_len: 2,
    }
}

fn host_error(status: u64, mcg_status: u64, consumer: Option<u32>) -> Op {
    Op::HostEvent {
        mcg_status,
        errors: [
            Some(HostBankError {
                bank: 3,
                status,
                addr: HostAddr::Raw(0x0412_3ABC),
                misc: 0x86,
            }),
            None,
            None,
            None,
        ],
        consumer,
    }
}

/// A hand-made SRAO at `addr`, no consumer.
fn srao_at(addr: GuestAddr) -> Op {
    Op::DirectInject(DirectError {
        class: ReflectClass::SraoMemoryScrub,
        mcg_status: 0x5,
        status: SRAO,
        addr,
        misc: 0x86,
        consumer: None,
    })
}

const SRAO: u64 = 0xBD00_0000_0040_00CF;
const SRAR: u64 = 0xBD80_0000_0000_0134;

struct Seed {
    name: &'static str,
    setup: Setup,
    ops: Vec<Op>,
    /// What the run must reach (checked on the stats).
    reaches: fn(&Stats) -> bool,
}

fn seeds() -> Vec<Seed> {
    let v2 = Format::Native(NativeVersion::V2);
    let mut old_host = setup(Profile::Intel, 2);
    old_host.vcpus[0].caps = Some(0x0100_0128); // 40 banks, CTL_P
    old_host.vcpus[1].caps = Some(0x0100_0C00); // no banks at all
    vec![
        Seed {
            name: "srao-broadcast",
            setup: setup(Profile::Intel, 3),
            ops: vec![host_error(SRAO, 0x5, None), Op::Sweep { vcpu: 1 }],
            reaches: |s| s.broadcast == 1 && s.host_reflected == 1 && s.downgraded == 0,
        },
        Seed {
            name: "srar-consumer",
            setup: setup(Profile::Intel, 4),
            ops: vec![host_error(SRAR, 0x7, Some(2)), Op::TakePending { vcpu: 2 }],
            reaches: |s| s.broadcast == 1 && s.downgraded == 0 && s.srar_with_consumer == 1,
        },
        Seed {
            name: "srar-downgraded",
            setup: setup(Profile::Intel, 2),
            ops: vec![host_error(SRAR, 0x7, None)],
            reaches: |s| s.downgraded == 1,
        },
        Seed {
            name: "skipped-vcpu",
            setup: setup(Profile::Intel, 3),
            ops: vec![
                Op::SetUp { vcpu: 0, up: false },
                host_error(SRAO, 0x5, None),
                Op::SetCr4 {
                    vcpu: 2,
                    mce: false,
                },
                host_error(SRAO, 0x5, None),
            ],
            reaches: |s| s.skipped == 2 && s.shutdown == 1,
        },
        Seed {
            name: "save-restore-round-trip",
            setup: setup(Profile::IntelLmce, 2),
            ops: vec![
                Op::Write {
                    vcpu: 1,
                    msr: 0x4D0,
                    value: 1,
                },
                Op::Write {
                    vcpu: 0,
                    msr: 0x281,
                    value: 0x4000_0005,
                },
                host_error(SRAR, 0xF, Some(1)),
                Op::Save { format: v2 },
                Op::TakePending { vcpu: 1 },
                Op::ClearMcip { vcpu: 1 },
                Op::RestoreStash { loader: 1 },
                Op::Save {
                    format: Format::Xen(XenRelease::Xen4_10),
                },
            ],
            reaches: |s| {
                s.local == 1 && s.saves == 1 && s.saves_refused == 1 && s.stash_restored == 1
            },
        },
        Seed {
            name: "refused-restore",
            setup: setup(Profile::Intel, 3),
            ops: vec![
                host_error(SRAO, 0x5, None),
                Op::Save { format: v2 },
                Op::Hostile(Hostile {
                    entry: Entry::Whole,
                    base: Base::Stash,
                    mutations: [Some(Mutation::Drop { record: 1 }), None, None],
                }),
                Op::Hostile(Hostile {
                    entry: Entry::Whole,
                    base: Base::Current,
                    mutations: [
                        Some(Mutation::DomainFrames {
                            count: 6,
                            first: 0x200,
                            stride: 1,
                        }),
                        None,
                        None,
                    ],
                }),
                Op::Hostile(Hostile {
                    entry: Entry::VcpusOnly,
                    base: Base::Current,
                    mutations: [
                        Some(Mutation::Field {
                            record: 2,
                            field: 5,
                            value: 0xBD00_0000_1234_00C0,
                        }),
                        None,
                        None,
                    ],
                }),
            ],
            reaches: |s| s.missing_vcpu == 1 && s.capacity_refused == 1 && s.hostile_refused == 3,
        },
        Seed {
            name: "amd-single",
            setup: setup(Profile::Amd, 2),
            ops: vec![host_error(0xBC00_0800_0000_0134, 0x7, Some(1))],
            reaches: |s| s.single == 1,
        },
        Seed {
            name: "old-host-caps",
            setup: old_host,
            ops: vec![
                Op::Sweep { vcpu: 0 },
                Op::Sweep { vcpu: 1 },
                Op::Write {
                    vcpu: 1,
                    msr: 0x281,
                    value: 0x4000_0001,
                },
                Op::Save {
                    format: Format::Xen(XenRelease::Xen4_2),
                },
                Op::Save {
                    format: Format::Xen(XenRelease::Xen4_3),
                },
                Op::RestoreStash { loader: 0 },
                Op::Reset { vcpu: 1 },
                Op::RestoreStash { loader: 2 },
                host_error(SRAO, 0x5, None),
            ],
            reaches: |s| {
                s.restored_caps == 2
                    && (s.saves, s.saves_refused) == (1, 1)
                    && (s.stash_refused, s.stash_restored) == (1, 1)
                    && s.broadcast == 1
            },
        },
        Seed {
            name: "edge-52-bits",
            setup: setup(Profile::Intel, 1),
            ops: vec![
                srao_at(GuestAddr::Raw(1 << 52)),
                Op::HostEvent {
                    mcg_status: 0x5,
                    errors: [
                        Some(HostBankError {
                            bank: 1,
                            status: SRAO,
                            addr: HostAddr::Mapped {
                                index: 1,
                                offset: 0xFFF,
                            },
                            misc: 0x86,
                        }),
                        None,
                        None,
                        None,
                    ],
                    consumer: None,
                },
                Op::BrokenAccess {
                    addr: GuestAddr::Listed {
                        index: 0,
                        offset: 0x10,
                    },
                    fetch: true,
                    vcpu: 0,
                },
            ],
            reaches: |s| s.inject_refused == 1 && s.host_reflected == 1 && s.broken_access == 1,
        },
        // The defect of `restore_refuses_frames_beyond_52_bits`: a domain record listing
        // frame 2^40. Until `HOSTILE_FRAMES_BEYOND_52_BITS` is set the harness folds the frame
        // into the 52-bit space (frame 0) and the restore succeeds; then it must be refused.
        Seed {
            name: "frame-beyond-52-bits",
            setup: setup(Profile::Intel, 1),
            ops: vec![
                Op::Hostile(Hostile {
                    entry: Entry::DomainOnly,
                    base: Base::Current,
                    mutations: [
                        Some(Mutation::DomainFrames {
                            count: 1,
                            first: 1 << 40,
                            stride: 0,
                        }),
                        None,
                        None,
                    ],
                }),
                Op::Save { format: v2 },
                Op::RestoreStash { loader: 1 },
            ],
            reaches: |s| s.hostile_restored + s.hostile_refused == 1 && s.saves == 1,
        },
        Seed {
            name: "frame-list-full",
            setup: setup(Profile::Intel, 2),
            ops: (0..5)
                .map(|frame| srao_at(GuestAddr::Raw(frame << 12)))
                .chain([Op::Save { format: v2 }, Op::ClearMcip { vcpu: 0 }])
                .collect(),
            reaches: |s| s.list_full == 1 && s.overflow == 0 && s.shutdown == 4,
        },
    ]
}

fn seed_bytes(seed: &Seed) -> Vec<u8> {
    let mut encoder = Encoder::default();
    encoder.setup(&seed.setup);
    for op in &seed.ops {
        encoder.op(op);
    }
    encoder.bytes
}

/// Each seed reaches its path with vmce and the model agreeing, and the file in
/// `fuzz/seeds/domain_ops` holds exactly its bytes (`VMCE_BLESS=1` rewrites them).
#[test]
fn seeds_reach_their_paths() {
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/domain_ops");
    let bless = std::env::var_os("VMCE_BLESS").is_some();
    for seed in seeds() {
        let bytes = seed_bytes(&seed);
        let stats = run(&bytes);
        assert!(
            (seed.reaches)(&stats),
            "seed {} did not reach its path: {stats:?}",
            seed.name
        );
        let path = directory.join(format!("{}.bin", seed.name));
        if bless {
            std::fs::create_dir_all(&directory).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        assert_eq!(
            std::fs::read(&path).ok().as_deref(),
            Some(&bytes[..]),
            "{} is stale (VMCE_BLESS=1 cargo test --test domain seeds)",
            path.display()
        );
    }
}

/// Every file in `fuzz/seeds/domain_ops` (the named seeds and any minimized input kept
/// there) runs clean.
#[test]
fn every_seed_file_runs_clean() {
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/domain_ops");
    let mut files = 0;
    for entry in std::fs::read_dir(directory).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        run(&bytes);
        files += 1;
    }
    assert!(files >= seeds().len());
}

/// Found by the model (seed `frame-beyond-52-bits.bin`): `Domain::restore` and
/// `Domain::restore_domain` took a `SavedDomain` (its fields are public) listing a frame
/// beyond the 52-bit physical address space; the domain then saved a V2 record its own
/// decoder refuses (`FrameOutOfRange`), so it could no longer migrate. The restore is
/// refused with `FrameOutOfRange` and changes nothing.
#[test]
fn restore_refuses_frames_beyond_52_bits() {
    use vmce::GuestFrame;
    use vmce::record::SavedDomain;
    let host = HostCapabilities::new(Vendor::Intel, McgCap::from_bits_retain(0x0F00_0C14));
    let domain =
        vmce::Domain::new(Profile::Intel, &host, vec![vmce::Vcpu::new(Profile::Intel)]).unwrap();
    let saved = SavedDomain::<64> {
        profile: Profile::Intel,
        vcpus: 1,
        broken_frames: [GuestFrame(1 << 40)].into_iter().collect(),
    };
    assert_eq!(
        domain.restore_domain(&saved),
        Err(RestoreError::FrameOutOfRange { frame: 1 << 40 })
    );
    assert!(domain.broken_frames().is_empty());
}
