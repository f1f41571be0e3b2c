//! Shared test fixtures: host capability sets, the one guest-memory double, a recording
//! `GuestCpus`, the host-backing rule written plainly.
//!
//! Every test binary includes this file (`#[path = "../common/mod.rs"]`), and so do the fuzz
//! targets whose checkers use it (`tests/model`, `tests/host_checks`).
#![allow(dead_code)]

use vmce::broken::BrokenFrameNote;
use vmce::host::HostCapabilities;
use vmce::registers::McgCap;
use vmce::{
    DeliveryMode, Domain, DowngradeReason, GuestCpus, GuestFrame, GuestMemory, HostFrame,
    InjectionReport, Profile, ProfileError, Vcpu, VcpuId, VcpuOutcome, Vendor,
};

/// A Skylake-SP-like Intel host: 20 banks, CMCI_P, TES_P, SER_P, EMC_P, ELOG_P, LMCE_P.
pub const INTEL_HOST_CAP: u64 = 0x0F00_0C14;
/// QEMU's TCG `-cpu max`: 10 banks, CTL_P, SER_P.
pub const QEMU_HOST_CAP: u64 = 0x0100_010A;
/// An AMD host: 23 banks, nothing else.
pub const AMD_HOST_CAP: u64 = 0x0000_0017;

pub fn intel_host() -> HostCapabilities {
    HostCapabilities::new(Vendor::Intel, McgCap::from_bits_retain(INTEL_HOST_CAP))
}

pub fn qemu_host() -> HostCapabilities {
    HostCapabilities::new(Vendor::Intel, McgCap::from_bits_retain(QEMU_HOST_CAP))
}

pub fn amd_host() -> HostCapabilities {
    HostCapabilities::new(Vendor::Amd, McgCap::from_bits_retain(AMD_HOST_CAP))
}

pub fn host_for(profile: Profile) -> HostCapabilities {
    match profile.vendor() {
        Vendor::Intel => intel_host(),
        Vendor::Amd => amd_host(),
    }
}

pub fn domain(profile: Profile, vcpus: usize) -> Domain<Vec<Vcpu>> {
    let list = (0..vcpus).map(|_| Vcpu::new(profile)).collect();
    Domain::new(profile, &host_for(profile), list).expect("profile backed by host")
}

/// The guest's RAM: guest frame g lives at host frame `GUEST_RAM_HOST_FRAME + g`.
pub const GUEST_RAM_HOST_FRAME: u64 = 0x4000;
pub const GUEST_RAM_FRAMES: u64 = 0x1_0000;

/// One host frame of a guest-memory map: owned by the domain at `guest_frame`, or (None) a
/// frame that belongs to someone else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub host_frame: u64,
    pub guest_frame: Option<u64>,
}

/// The guest-memory double of every test: the listed host frames first (the first entry for
/// a frame wins), then every other host frame by `otherwise`.
#[derive(Clone, Copy)]
pub struct MemoryMap<'a> {
    pub listed: &'a [Mapping],
    pub otherwise: fn(u64) -> Option<u64>,
}

/// The guest's RAM only ([`guest_ram`]): what most tests translate through.
pub const OFFSET_MEMORY: MemoryMap<'static> = MemoryMap {
    listed: &[],
    otherwise: guest_ram,
};

/// Guest frame g at host frame `GUEST_RAM_HOST_FRAME + g`, for `GUEST_RAM_FRAMES` frames.
pub fn guest_ram(host_frame: u64) -> Option<u64> {
    let guest = host_frame.checked_sub(GUEST_RAM_HOST_FRAME)?;
    (guest < GUEST_RAM_FRAMES).then_some(guest)
}

impl<'a> MemoryMap<'a> {
    /// The listed frames and nothing else.
    pub fn only(listed: &'a [Mapping]) -> Self {
        Self {
            listed,
            otherwise: |_| None,
        }
    }

    /// The guest frame at `host_frame`, if the guest owns it.
    pub fn lookup(&self, host_frame: u64) -> Option<u64> {
        match self.listed.iter().find(|m| m.host_frame == host_frame) {
            Some(mapping) => mapping.guest_frame,
            None => (self.otherwise)(host_frame),
        }
    }
}

impl GuestMemory for MemoryMap<'_> {
    fn guest_frame(&self, host: HostFrame) -> Option<GuestFrame> {
        self.lookup(host.0).map(GuestFrame)
    }
}

/// What a host must have to back `profile` (docs/behaviour.md §2), written plainly: the
/// profile's vendor, at least one bank, `SER_P` on Intel, and `LMCE_P` for the LMCE profile.
/// The reference model (`tests/model`) and the host checker (`tests/host_checks`) both
/// judge `Domain::new` by it.
pub fn host_backs(profile: Profile, vendor: Vendor, caps: u64) -> Result<(), ProfileError> {
    const SER_P: u64 = 1 << 24;
    const LMCE_P: u64 = 1 << 27;
    let (wanted, needed) = match profile {
        Profile::Intel => (Vendor::Intel, SER_P),
        Profile::IntelLmce => (Vendor::Intel, SER_P | LMCE_P),
        Profile::Amd => (Vendor::Amd, 0),
    };
    if vendor != wanted {
        return Err(ProfileError::VendorMismatch {
            profile,
            host: vendor,
        });
    }
    if caps & 0xFF == 0 {
        return Err(ProfileError::HostWithoutBanks);
    }
    let missing = needed & !caps;
    if missing != 0 {
        return Err(ProfileError::HostLacks {
            profile,
            missing: McgCap::from_bits_retain(missing),
        });
    }
    Ok(())
}

/// An injection's report before any vCPU's outcome is counted (docs/behaviour.md §4): how it
/// is delivered, the data vCPU, the downgrade and the broken-frame note. The reference model
/// and the host checker both start from it, then count each vCPU.
pub fn uncounted_report(
    mode: DeliveryMode,
    data_vcpu: Option<u32>,
    downgraded: Option<DowngradeReason>,
    broken_frame: BrokenFrameNote,
) -> InjectionReport {
    InjectionReport {
        mode,
        data_vcpu: data_vcpu.map(VcpuId),
        delivered: 0,
        skipped: 0,
        shutdown: 0,
        first_shutdown: None,
        overflow: false,
        downgraded,
        broken_frame,
    }
}

/// The data vCPU's `MCG_STATUS` after a delivery (docs/behaviour.md §4), in raw bits: the
/// host's RIPV, EIPV and MCIP, MCIP set, and LMCE_S only for a local delivery.
pub fn data_mcg_status(mode: DeliveryMode, host_mcg_status: u64) -> u64 {
    const RIPV_EIPV_MCIP: u64 = 0x7;
    const MCIP: u64 = 1 << 2;
    const LMCE_S: u64 = 1 << 3;
    let status = (host_mcg_status & RIPV_EIPV_MCIP) | MCIP;
    if mode == DeliveryMode::Local {
        status | LMCE_S
    } else {
        status
    }
}

/// Records every notification; whether each vCPU is up and its CR4.MCE are configurable.
pub struct RecordingCpus {
    pub up: Vec<bool>,
    pub cr4_mce: Vec<bool>,
    pub notified: Vec<(VcpuId, VcpuOutcome)>,
}

impl RecordingCpus {
    pub fn new(vcpus: usize) -> Self {
        Self {
            up: vec![true; vcpus],
            cr4_mce: vec![true; vcpus],
            notified: Vec::new(),
        }
    }
}

impl GuestCpus for RecordingCpus {
    fn is_up(&self, vcpu: VcpuId) -> bool {
        self.up[vcpu.0 as usize]
    }

    fn machine_check_enabled(&self, vcpu: VcpuId) -> bool {
        self.cr4_mce[vcpu.0 as usize]
    }

    fn notify(&mut self, vcpu: VcpuId, outcome: VcpuOutcome) {
        self.notified.push((vcpu, outcome));
    }
}

/// Every vCPU is up with `CR4.MCE` set; nothing is recorded (the injection path of the
/// stress tests).
pub struct AllUp;

impl GuestCpus for AllUp {
    fn is_up(&self, _: VcpuId) -> bool {
        true
    }

    fn machine_check_enabled(&self, _: VcpuId) -> bool {
        true
    }
}

/// A domain of `vcpus` vCPUs under `profile` that tracks up to `N` broken frames.
pub fn domain_with_capacity<const N: usize>(
    profile: Profile,
    vcpus: usize,
) -> Domain<Vec<Vcpu>, N> {
    let list = (0..vcpus).map(|_| Vcpu::new(profile)).collect();
    Domain::with_broken_frames_capacity(profile, &host_for(profile), list)
        .expect("profile backed by host")
}

/// `context` written out again: its header, its records, END. What Xen ignores (END's
/// instance and length, bytes after END) is gone.
pub fn rewritten(context: &vmce::record::hvm::HvmContext<'_>) -> Vec<u8> {
    let mut out = vec![0u8; context.end_offset() + 8];
    let mut writer = vmce::record::hvm::HvmWriter::new(&mut out, context.header()).unwrap();
    for record in context.records() {
        let descriptor = record.descriptor;
        writer
            .push(descriptor.typecode, descriptor.instance, record.payload)
            .unwrap();
    }
    let len = writer.finish().unwrap().len;
    out.truncate(len);
    out
}

/// A native V2 domain record written byte by byte (envelope, then postcard's fields as
/// LEB128 varints), for records no encoder would write.
pub fn raw_domain_record(vendor: u8, lmce: bool, vcpus: u32, frames: &[u64]) -> Vec<u8> {
    let mut payload = vec![vendor, lmce as u8];
    leb128(&mut payload, u64::from(vcpus));
    leb128(&mut payload, frames.len() as u64);
    for &frame in frames {
        leb128(&mut payload, frame);
    }
    envelope(2, 2, &payload) // kind: domain, version 2
}

/// A native vCPU record of `version` (1 or 2) carrying `snapshot`'s registers as they are,
/// checked or not: the LEB128 words of the V1/V2 payload, written by hand.
pub fn raw_vcpu_record(id: u32, snapshot: &vmce::VcpuSnapshot, version: u8) -> Vec<u8> {
    let state = &snapshot.state;
    let [ctl2_0, ctl2_1] = state.mci_ctl2;
    let [_, bank1] = state.banks;
    let mut payload = Vec::new();
    leb128(&mut payload, u64::from(id));
    for word in [
        state.mcg_cap.bits(),
        ctl2_0.bits(),
        ctl2_1.bits(),
        state.mcg_ext_ctl.bits(),
    ] {
        leb128(&mut payload, word);
    }
    if version >= 2 {
        for word in [
            state.mcg_status.bits(),
            bank1.status.bits(),
            bank1.addr,
            bank1.misc,
        ] {
            leb128(&mut payload, word);
        }
        payload.push(u8::from(snapshot.pending));
    }
    envelope(1, version, &payload) // kind: vCPU
}

fn leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn envelope(kind: u8, version: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![kind, version];
    bytes.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}
