//! The host side of a machine check, judged against plainly written tables: errors raised on a
//! [`SimulatedHost`] with arbitrary capabilities, through `collect`, `release`,
//! `HostMce::most_severe`, `classify` and `GuestMce::from_host` with an arbitrary guest-memory
//! map, then `Domain::inject` into a small domain.
//!
//! Shared by the stable property test (`tests/host/properties.rs`, bounded) and the fuzz
//! target (`fuzz/fuzz_targets/host_reflect.rs`, nightly), which include this file. Both
//! feed [`check`]; the fuzz target gets its [`Scenario`] from [`Scenario::decode`], which
//! turns any byte string into one, and the property test replays `fuzz/seeds/host_reflect`
//! through the same decoder.
//!
//! Every expected value here is computed by plain code in this file, never by vmce: the
//! classification from docs/behaviour.md §4's class table and the tables in
//! `src/classify.rs`'s module docs ([`expected_disposition`]), the simulated host's
//! registers from its documented `raise`/`log` rules ([`HostModel`]), and the delivery from
//! `src/domain.rs`'s table ([`expected_injection`]). [`check`] then asserts:
//! - the simulated host takes each raise as documented (`RaiseOutcome` and bank contents),
//!   and a bank at or above the host's count (capped at 32) does not exist;
//! - `collect` returns exactly the valid banks below the readable count, in bank order, with
//!   `ADDR` only under `ADDRV` and `MISC` only under `MISCV`, and `MCG_STATUS` as raised;
//!   `release` clears exactly those `STATUS` registers and `MCG_STATUS`; the simulated host
//!   reports no access to an MSR it does not have (`invalid_accesses`);
//! - `classify` gives every collected bank the table's verdict; `most_severe` picks the
//!   bank the documented severity order picks (fatal, action required, action optional,
//!   host only; the lowest bank wins a tie), or `None` without a valid bank;
//! - `from_host` reflects exactly what the table reflects, translated through the memory
//!   map (frame rewritten, page offset kept), and refuses an unowned frame or one beyond
//!   the 52-bit physical address space;
//! - `Domain::new` accepts the host exactly when it backs the profile (vendor, at least one
//!   bank, `SER_P`, `LMCE_P` for the LMCE profile);
//! - every injection's report and every vCPU's registers and pending flag are what the
//!   delivery table says; no guest ever sees `MSCOD` (bits 31:16 of `MC1_STATUS`) or an
//!   address that is not the translation of a frame the domain owns; the broken-frame list
//!   holds exactly the translated frames.
#![allow(dead_code)]

pub use crate::common::Mapping;
use crate::common::{MemoryMap, data_mcg_status, host_backs, uncounted_report};
use vmce::address::TranslateError;
use vmce::broken::{BROKEN_FRAMES_DEFAULT, BrokenFrameNote};
use vmce::classify::{Disposition, FatalReason, HostOnlyReason, ReflectClass, classify};
use vmce::host::{HostBank, HostCapabilities, RaiseOutcome, SimulatedHost, collect, release};
use vmce::registers::{McgCap, MciMisc, MciStatus, msr};
use vmce::state::GuestBank;
use vmce::{
    DeliveryMode, Domain, DowngradeReason, GuestCpus, GuestFrame, GuestMce, GuestPhysAddr,
    HostFrame, HostPhysAddr, InjectError, InjectionReport, NotReflected, Profile, RdmsrOutcome,
    ShutdownReason, Vcpu, VcpuId, VcpuMceState, Vendor, WrmsrOutcome,
};

/// At most this many raises per scenario.
pub const MAX_RAISES: usize = 8;
/// At most this many entries in the guest-memory map.
pub const MAX_MAPPINGS: usize = 8;
/// At most this many vCPUs in the domain.
pub const MAX_VCPUS: usize = 4;

// Architectural bit positions, written out here so that nothing below depends on vmce's
// register definitions (docs/behaviour.md §1).
const VAL: u64 = 1 << 63;
const OVER: u64 = 1 << 62;
const UC: u64 = 1 << 61;
const EN: u64 = 1 << 60;
const MISCV: u64 = 1 << 59;
const ADDRV: u64 = 1 << 58;
const PCC: u64 = 1 << 57;
const S: u64 = 1 << 56;
const AR: u64 = 1 << 55;
const DEFERRED: u64 = 1 << 44;
const POISON: u64 = 1 << 43;
const MSCOD: u64 = 0xFFFF << 16;
const MCACOD: u64 = 0xFFFF;
const RIPV: u64 = 1 << 0;
const EIPV: u64 = 1 << 1;
const MCIP: u64 = 1 << 2;
const LMCE_S: u64 = 1 << 3;
const CTL_P: u64 = 1 << 8;
const SER_P: u64 = 1 << 24;
const LMCE_P: u64 = 1 << 27;
/// Guest frames from 2^40 up would put an address beyond 52 bits.
const GUEST_FRAME_LIMIT: u64 = 1 << 40;

/// The `MCi_STATUS` flag bits a built status chooses from (bit i of the selector → entry i).
pub const STATUS_FLAGS: [u64; 11] = [
    VAL, OVER, UC, EN, MISCV, ADDRV, PCC, S, AR, DEFERRED, POISON,
];
/// The `MCG_CAP` flag bits a built capability chooses from (bit i of the selector → entry i).
pub const CAP_FLAGS: [u64; 8] = [
    CTL_P,
    1 << 9,
    1 << 10,
    1 << 11,
    SER_P,
    1 << 25,
    1 << 26,
    LMCE_P,
];
/// MCACODs worth hitting: the reflected ones, their filter-bit twins, their neighbours.
pub const INTERESTING_MCACOD: [u16; 16] = [
    0x00C0, 0x00CF, 0x10C5, 0x00BF, 0x00D0, 0x017A, 0x117A, 0x017B, 0x0134, 0x1134, 0x0135, 0x0150,
    0x1150, 0x0151, 0x0090, 0x0000,
];

/// One error raised on the simulated host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Raise {
    /// `SimulatedHost::log` (one more bank of the same event: no `MCIP` check, `MCG_STATUS`
    /// untouched) instead of `SimulatedHost::raise`.
    pub log_only: bool,
    pub bank: u8,
    pub status: u64,
    /// Loaded by `raise` for an uncorrected error; unused by `log`.
    pub mcg_status: u64,
    pub addr: u64,
    pub misc: u64,
}

/// One vCPU of the domain as the hypervisor sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestVcpu {
    pub up: bool,
    pub cr4_mce: bool,
    /// The guest writes `MCG_EXT_CTL.LMCE_EN` (LMCE profile only).
    pub lmce_en: bool,
}

/// What the guest's handler does between two injections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Between {
    /// Nothing: a second injection finds `MCIP` set.
    Nothing,
    /// Takes the pending #MC and writes `MCG_STATUS` = 0, leaving bank 1 (the next error
    /// gets `OVER`).
    ClearMcip,
    /// Takes the pending #MC, writes `MC1_STATUS` = 0 and `MCG_STATUS` = 0.
    ClearAll,
}

/// Everything one run of [`check`] does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    pub vendor: Vendor,
    /// The host's raw `IA32_MCG_CAP`.
    pub mcg_cap: u64,
    /// Ask for the LMCE profile (Intel; falls back to plain Intel when the host lacks it).
    pub lmce_profile: bool,
    /// At most [`MAX_RAISES`].
    pub raises: Vec<Raise>,
    /// At most [`MAX_MAPPINGS`]; the first entry for a host frame wins.
    pub memory: Vec<Mapping>,
    /// 1 to [`MAX_VCPUS`].
    pub vcpus: Vec<GuestVcpu>,
    /// The consumer named for the i-th injection (cycled; none when empty). Ids at or above
    /// the vCPU count are refused by `inject`.
    pub consumers: Vec<Option<u32>>,
    pub between: Between,
}

struct Cpus<'a>(&'a [GuestVcpu]);

impl GuestCpus for Cpus<'_> {
    fn is_up(&self, vcpu: VcpuId) -> bool {
        self.0.get(vcpu.0 as usize).is_some_and(|cpu| cpu.up)
    }
    fn machine_check_enabled(&self, vcpu: VcpuId) -> bool {
        self.0.get(vcpu.0 as usize).is_some_and(|cpu| cpu.cr4_mce)
    }
}

// ---------------------------------------------------------------------------------------
// Decoding any byte string into a scenario (the fuzz target's input), and back (seeds).
// ---------------------------------------------------------------------------------------

/// Reads the input front to back; past its end every read is 0, so every byte string is a
/// scenario.
pub struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&byte, rest)) => {
                self.0 = rest;
                byte
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        for byte in &mut bytes {
            *byte = self.u8();
        }
        u64::from_le_bytes(bytes)
    }
}

pub fn flags_from(selector: u64, table: &[u64]) -> u64 {
    table
        .iter()
        .enumerate()
        .filter(|(bit, _)| selector >> bit & 1 == 1)
        .fold(0, |acc, (_, flag)| acc | flag)
}

impl Scenario {
    /// A scenario on a host of `vendor` with raw `mcg_cap`, asking for the LMCE profile or
    /// not (`host`), written once for the decoder, the named seeds and the property tests.
    pub fn new(
        host: (Vendor, u64, bool),
        raises: Vec<Raise>,
        memory: Vec<Mapping>,
        vcpus: Vec<GuestVcpu>,
        consumers: Vec<Option<u32>>,
        between: Between,
    ) -> Scenario {
        let (vendor, mcg_cap, lmce_profile) = host;
        Scenario {
            vendor,
            mcg_cap,
            lmce_profile,
            raises,
            memory,
            vcpus,
            consumers,
            between,
        }
    }

    /// The scenario a byte string describes (the fuzz target's input format). Each field
    /// starts with a form byte that chooses between a raw value and a structured one, so a
    /// mutation of one byte usually changes one thing:
    ///
    /// ```text
    /// host       form (bit 0 AMD, bit 1 raw cap, bit 2 LMCE profile)
    ///            raw: u64 cap | built: u8 bank count, u8 flags (CAP_FLAGS)
    /// memory     u8 n (mod 9), then n × [form, host frame, guest frame]
    /// vcpus      u8 (bits 0-1: count - 1, bits 2-3: between), u8 not-up mask (bits 0-3)
    ///            and CR4.MCE-clear mask (bits 4-7), u8 LMCE_EN mask, 4 × u8 consumer
    /// raises     u8 n (mod 9), then n × [form, bank, status, MCG_STATUS, addr, misc]
    /// ```
    pub fn decode(data: &[u8]) -> Scenario {
        let mut input = Bytes(data);
        let form = input.u8();
        let vendor = if form & 1 == 0 {
            Vendor::Intel
        } else {
            Vendor::Amd
        };
        let mcg_cap = if form & 2 != 0 {
            input.u64()
        } else {
            let count = u64::from(input.u8());
            count | flags_from(u64::from(input.u8()), &CAP_FLAGS)
        };
        let lmce_profile = form & 4 != 0;
        let memory: Vec<Mapping> = (0..input.u8() % (MAX_MAPPINGS as u8 + 1))
            .map(|_| decode_mapping(&mut input))
            .collect();
        let shape = input.u8();
        let count = usize::from(shape & 3) + 1;
        let between = match (shape >> 2) & 3 {
            0 => Between::Nothing,
            1 | 3 => Between::ClearAll,
            _ => Between::ClearMcip,
        };
        let masks = input.u8();
        let lmce = input.u8();
        let vcpus = (0..count)
            .map(|id| GuestVcpu {
                up: masks >> id & 1 == 0,
                cr4_mce: masks >> (id + 4) & 1 == 0,
                lmce_en: lmce >> id & 1 == 1,
            })
            .collect();
        let consumers = (0..MAX_VCPUS)
            .map(|_| {
                let byte = input.u8();
                (byte & 0x80 == 0).then_some(u32::from(byte & 0x7F) % (MAX_VCPUS as u32 + 2))
            })
            .collect();
        let raises: Vec<Raise> = (0..input.u8() % (MAX_RAISES as u8 + 1))
            .map(|_| decode_raise(&mut input, &memory))
            .collect();
        let host = (vendor, mcg_cap, lmce_profile);
        Scenario::new(host, raises, memory, vcpus, consumers, between)
    }

    /// Bytes that [`Scenario::decode`] turns back into this scenario (every value in its
    /// raw form), for seeds. `None` when the scenario is not one `decode` can give: more
    /// than the maximum raises, mappings or vCPUs, a host frame of 2^52 or more, a consumer
    /// id above 5, or other than [`MAX_VCPUS`] consumers.
    pub fn encode(&self) -> Option<Vec<u8>> {
        if self.raises.len() > MAX_RAISES
            || self.memory.len() > MAX_MAPPINGS
            || self.vcpus.is_empty()
            || self.vcpus.len() > MAX_VCPUS
            || self.consumers.len() != MAX_VCPUS
            || self.memory.iter().any(|m| m.host_frame >> 52 != 0)
            || self
                .consumers
                .iter()
                .any(|c| c.is_some_and(|id| id > MAX_VCPUS as u32 + 1))
        {
            return None;
        }
        let mut out = Vec::new();
        let vendor = u8::from(self.vendor == Vendor::Amd);
        out.push(vendor | 2 | if self.lmce_profile { 4 } else { 0 });
        out.extend(self.mcg_cap.to_le_bytes());
        out.push(self.memory.len() as u8);
        for mapping in &self.memory {
            // Raw host frame (form 1, as an address); raw guest frame (5 << 3) or unowned (4).
            out.push(match mapping.guest_frame {
                Some(_) => 1 | 5 << 3,
                None => 1 | 4,
            });
            out.extend((mapping.host_frame << 12).to_le_bytes());
            if let Some(guest) = mapping.guest_frame {
                out.extend(guest.to_le_bytes());
            }
        }
        let between = match self.between {
            Between::Nothing => 0,
            Between::ClearAll => 1,
            Between::ClearMcip => 2,
        };
        out.push((self.vcpus.len() as u8 - 1) | between << 2);
        let mut masks = 0u8;
        let mut lmce = 0u8;
        for (id, cpu) in self.vcpus.iter().enumerate() {
            masks |= u8::from(!cpu.up) << id | u8::from(!cpu.cr4_mce) << (id + 4);
            lmce |= u8::from(cpu.lmce_en) << id;
        }
        out.extend([masks, lmce]);
        for consumer in &self.consumers {
            out.push(match consumer {
                Some(id) => *id as u8,
                None => 0x80,
            });
        }
        out.push(self.raises.len() as u8);
        for raise in &self.raises {
            // log_only, raw status, raw MCG_STATUS, raw address, raw misc.
            out.push(u8::from(raise.log_only) | 0b1_1110);
            out.push(raise.bank);
            out.extend(raise.status.to_le_bytes());
            out.extend(raise.mcg_status.to_le_bytes());
            out.extend(raise.addr.to_le_bytes());
            out.extend(raise.misc.to_le_bytes());
        }
        Some(out)
    }
}

/// form bits 0-1: host frame (0 a small frame, 1 raw address >> 12, 2 an edge, 3 the
/// previous entry's frame); bit 2: unowned; bits 3-5: guest frame (0 small, 1 2^40 - 1,
/// 2 2^40, 3 2^40 + 1, 4 u64::MAX, 5 raw, 6 2^40 - 1 - n, 7 the host frame itself).
fn decode_mapping(input: &mut Bytes) -> Mapping {
    let form = input.u8();
    let host_frame = match form & 3 {
        0 => u64::from(input.u16()),
        1 => input.u64() >> 12,
        2 => {
            let edges = [
                GUEST_FRAME_LIMIT - 1,
                GUEST_FRAME_LIMIT,
                (1 << 52) - 1,
                (1 << 52) - 2,
            ];
            edges[usize::from(input.u8() % 4)]
        }
        _ => u64::from(input.u8()),
    };
    let guest_frame = (form & 4 == 0).then(|| match (form >> 3) & 7 {
        0 => u64::from(input.u16()),
        1 => GUEST_FRAME_LIMIT - 1,
        2 => GUEST_FRAME_LIMIT,
        3 => GUEST_FRAME_LIMIT + 1,
        4 => u64::MAX,
        5 => input.u64(),
        6 => GUEST_FRAME_LIMIT - 1 - u64::from(input.u8()),
        _ => host_frame,
    });
    Mapping {
        host_frame,
        guest_frame,
    }
}

/// form bit 0: log_only; bit 1: raw status; bit 2: raw MCG_STATUS; bit 3: raw address;
/// bit 4: raw misc; bit 5: address at the end of its page (offset 0xFFF).
fn decode_raise(input: &mut Bytes, memory: &[Mapping]) -> Raise {
    let form = input.u8();
    let bank = input.u8();
    let status = if form & 2 != 0 {
        input.u64()
    } else {
        let flags = flags_from(u64::from(input.u16()), &STATUS_FLAGS);
        let selector = input.u8();
        let mcacod = if selector & 0x80 != 0 {
            input.u16()
        } else {
            INTERESTING_MCACOD[usize::from(selector) % INTERESTING_MCACOD.len()]
        };
        let mscod = u64::from(input.u16());
        flags | mscod << 16 | u64::from(mcacod)
    };
    let mcg_status = if form & 4 != 0 {
        input.u64()
    } else {
        u64::from(input.u8())
    };
    let addr = if form & 8 != 0 {
        input.u64()
    } else {
        let index = usize::from(input.u8());
        let offset = if form & 0x20 != 0 {
            0xFFF
        } else {
            u64::from(input.u16()) & 0xFFF
        };
        match memory.get(index % memory.len().max(1)) {
            Some(mapping) => mapping.host_frame << 12 | offset,
            None => (index as u64) << 12 | offset,
        }
    };
    let misc = if form & 0x10 != 0 {
        input.u64()
    } else {
        // bits 5:0 the LSB; bits 7:6 choose the mode: physical, or the next byte's mode.
        let byte = input.u8();
        let mode = if byte >> 6 == 3 {
            u64::from(input.u8() & 7)
        } else {
            2
        };
        u64::from(byte & 0x3F) | mode << 6
    };
    Raise {
        log_only: form & 1 != 0,
        bank,
        status,
        mcg_status,
        addr,
        misc,
    }
}

// ---------------------------------------------------------------------------------------
// The plain tables.
// ---------------------------------------------------------------------------------------

/// What the MCACOD names, by docs/behaviour.md §4's patterns (bit 12, the filter bit,
/// ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Code {
    /// `& 0xEFF0 == 0x00C0`
    Scrub,
    /// `& 0xEFFF == 0x017A`
    L3Writeback,
    /// `& 0xEFFF == 0x0134`
    DataLoad,
    /// `& 0xEFFF == 0x0150`
    InstructionFetch,
    Other,
}

/// What an Intel bank says about its address (src/classify.rs, "Address granularity").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Address {
    /// `ADDRV`, `MISCV`, `MISC` mode 2 (physical), LSB ≤ 12.
    WithinPage,
    /// `ADDRV` or `MISCV` clear, or a mode other than physical.
    Missing,
    /// Physical, LSB above 12.
    Coarse(u8),
}

/// The facts of one bank, as booleans, so that the table below reads like the docs' table.
#[derive(Clone, Copy, Debug)]
struct Facts {
    val: bool,
    uc: bool,
    pcc: bool,
    ser_p: bool,
    s: bool,
    ar: bool,
    over: bool,
    addrv: bool,
    deferred: bool,
    /// `RIPV` or `EIPV`.
    restart_ip: bool,
    code: Code,
    address: Address,
}

fn facts(cap: u64, mcg_status: u64, status: u64, misc: u64) -> Facts {
    let has = |bit: u64| status & bit != 0;
    let mcacod = status & MCACOD & !0x1000;
    let code = if mcacod & 0xEFF0 == 0x00C0 {
        Code::Scrub
    } else if mcacod == 0x017A {
        Code::L3Writeback
    } else if mcacod == 0x0134 {
        Code::DataLoad
    } else if mcacod == 0x0150 {
        Code::InstructionFetch
    } else {
        Code::Other
    };
    let lsb = (misc & 0x3F) as u8;
    let physical = (misc >> 6) & 7 == 2;
    let address = if !has(ADDRV) || !has(MISCV) || !physical {
        Address::Missing
    } else if lsb > 12 {
        Address::Coarse(lsb)
    } else {
        Address::WithinPage
    };
    Facts {
        val: has(VAL),
        uc: has(UC),
        pcc: has(PCC),
        ser_p: cap & SER_P != 0,
        s: has(S),
        ar: has(AR),
        over: has(OVER),
        addrv: has(ADDRV),
        deferred: has(DEFERRED),
        restart_ip: mcg_status & (RIPV | EIPV) != 0,
        code,
        address,
    }
}

/// The verdict on one bank, from docs/behaviour.md §4's class table and `src/classify.rs`'s
/// documented tables, as one ordered table: the first row that matches wins. Rows go as the
/// docs list them: invalid, corrected, the fatal row's PCC, no recovery architecture, UCNA,
/// the fatal row's overflow and restart-IP conditions, then the SRAO and SRAR rows with
/// their address rules (Intel: LSB > 12 is host-only for SRAO, fatal for SRAR).
pub fn expected_disposition(
    vendor: Vendor,
    cap: u64,
    mcg_status: u64,
    status: u64,
    misc: u64,
) -> Disposition {
    use Disposition::{Fatal, HostOnly, Reflect};
    let f = facts(cap, mcg_status, status, misc);
    if !f.val {
        return HostOnly(HostOnlyReason::NotValid);
    }
    match vendor {
        Vendor::Intel => match f {
            Facts { uc: false, .. } => HostOnly(HostOnlyReason::Corrected),
            Facts { pcc: true, .. } => Fatal(FatalReason::ProcessorContextCorrupt),
            Facts { ser_p: false, .. } => Fatal(FatalReason::NoRecoveryArchitecture),
            Facts {
                s: false,
                ar: false,
                ..
            } => HostOnly(HostOnlyReason::Ucna),
            Facts {
                ar: true,
                over: true,
                ..
            } => Fatal(FatalReason::Overflow),
            Facts {
                restart_ip: false, ..
            } => Fatal(FatalReason::NoRestartIp),
            // SRAO: UC S !AR !PCC
            Facts {
                ar: false,
                code: Code::Scrub,
                address: Address::WithinPage,
                ..
            } => Reflect(ReflectClass::SraoMemoryScrub),
            Facts {
                ar: false,
                code: Code::L3Writeback,
                address: Address::WithinPage,
                ..
            } => Reflect(ReflectClass::SraoL3Writeback),
            Facts {
                ar: false,
                code: Code::Scrub | Code::L3Writeback,
                address: Address::Missing,
                ..
            } => HostOnly(HostOnlyReason::NoPhysicalAddress),
            Facts {
                ar: false,
                code: Code::Scrub | Code::L3Writeback,
                address: Address::Coarse(lsb),
                ..
            } => HostOnly(HostOnlyReason::AddressCoarserThanPage { lsb }),
            Facts { ar: false, .. } => HostOnly(HostOnlyReason::UnrecognizedActionOptional),
            // SRAR: UC S AR !PCC
            Facts {
                s: true,
                code: Code::DataLoad,
                address: Address::WithinPage,
                ..
            } => Reflect(ReflectClass::SrarDataLoad),
            Facts {
                s: true,
                code: Code::InstructionFetch,
                address: Address::WithinPage,
                ..
            } => Reflect(ReflectClass::SrarInstructionFetch),
            Facts {
                s: true,
                code: Code::DataLoad | Code::InstructionFetch,
                address: Address::Missing,
                ..
            } => Fatal(FatalReason::ActionRequiredWithoutAddress),
            Facts {
                s: true,
                code: Code::DataLoad | Code::InstructionFetch,
                address: Address::Coarse(lsb),
                ..
            } => Fatal(FatalReason::ActionRequiredAddressCoarserThanPage { lsb }),
            // AR without S, or an action-required code vmce does not know.
            Facts { .. } => Fatal(FatalReason::UnrecognizedActionRequired),
        },
        // AMD: no S/AR; MISC is never read as an address mode or LSB.
        Vendor::Amd => match f {
            Facts {
                uc: false,
                deferred: true,
                ..
            } => HostOnly(HostOnlyReason::Deferred),
            Facts { uc: false, .. } => HostOnly(HostOnlyReason::Corrected),
            Facts { pcc: true, .. } => Fatal(FatalReason::ProcessorContextCorrupt),
            Facts { over: true, .. } => Fatal(FatalReason::Overflow),
            Facts {
                restart_ip: false, ..
            } => Fatal(FatalReason::NoRestartIp),
            Facts { addrv: true, .. } => Reflect(ReflectClass::AmdUncorrected),
            Facts { .. } => Fatal(FatalReason::ActionRequiredWithoutAddress),
        },
    }
}

/// The severity order of `HostMce::most_severe`'s docs: fatal, action required (SRAR, AMD),
/// action optional (SRAO), host only.
fn expected_rank(disposition: Disposition) -> u8 {
    match disposition {
        Disposition::Fatal(_) => 3,
        Disposition::Reflect(ReflectClass::SraoMemoryScrub | ReflectClass::SraoL3Writeback) => 1,
        Disposition::Reflect(_) => 2,
        Disposition::HostOnly(_) => 0,
    }
}

/// The simulated host's registers by its documented rules: banks below the count capped at
/// 32; `raise` shuts down on an uncorrected error under `MCIP`, otherwise loads
/// `MCG_STATUS` for an uncorrected error; a corrected error does not replace an uncorrected
/// one; a bank that held a valid error gets `OVER`.
#[derive(Clone, Debug)]
pub struct HostModel {
    readable: u8,
    mcg_status: u64,
    /// (status, addr, misc) per bank.
    banks: [(u64, u64, u64); 32],
}

impl HostModel {
    fn new(cap: u64) -> HostModel {
        HostModel {
            readable: ((cap & 0xFF) as u8).min(32),
            mcg_status: 0,
            banks: [(0, 0, 0); 32],
        }
    }

    fn apply(&mut self, raise: &Raise) -> RaiseOutcome {
        if raise.bank >= self.readable {
            return RaiseOutcome::NoSuchBank;
        }
        let slot = &mut self.banks[usize::from(raise.bank)];
        if !raise.log_only {
            if raise.status & UC != 0 {
                if self.mcg_status & MCIP != 0 {
                    return RaiseOutcome::Shutdown;
                }
                self.mcg_status = raise.mcg_status;
            } else if slot.0 & (VAL | UC) == VAL | UC {
                return RaiseOutcome::Ignored;
            }
        }
        let over = if slot.0 & VAL != 0 { OVER } else { 0 };
        *slot = (raise.status | over, raise.addr, raise.misc);
        RaiseOutcome::Logged
    }
}

/// The error a reflected bank becomes for the guest, computed here.
#[derive(Clone, Copy, Debug)]
struct ExpectedError {
    class: ReflectClass,
    status: u64,
    mcg_status: u64,
    guest_addr: u64,
    misc: u64,
}

/// The domain's per-vCPU state as this file tracks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct GuestState {
    mcg_status: u64,
    mcg_ext_ctl: u64,
    bank1: (u64, u64, u64),
    pending: bool,
}

fn guest_state(vcpu: &Vcpu) -> GuestState {
    let state: VcpuMceState = vcpu.state();
    let bank = state.banks[1];
    GuestState {
        mcg_status: state.mcg_status.bits(),
        mcg_ext_ctl: state.mcg_ext_ctl.bits(),
        bank1: (bank.status.bits(), bank.addr, bank.misc),
        pending: vcpu.is_pending(),
    }
}

/// The delivery table of `src/domain.rs` and docs/behaviour.md §4, applied to `before`:
/// returns the report and every vCPU's state after, or the refusal.
fn expected_injection(
    profile: Profile,
    before: &[GuestState],
    broken: &[u64],
    error: &ExpectedError,
    consumer: Option<u32>,
    cpus: &[GuestVcpu],
) -> Result<(InjectionReport, Vec<GuestState>), InjectError> {
    if let Some(id) = consumer
        && id as usize >= before.len()
    {
        return Err(InjectError::NoSuchVcpu(VcpuId(id)));
    }
    if error.guest_addr >> 52 != 0 {
        return Err(InjectError::AddressOutOfRange(GuestPhysAddr(
            error.guest_addr,
        )));
    }
    let up = |id: u32| cpus[id as usize].up;
    let intel_ar = matches!(
        error.class,
        ReflectClass::SrarDataLoad | ReflectClass::SrarInstructionFetch
    );
    // A consumer that is not up consumed nothing; an Intel action-required error nobody
    // consumed is delivered as action-optional.
    let (consumer, downgraded) = match consumer {
        Some(id) if !up(id) => (None, Some(DowngradeReason::ConsumerNotUp(VcpuId(id)))),
        Some(id) => (Some(id), None),
        None => (None, Some(DowngradeReason::NoConsumer)),
    };
    let downgraded = downgraded.filter(|_| intel_ar);
    let mut error = *error;
    if downgraded.is_some() {
        error.class = ReflectClass::SraoMemoryScrub;
        error.status = (error.status & !MCACOD & !AR) | 0x00C0;
        error.mcg_status = MCIP | RIPV;
    }
    let first_up = (0..before.len() as u32).find(|&id| up(id));
    let local = error.mcg_status & LMCE_S != 0
        && consumer.is_some_and(|id| before[id as usize].mcg_ext_ctl & 1 != 0);
    let (mode, data_vcpu) = if profile.vendor() == Vendor::Amd {
        (DeliveryMode::Single, consumer.or(first_up))
    } else if local {
        (DeliveryMode::Local, consumer)
    } else {
        let action_required = matches!(
            error.class,
            ReflectClass::SrarDataLoad
                | ReflectClass::SrarInstructionFetch
                | ReflectClass::AmdUncorrected
        );
        (
            DeliveryMode::Broadcast,
            consumer.filter(|_| action_required).or(first_up),
        )
    };
    let data_mcg = data_mcg_status(mode, error.mcg_status);
    let frame = error.guest_addr >> 12;
    let broken_frame = if broken.contains(&frame) {
        BrokenFrameNote::AlreadyKnown
    } else if broken.len() < BROKEN_FRAMES_DEFAULT {
        BrokenFrameNote::Recorded
    } else {
        BrokenFrameNote::ListFull
    };
    let mut report = uncounted_report(mode, data_vcpu, downgraded, broken_frame);
    let mut after = before.to_vec();
    let targets: Vec<u32> = match mode {
        DeliveryMode::Broadcast => (0..before.len() as u32).collect(),
        _ => data_vcpu.into_iter().collect(),
    };
    for id in targets {
        let state = &mut after[id as usize];
        let with_data = Some(id) == data_vcpu;
        if !up(id) {
            report.skipped += 1;
            if with_data {
                report.data_vcpu = None;
            }
            continue;
        }
        let shutdown = if !cpus[id as usize].cr4_mce {
            Some(ShutdownReason::MachineCheckDisabled)
        } else if state.mcg_status & MCIP != 0 {
            Some(ShutdownReason::MachineCheckInProgress)
        } else {
            None
        };
        if let Some(reason) = shutdown {
            report.shutdown += 1;
            report.first_shutdown = report.first_shutdown.or(Some((VcpuId(id), reason)));
            continue;
        }
        report.delivered += 1;
        state.pending = true;
        if with_data {
            let over = state.bank1.0 & VAL != 0;
            report.overflow = over;
            state.bank1 = (
                error.status & !MSCOD | if over { OVER } else { 0 },
                error.guest_addr,
                error.misc,
            );
            state.mcg_status = data_mcg;
        } else {
            state.bank1 = (0, 0, 0);
            state.mcg_status = MCIP | RIPV;
        }
    }
    Ok((report, after))
}

// ---------------------------------------------------------------------------------------
// The check.
// ---------------------------------------------------------------------------------------

/// What one run exercised, for the callers' statistics and coverage assertions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    /// `HostMce::most_severe`'s verdict (not summed by [`Coverage::add`]).
    pub most_severe: Option<Disposition>,
    pub collected_banks: usize,
    pub no_such_bank: usize,
    pub shutdown_raises: usize,
    pub events_with_several_banks: usize,
    pub reflected: usize,
    pub srar_reflected: usize,
    pub amd_reflected: usize,
    pub coarse_host_only: usize,
    pub coarse_fatal: usize,
    pub not_owned: usize,
    pub out_of_range: usize,
    pub domains: usize,
    pub domains_refused: usize,
    pub injections: usize,
    pub injections_refused: usize,
    pub delivered_with_data: usize,
    pub local: usize,
    pub downgraded: usize,
    pub overflow: usize,
    pub shutdowns: usize,
    pub skipped: usize,
}

impl Coverage {
    pub fn add(&mut self, other: &Coverage) {
        let fields = [
            (&mut self.collected_banks, other.collected_banks),
            (&mut self.no_such_bank, other.no_such_bank),
            (&mut self.shutdown_raises, other.shutdown_raises),
            (
                &mut self.events_with_several_banks,
                other.events_with_several_banks,
            ),
            (&mut self.reflected, other.reflected),
            (&mut self.srar_reflected, other.srar_reflected),
            (&mut self.amd_reflected, other.amd_reflected),
            (&mut self.coarse_host_only, other.coarse_host_only),
            (&mut self.coarse_fatal, other.coarse_fatal),
            (&mut self.not_owned, other.not_owned),
            (&mut self.out_of_range, other.out_of_range),
            (&mut self.domains, other.domains),
            (&mut self.domains_refused, other.domains_refused),
            (&mut self.injections, other.injections),
            (&mut self.injections_refused, other.injections_refused),
            (&mut self.delivered_with_data, other.delivered_with_data),
            (&mut self.local, other.local),
            (&mut self.downgraded, other.downgraded),
            (&mut self.overflow, other.overflow),
            (&mut self.shutdowns, other.shutdowns),
            (&mut self.skipped, other.skipped),
        ];
        for (total, more) in fields {
            *total += more;
        }
    }

    /// The counters that stayed at zero.
    pub fn missing(&self) -> Vec<&'static str> {
        let named = [
            ("collected_banks", self.collected_banks),
            ("no_such_bank", self.no_such_bank),
            ("shutdown_raises", self.shutdown_raises),
            ("events_with_several_banks", self.events_with_several_banks),
            ("reflected", self.reflected),
            ("srar_reflected", self.srar_reflected),
            ("amd_reflected", self.amd_reflected),
            ("coarse_host_only", self.coarse_host_only),
            ("coarse_fatal", self.coarse_fatal),
            ("not_owned", self.not_owned),
            ("out_of_range", self.out_of_range),
            ("domains", self.domains),
            ("domains_refused", self.domains_refused),
            ("injections", self.injections),
            ("injections_refused", self.injections_refused),
            ("delivered_with_data", self.delivered_with_data),
            ("local", self.local),
            ("downgraded", self.downgraded),
            ("overflow", self.overflow),
            ("shutdowns", self.shutdowns),
            ("skipped", self.skipped),
        ];
        named
            .into_iter()
            .filter(|(_, count)| *count == 0)
            .map(|(name, _)| name)
            .collect()
    }
}

macro_rules! ensure {
    ($cond:expr, $($message:tt)+) => {
        if !$cond {
            return Err(format!($($message)+));
        }
    };
}

/// Runs the scenario through vmce and checks every step against the tables above.
///
/// # Errors
/// The first disagreement, in words.
pub fn check(scenario: &Scenario) -> Result<Coverage, String> {
    let mut coverage = Coverage::default();
    let caps = HostCapabilities::new(scenario.vendor, McgCap::from_bits_retain(scenario.mcg_cap));
    let mut host = SimulatedHost::new(caps);
    let mut model = HostModel::new(scenario.mcg_cap);

    // Raising: the simulated host follows its documented rules.
    for (index, raise) in scenario.raises.iter().enumerate() {
        let outcome = if raise.log_only {
            host.log(raise.bank, raise.status, raise.addr, raise.misc)
        } else {
            host.raise(
                raise.bank,
                raise.status,
                raise.mcg_status,
                raise.addr,
                raise.misc,
            )
        };
        let expected = model.apply(raise);
        ensure!(
            outcome == expected,
            "raise {index} ({raise:x?}): {outcome:?}, expected {expected:?}"
        );
        match outcome {
            RaiseOutcome::NoSuchBank => coverage.no_such_bank += 1,
            RaiseOutcome::Shutdown => coverage.shutdown_raises += 1,
            _ => {}
        }
    }
    for bank in 0..32u8 {
        let (status, addr, misc) = model.banks[usize::from(bank)];
        let expected = |value| (bank < model.readable).then_some(value);
        for (index, value) in [
            (msr::ia32_mci_status(bank), status),
            (msr::ia32_mci_addr(bank), addr),
            (msr::ia32_mci_misc(bank), misc),
        ] {
            ensure!(
                host.peek(index) == expected(value),
                "host MSR {index:#x} holds {:x?}, expected {:x?}",
                host.peek(index),
                expected(value)
            );
        }
    }

    // Collecting: every valid bank below the readable count, in bank order.
    let event = collect(&mut host, &caps);
    ensure!(
        host.invalid_accesses() == 0,
        "collect made {} access(es) to MSRs a host with MCG_CAP {:#x} does not have",
        host.invalid_accesses(),
        scenario.mcg_cap
    );
    let expected_banks: Vec<HostBank> = (0..model.readable)
        .filter(|&bank| model.banks[usize::from(bank)].0 & VAL != 0)
        .map(|bank| {
            let (status, addr, misc) = model.banks[usize::from(bank)];
            HostBank {
                bank,
                status: MciStatus::from_bits_retain(status),
                addr: if status & ADDRV != 0 { addr } else { 0 },
                misc: MciMisc(if status & MISCV != 0 { misc } else { 0 }),
            }
        })
        .collect();
    ensure!(
        event.mcg_status.bits() == model.mcg_status,
        "collected MCG_STATUS {:#x}, host holds {:#x}",
        event.mcg_status.bits(),
        model.mcg_status
    );
    ensure!(
        event.banks() == expected_banks.as_slice(),
        "collected {:x?}, expected {expected_banks:x?}",
        event.banks()
    );
    coverage.collected_banks = expected_banks.len();
    if expected_banks.len() > 1 {
        coverage.events_with_several_banks = 1;
    }

    // Releasing: exactly the collected STATUS registers and MCG_STATUS are cleared.
    let writes_before = host.writes();
    release(&mut host, &event);
    ensure!(
        host.invalid_accesses() == 0,
        "release made {} access(es) to absent MSRs",
        host.invalid_accesses()
    );
    ensure!(
        host.writes() - writes_before == expected_banks.len() as u32 + 1,
        "release wrote {} MSRs for {} banks",
        host.writes() - writes_before,
        expected_banks.len()
    );
    ensure!(
        host.peek(msr::IA32_MCG_STATUS) == Some(0),
        "MCG_STATUS not released"
    );
    for bank in 0..model.readable {
        let (status, addr, misc) = model.banks[usize::from(bank)];
        let status = if status & VAL != 0 { 0 } else { status };
        ensure!(
            host.peek(msr::ia32_mci_status(bank)) == Some(status)
                && host.peek(msr::ia32_mci_addr(bank)) == Some(addr)
                && host.peek(msr::ia32_mci_misc(bank)) == Some(misc),
            "host bank {bank} after release: STATUS {:x?}, expected {status:#x}",
            host.peek(msr::ia32_mci_status(bank))
        );
    }

    // Classifying: each bank gets the table's verdict; most_severe picks by the order.
    let mcg_status = event.mcg_status;
    let verdicts: Vec<Disposition> = expected_banks
        .iter()
        .map(|bank| {
            expected_disposition(
                scenario.vendor,
                scenario.mcg_cap,
                model.mcg_status,
                bank.status.bits(),
                bank.misc.0,
            )
        })
        .collect();
    for (bank, expected) in expected_banks.iter().zip(&verdicts) {
        let got = classify(&caps, mcg_status, bank.status, bank.misc);
        ensure!(
            got == *expected,
            "bank {} (STATUS {:#x}, MISC {:#x}, MCG_STATUS {:#x}, {:?} cap {:#x}): \
             classified {got:?}, the table says {expected:?}",
            bank.bank,
            bank.status.bits(),
            bank.misc.0,
            model.mcg_status,
            scenario.vendor,
            scenario.mcg_cap
        );
        match expected {
            Disposition::HostOnly(HostOnlyReason::AddressCoarserThanPage { .. }) => {
                coverage.coarse_host_only += 1
            }
            Disposition::Fatal(FatalReason::ActionRequiredAddressCoarserThanPage { .. }) => {
                coverage.coarse_fatal += 1
            }
            _ => {}
        }
    }
    let mut expected_worst: Option<(HostBank, Disposition)> = None;
    for (bank, verdict) in expected_banks.iter().zip(&verdicts) {
        if expected_worst.is_none_or(|(_, worst)| expected_rank(*verdict) > expected_rank(worst)) {
            expected_worst = Some((*bank, *verdict));
        }
    }
    let worst = event.most_severe(&caps);
    ensure!(
        worst == expected_worst,
        "most_severe chose {worst:x?}, the severity order chooses {expected_worst:x?}"
    );
    coverage.most_severe = worst.map(|(_, disposition)| disposition);

    // Reflecting: exactly the table's Reflect verdicts, translated through the map.
    let memory = MemoryMap::only(&scenario.memory);
    let mut reflected: Vec<(HostBank, ExpectedError)> = Vec::new();
    for (bank, verdict) in expected_banks.iter().zip(&verdicts) {
        let result = GuestMce::from_host(&caps, mcg_status, bank, &memory);
        let expected = match *verdict {
            Disposition::HostOnly(reason) => Err(NotReflected::HostOnly(reason)),
            Disposition::Fatal(reason) => Err(NotReflected::Fatal(reason)),
            Disposition::Reflect(class) => {
                let frame = bank.addr >> 12;
                match memory.lookup(frame) {
                    None => Err(NotReflected::Translate(TranslateError::NotOwned(
                        HostFrame(frame),
                    ))),
                    Some(guest) if guest >= GUEST_FRAME_LIMIT => Err(NotReflected::Translate(
                        TranslateError::OutOfRange(GuestFrame(guest)),
                    )),
                    Some(guest) => Ok(GuestMce {
                        class,
                        host_mcg_status: mcg_status,
                        host_status: bank.status,
                        host_addr: HostPhysAddr(bank.addr),
                        guest_addr: GuestPhysAddr(guest << 12 | (bank.addr & 0xFFF)),
                        misc: bank.misc,
                    }),
                }
            }
        };
        ensure!(
            result == expected,
            "from_host on bank {} (STATUS {:#x}, ADDR {:#x}): {result:x?}, expected {expected:x?}",
            bank.bank,
            bank.status.bits(),
            bank.addr
        );
        // What vmce reflected (equal to the expectation here) goes on to be injected.
        if let Ok(guest) = result {
            reflected.push((
                *bank,
                ExpectedError {
                    class: guest.class,
                    status: bank.status.bits(),
                    mcg_status: model.mcg_status,
                    guest_addr: guest.guest_addr.0,
                    misc: bank.misc.0,
                },
            ));
        }
        match expected {
            Ok(error) => {
                coverage.reflected += 1;
                match error.class {
                    ReflectClass::SrarDataLoad | ReflectClass::SrarInstructionFetch => {
                        coverage.srar_reflected += 1
                    }
                    ReflectClass::AmdUncorrected => coverage.amd_reflected += 1,
                    _ => {}
                }
            }
            Err(NotReflected::Translate(TranslateError::NotOwned(_))) => coverage.not_owned += 1,
            Err(NotReflected::Translate(TranslateError::OutOfRange(_))) => {
                coverage.out_of_range += 1
            }
            Err(_) => {}
        }
    }

    // The domain: created exactly when the host backs the profile.
    let profile = match scenario.vendor {
        Vendor::Intel if scenario.lmce_profile => Profile::IntelLmce,
        Vendor::Intel => Profile::Intel,
        Vendor::Amd => Profile::Amd,
    };
    let other_vendor = match scenario.vendor {
        Vendor::Intel => Profile::Amd,
        Vendor::Amd => Profile::Intel,
    };
    let vcpu_count = scenario.vcpus.len().clamp(1, MAX_VCPUS);
    let mut candidates = vec![other_vendor, profile];
    if profile == Profile::IntelLmce {
        candidates.push(Profile::Intel);
    }
    let mut chosen = None;
    for candidate in candidates {
        let storage: [Vcpu; MAX_VCPUS] = core::array::from_fn(|_| Vcpu::new(candidate));
        let result = Domain::new(candidate, &caps, &storage[..vcpu_count]).map(|_| ());
        let expected = match host_backs(candidate, scenario.vendor, scenario.mcg_cap).err() {
            Some(error) => Err(vmce::domain::DomainError::Profile(error)),
            None => Ok(()),
        };
        ensure!(
            result == expected,
            "Domain::new({candidate:?}) on {:?} cap {:#x}: {result:?}, expected {expected:?}",
            scenario.vendor,
            scenario.mcg_cap
        );
        if result.is_ok() {
            chosen = Some(candidate);
            break;
        }
        coverage.domains_refused += 1;
    }
    let Some(profile) = chosen else {
        ensure!(
            reflected.is_empty(),
            "no domain can be created on this host, but bank(s) were reflected: {reflected:x?}"
        );
        return Ok(coverage);
    };
    coverage.domains += 1;
    let storage: [Vcpu; MAX_VCPUS] = core::array::from_fn(|_| Vcpu::new(profile));
    let domain = Domain::new(profile, &caps, &storage[..vcpu_count])
        .map_err(|error| format!("Domain::new changed its mind: {error}"))?;
    let cpus = &scenario.vcpus[..vcpu_count];
    for (id, cpu) in cpus.iter().enumerate() {
        if cpu.lmce_en && profile == Profile::IntelLmce {
            let outcome = domain.vcpus()[id].wrmsr(0x4D0, 1);
            ensure!(
                outcome == WrmsrOutcome::Handled,
                "MCG_EXT_CTL = LMCE_EN on {profile:?}: {outcome:?}"
            );
        }
    }

    // Injecting every reflected bank, in bank order.
    let mut broken: Vec<u64> = Vec::new();
    for (index, (bank, error)) in reflected.iter().enumerate() {
        if index > 0 {
            guest_handler(&domain, scenario.between)?;
        }
        let consumer = scenario
            .consumers
            .get(index % scenario.consumers.len().max(1))
            .copied()
            .flatten();
        let before: Vec<GuestState> = domain.vcpus().iter().map(guest_state).collect();
        let guest_error =
            GuestMce::from_host(&caps, mcg_status, bank, &memory).map_err(|e| e.to_string())?;
        let result = domain.inject(&guest_error, consumer.map(VcpuId), &mut Cpus(cpus));
        let after: Vec<GuestState> = domain.vcpus().iter().map(guest_state).collect();
        let expected = expected_injection(profile, &before, &broken, error, consumer, cpus);
        match (&result, expected) {
            (Ok(report), Ok((expected_report, expected_after))) => {
                ensure!(
                    *report == expected_report,
                    "injection {index} of {error:x?} (consumer {consumer:?}, vCPUs {cpus:?}): \
                     report {report:?}, expected {expected_report:?}"
                );
                for (id, (got, want)) in after.iter().zip(&expected_after).enumerate() {
                    ensure!(
                        got == want,
                        "injection {index} of {error:x?} (consumer {consumer:?}): vCPU {id} \
                         holds {got:x?}, expected {want:x?}"
                    );
                }
                let frame = error.guest_addr >> 12;
                if !broken.contains(&frame) {
                    broken.push(frame);
                }
                coverage.injections += 1;
                coverage.local += usize::from(report.mode == DeliveryMode::Local);
                coverage.downgraded += usize::from(report.downgraded.is_some());
                coverage.overflow += usize::from(report.overflow);
                coverage.shutdowns += report.shutdown as usize;
                coverage.skipped += report.skipped as usize;
                coverage.delivered_with_data += usize::from(
                    report
                        .data_vcpu
                        .is_some_and(|id| after[id.0 as usize] != before[id.0 as usize]),
                );
            }
            (Err(error), Err(expected)) => {
                ensure!(
                    *error == expected,
                    "injection {index}: refused with {error:?}, expected {expected:?}"
                );
                ensure!(after == before, "a refused injection changed a vCPU");
                coverage.injections_refused += 1;
            }
            (got, expected) => {
                return Err(format!(
                    "injection {index} of {error:x?} (consumer {consumer:?}): {got:?}, \
                     expected {expected:?}"
                ));
            }
        }
        guest_sees_no_host_data(&domain, &scenario.memory)?;
    }
    let listed: Vec<u64> = domain.broken_frames().iter().map(|frame| frame.0).collect();
    ensure!(
        listed == broken,
        "broken frames {listed:x?}, expected the translated frames {broken:x?}"
    );
    Ok(coverage)
}

/// What the guest's #MC handler does between two deliveries.
fn guest_handler(domain: &Domain<&[Vcpu]>, between: Between) -> Result<(), String> {
    if between == Between::Nothing {
        return Ok(());
    }
    for vcpu in domain.vcpus() {
        vcpu.take_pending();
        if between == Between::ClearAll {
            ensure!(
                vcpu.wrmsr(0x405, 0) == WrmsrOutcome::Handled,
                "MC1_STATUS = 0 refused"
            );
        }
        ensure!(
            vcpu.wrmsr(0x17A, 0) == WrmsrOutcome::Handled,
            "MCG_STATUS = 0 refused"
        );
    }
    Ok(())
}

/// What every vCPU reads through `rdmsr`: no `MSCOD` in `MC1_STATUS`, and a valid
/// `MC1_ADDR` always inside a guest frame the map gives the domain (never a host address of
/// a frame it does not own, never beyond 52 bits).
fn guest_sees_no_host_data(domain: &Domain<&[Vcpu]>, memory: &[Mapping]) -> Result<(), String> {
    let owned = |guest_frame: u64| {
        memory.iter().any(|mapping| {
            mapping.guest_frame == Some(guest_frame)
                && MemoryMap::only(memory).lookup(mapping.host_frame) == Some(guest_frame)
        })
    };
    for (id, vcpu) in domain.vcpus().iter().enumerate() {
        let read = |index: u32| match vcpu.rdmsr(index) {
            RdmsrOutcome::Handled(value) => Ok(value),
            other => Err(format!("vCPU {id}: rdmsr {index:#x} gave {other:?}")),
        };
        let status = read(0x405)?;
        let addr = read(0x406)?;
        ensure!(
            status & MSCOD == 0,
            "vCPU {id} sees MSCOD {:#x} in MC1_STATUS {status:#x}",
            (status & MSCOD) >> 16
        );
        ensure!(
            vcpu.state().banks[0] == GuestBank::EMPTY,
            "vCPU {id}: bank 0 holds something"
        );
        // 0 is an empty bank (or guest frame 0, offset 0); anything else was translated.
        ensure!(
            addr == 0 || (addr >> 52 == 0 && owned(addr >> 12)),
            "vCPU {id} sees MC1_ADDR {addr:#x} (STATUS {status:#x}), not in a guest frame \
             the domain owns"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Named scenarios: the seeds of the fuzz target, each with the verdict its name promises.
// ---------------------------------------------------------------------------------------

/// Guest RAM of the named scenarios: host frame 0x4000 + g is guest frame g.
fn ram() -> Vec<Mapping> {
    vec![
        Mapping {
            host_frame: 0x4123,
            guest_frame: Some(0x123),
        },
        Mapping {
            host_frame: 0x4124,
            guest_frame: Some(0x124),
        },
        // Owned by another domain.
        Mapping {
            host_frame: 0x5000,
            guest_frame: None,
        },
        // The last guest frame below the 52-bit edge, and the first beyond it.
        Mapping {
            host_frame: 0x6000,
            guest_frame: Some(GUEST_FRAME_LIMIT - 1),
        },
        Mapping {
            host_frame: 0x6001,
            guest_frame: Some(GUEST_FRAME_LIMIT),
        },
        // A host frame at the top of a 52-bit host.
        Mapping {
            host_frame: (1 << 40) - 1,
            guest_frame: Some(0x7),
        },
    ]
}

fn all_up(count: usize) -> Vec<GuestVcpu> {
    vec![
        GuestVcpu {
            up: true,
            cr4_mce: true,
            lmce_en: false,
        };
        count
    ]
}

fn raise(bank: u8, status: u64, mcg_status: u64, addr: u64, misc: u64) -> Raise {
    Raise {
        log_only: false,
        bank,
        status,
        mcg_status,
        addr,
        misc,
    }
}

fn log(bank: u8, status: u64, addr: u64, misc: u64) -> Raise {
    Raise {
        log_only: true,
        ..raise(bank, status, 0, addr, misc)
    }
}

/// QEMU's TCG `-cpu max`: 10 banks, CTL_P, SER_P.
const QEMU_CAP: u64 = 0x0100_010A;
/// A Skylake-SP-like host: 20 banks, CMCI_P, TES_P, SER_P, EMC_P, ELOG_P, LMCE_P.
const SKYLAKE_CAP: u64 = 0x0F00_0C14;
const SRAR_LOAD: u64 = 0xBD80_0000_1234_0134;
const SRAO_SCRUB: u64 = 0xBD00_0000_0040_00CF;
const OWNED: u64 = 0x4123 << 12 | 0xABC;

/// A named scenario and what its most severe bank must be.
pub struct Named {
    pub name: &'static str,
    pub scenario: Scenario,
    /// `HostMce::most_severe`'s verdict, written by hand.
    pub most_severe: Option<Disposition>,
    /// How many injections succeed.
    pub injections: usize,
}

/// The seeds of `fuzz/seeds/host_reflect`, each named for what it exercises.
pub fn named_scenarios() -> Vec<Named> {
    use Disposition::{Fatal, HostOnly, Reflect};
    let intel = |mcg_cap: u64, raises: Vec<Raise>, consumers: [Option<u32>; 4]| {
        let host = (Vendor::Intel, mcg_cap, false);
        let consumers = consumers.to_vec();
        Scenario::new(host, raises, ram(), all_up(4), consumers, Between::ClearAll)
    };
    let none = [None; 4];
    vec![
        Named {
            name: "qemu-srar-data-load",
            scenario: intel(
                QEMU_CAP,
                vec![raise(9, SRAR_LOAD, 0x7, OWNED, 0x86)],
                [Some(2), None, None, None],
            ),
            most_severe: Some(Reflect(ReflectClass::SrarDataLoad)),
            injections: 1,
        },
        Named {
            name: "srao-scrub-lsb-12",
            scenario: intel(
                SKYLAKE_CAP,
                vec![raise(5, SRAO_SCRUB, 0x5, OWNED, 0x8C)],
                none,
            ),
            most_severe: Some(Reflect(ReflectClass::SraoMemoryScrub)),
            injections: 1,
        },
        Named {
            name: "srao-scrub-lsb-13-host-only",
            scenario: intel(
                SKYLAKE_CAP,
                vec![raise(5, SRAO_SCRUB, 0x5, OWNED, 0x8D)],
                none,
            ),
            most_severe: Some(HostOnly(HostOnlyReason::AddressCoarserThanPage { lsb: 13 })),
            injections: 0,
        },
        Named {
            name: "srar-lsb-21-fatal",
            scenario: intel(
                SKYLAKE_CAP,
                vec![raise(1, SRAR_LOAD, 0x7, OWNED, 0x95)],
                [Some(0); 4],
            ),
            most_severe: Some(Fatal(FatalReason::ActionRequiredAddressCoarserThanPage {
                lsb: 21,
            })),
            injections: 0,
        },
        Named {
            name: "srar-beside-srao-and-corrected",
            scenario: intel(
                SKYLAKE_CAP,
                vec![
                    raise(7, SRAO_SCRUB, 0x7, 0x4124 << 12 | 0x40, 0x86),
                    log(2, 0x9C00_0000_0000_0090, 0x1000, 0x86),
                    log(11, SRAR_LOAD, OWNED, 0x86),
                ],
                [Some(3), Some(1), None, None],
            ),
            most_severe: Some(Reflect(ReflectClass::SrarDataLoad)),
            injections: 2,
        },
        Named {
            name: "srar-nobody-consumed-downgraded",
            scenario: intel(QEMU_CAP, vec![raise(3, SRAR_LOAD, 0x7, OWNED, 0x86)], none),
            most_severe: Some(Reflect(ReflectClass::SrarDataLoad)),
            injections: 1,
        },
        Named {
            name: "pcc-beats-everything",
            scenario: intel(
                SKYLAKE_CAP,
                vec![
                    raise(4, SRAR_LOAD, 0x7, OWNED, 0x86),
                    log(6, 0xB200_0000_0000_0150, 0, 0),
                ],
                [Some(0); 4],
            ),
            most_severe: Some(Fatal(FatalReason::ProcessorContextCorrupt)),
            injections: 1,
        },
        Named {
            name: "unowned-frame-never-reflected",
            scenario: intel(
                SKYLAKE_CAP,
                vec![raise(1, SRAO_SCRUB, 0x5, 0x5000 << 12 | 0x10, 0x86)],
                none,
            ),
            most_severe: Some(Reflect(ReflectClass::SraoMemoryScrub)),
            injections: 0,
        },
        Named {
            name: "guest-frame-at-and-over-the-52-bit-edge",
            scenario: intel(
                SKYLAKE_CAP,
                vec![
                    raise(1, SRAO_SCRUB, 0x5, 0x6000 << 12 | 0xFFF, 0x86),
                    log(2, SRAO_SCRUB, 0x6001 << 12, 0x86),
                    log(3, SRAO_SCRUB, ((1 << 40) - 1) << 12 | 0x8, 0x86),
                ],
                none,
            ),
            most_severe: Some(Reflect(ReflectClass::SraoMemoryScrub)),
            injections: 2,
        },
        Named {
            name: "host-without-banks",
            scenario: intel(
                0x0100_0000,
                vec![raise(0, SRAR_LOAD, 0x7, OWNED, 0x86)],
                [Some(0); 4],
            ),
            most_severe: None,
            injections: 0,
        },
        Named {
            name: "bank-above-the-host-count",
            scenario: intel(
                QEMU_CAP,
                vec![raise(10, SRAR_LOAD, 0x7, OWNED, 0x86)],
                [Some(0); 4],
            ),
            most_severe: None,
            injections: 0,
        },
        Named {
            name: "host-with-255-banks-bank-31",
            scenario: intel(
                0x0100_01FF,
                vec![
                    raise(31, SRAO_SCRUB, 0x5, OWNED, 0x86),
                    raise(32, SRAR_LOAD, 0x7, OWNED, 0x86),
                ],
                none,
            ),
            most_severe: Some(Reflect(ReflectClass::SraoMemoryScrub)),
            injections: 1,
        },
        Named {
            name: "intel-without-ser-p",
            scenario: intel(
                0x0000_0C0A,
                vec![raise(1, SRAR_LOAD, 0x7, OWNED, 0x86)],
                [Some(0); 4],
            ),
            most_severe: Some(Fatal(FatalReason::NoRecoveryArchitecture)),
            injections: 0,
        },
        Named {
            name: "lmce-to-the-consumer",
            scenario: Scenario {
                lmce_profile: true,
                vcpus: vec![
                    GuestVcpu {
                        up: true,
                        cr4_mce: true,
                        lmce_en: false,
                    },
                    GuestVcpu {
                        up: true,
                        cr4_mce: true,
                        lmce_en: true,
                    },
                ],
                ..intel(
                    SKYLAKE_CAP,
                    vec![raise(1, SRAR_LOAD, 0xF, OWNED, 0x86)],
                    [Some(1); 4],
                )
            },
            most_severe: Some(Reflect(ReflectClass::SrarDataLoad)),
            injections: 1,
        },
        Named {
            name: "amd-uncorrected-misc-ignored",
            scenario: Scenario {
                vendor: Vendor::Amd,
                mcg_cap: 0x17,
                ..intel(
                    0,
                    vec![raise(4, 0xBC00_0800_0000_0134, 0x7, OWNED, 0xFFFF)],
                    [Some(1); 4],
                )
            },
            most_severe: Some(Reflect(ReflectClass::AmdUncorrected)),
            injections: 1,
        },
        Named {
            name: "second-error-under-mcip-and-overflow",
            scenario: Scenario {
                between: Between::ClearMcip,
                ..intel(
                    QEMU_CAP,
                    vec![
                        raise(1, SRAO_SCRUB, 0x5, OWNED, 0x86),
                        log(1, SRAO_SCRUB, 0x4124 << 12, 0x86),
                        log(2, SRAO_SCRUB, OWNED, 0x86),
                        raise(3, SRAR_LOAD, 0x7, OWNED, 0x86),
                    ],
                    [None, Some(1), None, None],
                )
            },
            most_severe: Some(Reflect(ReflectClass::SraoMemoryScrub)),
            injections: 2,
        },
    ]
}
