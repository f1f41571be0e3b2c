//! The operations the harness applies, and the byte format both drivers decode them from:
//! the fuzz target hands libFuzzer's input to [`Input`], the property tests hand it bytes
//! proptest generated, and the seed writer builds inputs with [`Encoder`].
//!
//! Every field is a selector byte and its operands. The decoder maps most selectors to the
//! values worth hitting (interesting MSRs, statuses, the frames of the memory map, listed
//! broken frames, the 52-bit edge); the encoder always writes the explicit ("raw") form, so
//! any op can be written down exactly.

use super::records::Format;
use super::reference::{FRAME_LIMIT, MAX_VCPUS};
use vmce::Profile;
use vmce::classify::ReflectClass;

/// MSR indices worth hitting: every MCA register and a few neighbours.
pub const INTERESTING_MSRS: [u32; 16] = [
    0x0, 0x1, 0x2, 0x3A, 0x179, 0x17A, 0x17B, 0x4D0, 0x405, 0x406, 0x407, 0x281, 0x280, 0x404,
    0x47C, 0x480,
];

/// Host `MCi_STATUS` values worth raising (SRAR, SRAO, UCNA, write-back, AMD, ...).
pub const INTERESTING_STATUS: [u64; 10] = [
    0xBD80_0000_0000_0134, // SRAR data load
    0xBD80_0000_0000_0150, // SRAR instruction fetch
    0xBD00_0000_0000_00C0, // SRAO scrub
    0xBD00_0000_0040_00CF, // SRAO scrub, channel 15, MSCOD
    0xBD20_0000_8000_017A, // SRAO L3 write-back
    0xBC00_0000_0001_0090, // UCNA
    0x9C00_0000_0001_0090, // corrected
    0xBD80_FFFF_FFFF_0150, // SRAR with every MSCOD bit
    0xBC00_0800_0000_0134, // AMD poison
    0xBE00_0000_0000_0134, // PCC
];

/// How the domain is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setup {
    pub profile: Profile,
    /// Host vendor (true: Intel) and `MCG_CAP`.
    pub host_intel: bool,
    pub host_caps: u64,
    pub vcpus: [VcpuSpec; MAX_VCPUS],
    pub count: usize,
    /// The memory map: (host frame, guest frame); frames not listed map by [`default_frame`].
    pub memory: [(u64, u64); 4],
    pub memory_len: usize,
}

/// How one vCPU is made: `Vcpu::new(made_for)`, or `Vcpu::with_restored_caps(made_for, caps)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuSpec {
    pub made_for: Profile,
    pub caps: Option<u64>,
}

/// Host frames the memory map does not list: every frame not a multiple of 3 is the guest's
/// at the same number (so frames at and beyond the 52-bit edge come up), the others are not.
pub fn default_frame(host_frame: u64) -> Option<u64> {
    (!host_frame.is_multiple_of(3)).then_some(host_frame)
}

/// A guest address: raw, or an offset into the domain's `index`-th broken frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestAddr {
    Raw(u64),
    Listed { index: u8, offset: u16 },
}

/// A host address: raw, or an offset into the `index`-th frame of the memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostAddr {
    Raw(u64),
    Mapped { index: u8, offset: u16 },
}

/// An address as the input spells it, before it is read as a guest or a host address.
enum AddrBytes {
    /// Selector 1 or 2: a list index and an offset.
    Indexed(u8, u16),
    /// Selector 3: one byte picking a special address.
    Special(u8),
    /// Any other selector: the address itself.
    Raw(u64),
}

/// One error logged in a host bank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostBankError {
    pub bank: u8,
    pub status: u64,
    pub addr: HostAddr,
    pub misc: u64,
}

/// A hand-made reflected error (any address, the 52-bit edge included). Its class is taken
/// among the domain vendor's: on AMD always `AmdUncorrected`, on Intel `AmdUncorrected`
/// stands for `SrarDataLoad`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectError {
    pub class: ReflectClass,
    pub mcg_status: u64,
    pub status: u64,
    pub addr: GuestAddr,
    pub misc: u64,
    pub consumer: Option<u32>,
}

/// Which restore entry point a hostile restore goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// `Domain::restore(Some(domain record), vcpus)`.
    Whole,
    /// `Domain::restore(None, vcpus)`.
    NoDomainRecord,
    /// `Domain::restore_vcpus`.
    VcpusOnly,
    /// `Domain::restore_domain`.
    DomainOnly,
    /// `Vcpu::restore` of the first record on vCPU `vcpu`.
    OneVcpu { vcpu: u8 },
}

/// The records a hostile restore starts from, before its mutations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base {
    /// Every vCPU as it is now, the domain record of the current list.
    Current,
    /// Every vCPU at power-on with its current caps, no broken frames.
    PowerOn,
    /// The last successful save, when there is one (else as `Current`).
    Stash,
}

/// One change to the records of a hostile restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Set field `field` (see `harness::set_field`) of record `record` to `value`.
    Field { record: u8, field: u8, value: u64 },
    /// Name another vCPU.
    Id { record: u8, id: u32 },
    /// A second record for the same vCPU.
    Duplicate { record: u8 },
    /// No record for that vCPU.
    Drop { record: u8 },
    /// The domain record's profile.
    DomainProfile(Profile),
    /// The domain record's vCPU count.
    DomainVcpus(u32),
    /// The domain record's frames: `count` frames `first`, `first + stride`, ... (distinct).
    DomainFrames { count: u8, first: u64, stride: u64 },
    /// The domain record's overflow mark.
    DomainOverflowed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hostile {
    pub entry: Entry,
    pub base: Base,
    pub mutations: [Option<Mutation>; 3],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Read {
        vcpu: u8,
        msr: u32,
    },
    Write {
        vcpu: u8,
        msr: u32,
        value: u64,
    },
    /// The guest brings a vCPU up or takes it offline.
    SetUp {
        vcpu: u8,
        up: bool,
    },
    /// The guest sets or clears a vCPU's `CR4.MCE`.
    SetCr4 {
        vcpu: u8,
        mce: bool,
    },
    /// A host machine check: the first error raised, the others logged in more banks of the
    /// same event; then collect → most_severe → GuestMce::from_host → inject.
    HostEvent {
        mcg_status: u64,
        errors: [Option<HostBankError>; 4],
        consumer: Option<u32>,
    },
    /// A hand-made reflected error, injected as it is.
    DirectInject(DirectError),
    /// A vCPU touches a guest address (a broken frame's, or any).
    BrokenAccess {
        addr: GuestAddr,
        fetch: bool,
        vcpu: u32,
    },
    TakePending {
        vcpu: u8,
    },
    /// The guest's handler is done: `MCG_STATUS` = 0.
    ClearMcip {
        vcpu: u8,
    },
    /// The guest opts the vCPU into local machine checks: `MCG_EXT_CTL` = `LMCE_EN`.
    EnableLmce {
        vcpu: u8,
    },
    Reset {
        vcpu: u8,
    },
    /// `Domain::save` in a format; a save that succeeds is kept (the stash).
    Save {
        format: Format,
    },
    /// The stash decoded by a loader of its family (`loader` picks the release or version:
    /// Xen 4.2, 4.3, 4.10 or native V1, V2, modulo their number) and restored into the live
    /// domain.
    RestoreStash {
        loader: u8,
    },
    Hostile(Hostile),
    /// Every MCA MSR of a vCPU read and compared.
    Sweep {
        vcpu: u8,
    },
}

/// What each opcode byte (mod 32) means: the weights of the ops.
const OPCODES: [u8; 32] = [
    0, 0, 0, 14, // Read, EnableLmce
    1, 1, 1, 1, // Write
    2, 2, // SetUp
    3, // SetCr4
    4, 4, 4, 4, // HostEvent
    5, 5, // DirectInject
    6, 6, // BrokenAccess
    7, 7, // TakePending
    8, 8, // ClearMcip
    9, // Reset
    10, 10, 10, // Save
    11, 11, // RestoreStash
    12, 12, // Hostile
    13, // Sweep
];

const CLASSES: [ReflectClass; 5] = [
    ReflectClass::SraoMemoryScrub,
    ReflectClass::SraoL3Writeback,
    ReflectClass::SrarDataLoad,
    ReflectClass::SrarInstructionFetch,
    ReflectClass::AmdUncorrected,
];

/// A reader over fuzz bytes; every read is `None` once they run out.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.data.split_first()?;
        self.data = rest;
        Some(first)
    }

    fn bool(&mut self) -> Option<bool> {
        Some(self.byte()? & 1 == 1)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes([
            self.byte()?,
            self.byte()?,
            self.byte()?,
            self.byte()?,
        ]))
    }

    fn u64(&mut self) -> Option<u64> {
        let (head, rest) = self.data.split_first_chunk::<8>()?;
        self.data = rest;
        Some(u64::from_le_bytes(*head))
    }

    fn profile(&mut self) -> Option<Profile> {
        Some(Profile::ALL[usize::from(self.byte()? % 3)])
    }

    /// Any value, biased to 0, all-ones, single bits, small numbers, CTL2-shaped values.
    fn value(&mut self) -> Option<u64> {
        let selector = self.byte()?;
        Some(match selector % 8 {
            1 => 0,
            2 => u64::MAX,
            3 => 1 << (self.byte()? % 64),
            4 => u64::from(self.byte()?),
            5 => (1 << 30) | u64::from(self.u16()?),
            6 => u64::from(self.byte()? % 16),
            _ => self.u64()?,
        })
    }

    fn msr(&mut self) -> Option<u32> {
        let selector = self.byte()?;
        Some(match selector % 4 {
            0 => INTERESTING_MSRS[usize::from(self.byte()?) % INTERESTING_MSRS.len()],
            1 => 0x400 + u32::from(self.byte()?),
            2 => 0x280 + u32::from(self.byte()? % 0x40),
            _ => self.u32()?,
        })
    }

    fn status(&mut self) -> Option<u64> {
        let selector = self.byte()?;
        let pick = |byte: u8| INTERESTING_STATUS[usize::from(byte) % INTERESTING_STATUS.len()];
        Some(match selector % 4 {
            1 | 2 => pick(self.byte()?),
            3 => pick(self.byte()?) ^ (1 << (self.byte()? % 64)),
            _ => self.u64()?,
        })
    }

    fn misc(&mut self) -> Option<u64> {
        let selector = self.byte()?;
        Some(match selector % 4 {
            1 => 0x86,
            2 => 0x8C,
            3 => 0x80 | u64::from(self.byte()? % 64),
            _ => self.u64()?,
        })
    }

    fn mcg_status(&mut self) -> Option<u64> {
        let selector = self.byte()?;
        Some(match selector % 4 {
            0 => self.u64()?,
            _ => u64::from(self.byte()? % 16),
        })
    }

    fn consumer(&mut self) -> Option<Option<u32>> {
        let selector = self.byte()?;
        Some(match selector % 8 {
            0 | 7 => None,
            6 => Some(self.u32()?),
            _ => Some(u32::from(self.byte()? % (MAX_VCPUS as u8 + 1))),
        })
    }

    /// A frame number: raw, small, or at the 52-bit edge.
    fn frame(&mut self) -> Option<u64> {
        let selector = self.byte()?;
        Some(match selector % 4 {
            1 => u64::from(self.byte()?),
            2 => FRAME_LIMIT - 1 - u64::from(self.byte()? % 4),
            3 => FRAME_LIMIT + u64::from(self.byte()? % 4),
            _ => self.u64()?,
        })
    }

    /// An address's selector and what follows it (the same for guest and host addresses).
    fn addr(&mut self) -> Option<AddrBytes> {
        Some(match self.byte()? % 4 {
            1 | 2 => AddrBytes::Indexed(self.byte()?, self.u16()?),
            3 => AddrBytes::Special(self.byte()?),
            _ => AddrBytes::Raw(self.u64()?),
        })
    }

    fn guest_addr(&mut self) -> Option<GuestAddr> {
        Some(match self.addr()? {
            AddrBytes::Indexed(index, offset) => GuestAddr::Listed { index, offset },
            AddrBytes::Special(pick) => GuestAddr::Raw(match pick % 4 {
                0 => (1 << 52) - 1,
                1 => 1 << 52,
                2 => ((FRAME_LIMIT - 1) << 12) | 0xABC,
                _ => u64::MAX,
            }),
            AddrBytes::Raw(addr) => GuestAddr::Raw(addr),
        })
    }

    fn host_addr(&mut self) -> Option<HostAddr> {
        Some(match self.addr()? {
            AddrBytes::Indexed(index, offset) => HostAddr::Mapped { index, offset },
            AddrBytes::Special(frame) => HostAddr::Raw((u64::from(frame) << 12) | 0x40),
            AddrBytes::Raw(addr) => HostAddr::Raw(addr),
        })
    }

    /// Mostly power-on vCPUs, often restored old-host caps (any count, `CTL_P`), now and
    /// then raw caps or another profile's vCPU (which the domain refuses).
    fn vcpu_spec(&mut self, profile: Profile) -> Option<VcpuSpec> {
        let selector = self.byte()?;
        Some(match selector % 32 {
            20..=29 => {
                let ctl_p = if selector & 0x80 != 0 { 1 << 8 } else { 0 };
                let caps = (super::reference::profile_caps(profile) & !0xFF)
                    | ctl_p
                    | u64::from(self.byte()?);
                VcpuSpec {
                    made_for: profile,
                    caps: Some(caps),
                }
            }
            30 => VcpuSpec {
                made_for: self.profile()?,
                caps: Some(self.u64()?),
            },
            31 => VcpuSpec {
                made_for: self.profile()?,
                caps: None,
            },
            _ => VcpuSpec {
                made_for: profile,
                caps: None,
            },
        })
    }

    /// The setup: profile, host, vCPUs, memory map.
    pub fn setup(&mut self) -> Option<Setup> {
        let profile = self.profile()?;
        let count = 1 + usize::from(self.byte()? % MAX_VCPUS as u8);
        let intel = profile != Profile::Amd;
        let (host_intel, host_caps) = match self.byte()? % 8 {
            0..=4 => (intel, if intel { 0x0F00_0C14 } else { 0x17 }),
            5 | 6 => {
                let needed = match profile {
                    Profile::Intel => 1 << 24,
                    Profile::IntelLmce => (1 << 24) | (1 << 27),
                    Profile::Amd => 0,
                };
                let caps = self.u64()? | needed;
                (intel, if caps & 0xFF == 0 { caps | 1 } else { caps })
            }
            _ => (self.bool()?, self.u64()?),
        };
        let mut vcpus = [VcpuSpec {
            made_for: profile,
            caps: None,
        }; MAX_VCPUS];
        for spec in &mut vcpus[..count] {
            *spec = self.vcpu_spec(profile)?;
        }
        let memory_len = usize::from(self.byte()? % 5);
        let mut memory = [(0, 0); 4];
        for entry in &mut memory[..memory_len] {
            *entry = (self.frame()?, self.frame()?);
        }
        Some(Setup {
            profile,
            host_intel,
            host_caps,
            vcpus,
            count,
            memory,
            memory_len,
        })
    }

    fn format(&mut self) -> Option<Format> {
        Some(Format::ALL[usize::from(self.byte()?) % Format::ALL.len()])
    }

    fn mutation(&mut self) -> Option<Mutation> {
        Some(match self.byte()? % 10 {
            0..=2 => Mutation::Field {
                record: self.byte()?,
                field: self.byte()?,
                value: self.value()?,
            },
            3 => Mutation::Id {
                record: self.byte()?,
                id: match self.byte()? {
                    0xFF => self.u32()?,
                    small => u32::from(small % 6),
                },
            },
            4 => Mutation::Duplicate {
                record: self.byte()?,
            },
            5 => Mutation::Drop {
                record: self.byte()?,
            },
            6 => Mutation::DomainProfile(self.profile()?),
            7 => Mutation::DomainVcpus(u32::from(self.byte()?)),
            8 => Mutation::DomainFrames {
                count: self.byte()? % 65,
                first: self.frame()?,
                stride: u64::from(self.byte()?),
            },
            _ => Mutation::DomainOverflowed,
        })
    }

    pub fn op(&mut self) -> Option<Op> {
        let opcode = OPCODES[usize::from(self.byte()? % 32)];
        Some(match opcode {
            0 => Op::Read {
                vcpu: self.byte()?,
                msr: self.msr()?,
            },
            1 => Op::Write {
                vcpu: self.byte()?,
                msr: self.msr()?,
                value: self.value()?,
            },
            2 => Op::SetUp {
                vcpu: self.byte()?,
                up: self.byte()? % 4 != 0,
            },
            3 => Op::SetCr4 {
                vcpu: self.byte()?,
                mce: self.byte()? % 4 != 0,
            },
            4 => {
                let mcg_status = self.mcg_status()?;
                let banks = 1 + usize::from(self.byte()? % 4);
                let mut errors = [None; 4];
                for error in &mut errors[..banks] {
                    *error = Some(HostBankError {
                        bank: self.byte()? % 36,
                        status: self.status()?,
                        addr: self.host_addr()?,
                        misc: self.misc()?,
                    });
                }
                Op::HostEvent {
                    mcg_status,
                    errors,
                    consumer: self.consumer()?,
                }
            }
            5 => Op::DirectInject(DirectError {
                class: CLASSES[usize::from(self.byte()?) % CLASSES.len()],
                mcg_status: self.mcg_status()?,
                status: self.status()?,
                addr: self.guest_addr()?,
                misc: self.misc()?,
                consumer: self.consumer()?,
            }),
            6 => Op::BrokenAccess {
                addr: self.guest_addr()?,
                fetch: self.bool()?,
                vcpu: self.consumer()?.unwrap_or(0),
            },
            7 => Op::TakePending { vcpu: self.byte()? },
            8 => Op::ClearMcip { vcpu: self.byte()? },
            9 => Op::Reset { vcpu: self.byte()? },
            10 => Op::Save {
                format: self.format()?,
            },
            11 => Op::RestoreStash {
                loader: self.byte()?,
            },
            12 => {
                let entry = match self.byte()? % 8 {
                    0..=2 => Entry::Whole,
                    3 => Entry::NoDomainRecord,
                    4 => Entry::VcpusOnly,
                    5 => Entry::DomainOnly,
                    _ => Entry::OneVcpu { vcpu: self.byte()? },
                };
                let base = match self.byte()? % 3 {
                    0 => Base::Current,
                    1 => Base::PowerOn,
                    _ => Base::Stash,
                };
                let mut mutations = [None; 3];
                let count = usize::from(self.byte()? % 4);
                for mutation in &mut mutations[..count] {
                    *mutation = Some(self.mutation()?);
                }
                Op::Hostile(Hostile {
                    entry,
                    base,
                    mutations,
                })
            }
            13 => Op::Sweep { vcpu: self.byte()? },
            _ => Op::EnableLmce { vcpu: self.byte()? },
        })
    }
}

/// Writes ops in the explicit form [`Input`] reads back exactly (for seeds and tests).
#[derive(Default)]
pub struct Encoder {
    pub bytes: Vec<u8>,
}

impl Encoder {
    fn byte(&mut self, byte: u8) {
        self.bytes.push(byte);
    }

    fn u16(&mut self, value: u16) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    fn profile(&mut self, profile: Profile) {
        self.byte(Profile::ALL.iter().position(|&p| p == profile).unwrap() as u8);
    }

    /// Selector 0 (or 7) is the raw form of every biased field.
    fn raw_u64(&mut self, value: u64) {
        self.byte(0);
        self.u64(value);
    }

    fn consumer(&mut self, consumer: Option<u32>) {
        match consumer {
            None => self.byte(0),
            Some(id) => {
                self.byte(6);
                self.u32(id);
            }
        }
    }

    /// An address by its place in a list (selector 1): the index, the offset.
    fn indexed(&mut self, index: u8, offset: u16) {
        self.byte(1);
        self.byte(index);
        self.u16(offset);
    }

    fn guest_addr(&mut self, addr: GuestAddr) {
        match addr {
            GuestAddr::Raw(addr) => self.raw_u64(addr),
            GuestAddr::Listed { index, offset } => self.indexed(index, offset),
        }
    }

    fn host_addr(&mut self, addr: HostAddr) {
        match addr {
            HostAddr::Raw(addr) => self.raw_u64(addr),
            HostAddr::Mapped { index, offset } => self.indexed(index, offset),
        }
    }

    fn format(&mut self, format: Format) {
        self.byte(Format::ALL.iter().position(|&f| f == format).unwrap() as u8);
    }

    pub fn setup(&mut self, setup: &Setup) {
        self.profile(setup.profile);
        self.byte(setup.count as u8 - 1);
        self.byte(7);
        self.byte(u8::from(setup.host_intel));
        self.u64(setup.host_caps);
        for spec in &setup.vcpus[..setup.count] {
            match spec.caps {
                None => {
                    self.byte(31);
                    self.profile(spec.made_for);
                }
                Some(caps) => {
                    self.byte(30);
                    self.profile(spec.made_for);
                    self.u64(caps);
                }
            }
        }
        self.byte(setup.memory_len as u8);
        for &(host, guest) in &setup.memory[..setup.memory_len] {
            self.raw_u64(host);
            self.raw_u64(guest);
        }
    }

    fn write_bytes(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    fn opcode(&mut self, opcode: u8) {
        self.byte(OPCODES.iter().position(|&o| o == opcode).unwrap() as u8);
    }

    /// `opcode`, then `operands` a byte each.
    fn op_with(&mut self, opcode: u8, operands: &[u8]) {
        self.opcode(opcode);
        self.write_bytes(operands);
    }

    fn mutation(&mut self, mutation: &Mutation) {
        match *mutation {
            Mutation::Field {
                record,
                field,
                value,
            } => {
                self.write_bytes(&[0, record, field]);
                self.raw_u64(value);
            }
            Mutation::Id { record, id } => {
                self.write_bytes(&[3, record, 0xFF]);
                self.u32(id);
            }
            Mutation::Duplicate { record } => self.write_bytes(&[4, record]),
            Mutation::Drop { record } => self.write_bytes(&[5, record]),
            Mutation::DomainProfile(profile) => {
                self.byte(6);
                self.profile(profile);
            }
            Mutation::DomainVcpus(count) => self.write_bytes(&[7, u8::try_from(count).unwrap()]),
            Mutation::DomainFrames {
                count,
                first,
                stride,
            } => {
                self.write_bytes(&[8, count]);
                self.raw_u64(first);
                self.byte(u8::try_from(stride).unwrap());
            }
            Mutation::DomainOverflowed => self.byte(9),
        }
    }

    pub fn op(&mut self, op: &Op) {
        match *op {
            Op::Read { vcpu, msr } => {
                self.op_with(0, &[vcpu, 3]);
                self.u32(msr);
            }
            Op::Write { vcpu, msr, value } => {
                self.op_with(1, &[vcpu, 3]);
                self.u32(msr);
                self.raw_u64(value);
            }
            Op::SetUp { vcpu, up } => self.op_with(2, &[vcpu, u8::from(up)]),
            Op::SetCr4 { vcpu, mce } => self.op_with(3, &[vcpu, u8::from(mce)]),
            Op::HostEvent {
                mcg_status,
                errors,
                consumer,
            } => {
                self.opcode(4);
                self.raw_u64(mcg_status);
                let banks = errors.iter().flatten().count();
                self.byte(banks as u8 - 1);
                for error in errors.iter().flatten() {
                    assert!(error.bank < 36);
                    self.byte(error.bank);
                    self.raw_u64(error.status);
                    self.host_addr(error.addr);
                    self.raw_u64(error.misc);
                }
                self.consumer(consumer);
            }
            Op::DirectInject(error) => {
                self.opcode(5);
                self.byte(CLASSES.iter().position(|&c| c == error.class).unwrap() as u8);
                self.raw_u64(error.mcg_status);
                self.raw_u64(error.status);
                self.guest_addr(error.addr);
                self.raw_u64(error.misc);
                self.consumer(error.consumer);
            }
            Op::BrokenAccess { addr, fetch, vcpu } => {
                self.opcode(6);
                self.guest_addr(addr);
                self.byte(u8::from(fetch));
                self.consumer(Some(vcpu));
            }
            Op::TakePending { vcpu } => self.op_with(7, &[vcpu]),
            Op::ClearMcip { vcpu } => self.op_with(8, &[vcpu]),
            Op::Reset { vcpu } => self.op_with(9, &[vcpu]),
            Op::Save { format } => {
                self.opcode(10);
                self.format(format);
            }
            Op::RestoreStash { loader } => self.op_with(11, &[loader]),
            Op::Hostile(Hostile {
                entry,
                base,
                mutations,
            }) => {
                self.opcode(12);
                match entry {
                    Entry::Whole => self.byte(0),
                    Entry::NoDomainRecord => self.byte(3),
                    Entry::VcpusOnly => self.byte(4),
                    Entry::DomainOnly => self.byte(5),
                    Entry::OneVcpu { vcpu } => self.write_bytes(&[6, vcpu]),
                }
                self.byte(match base {
                    Base::Current => 0,
                    Base::PowerOn => 1,
                    Base::Stash => 2,
                });
                let count = mutations.iter().flatten().count();
                self.byte(count as u8);
                for mutation in mutations.iter().flatten() {
                    self.mutation(mutation);
                }
            }
            Op::Sweep { vcpu } => self.op_with(13, &[vcpu]),
            Op::EnableLmce { vcpu } => self.op_with(14, &[vcpu]),
        }
    }
}
