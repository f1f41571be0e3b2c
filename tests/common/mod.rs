//! Shared test fixtures: host capability sets, a guest memory map, a recording `GuestCpus`.
#![allow(dead_code)]

use vmce::host::HostCapabilities;
use vmce::registers::McgCap;
use vmce::{
    Domain, GuestCpus, GuestFrame, GuestMemory, HostFrame, Profile, Vcpu, VcpuId, VcpuOutcome,
    Vendor,
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

pub struct OffsetMemory;

impl GuestMemory for OffsetMemory {
    fn guest_frame(&self, host: HostFrame) -> Option<GuestFrame> {
        let guest = host.0.checked_sub(GUEST_RAM_HOST_FRAME)?;
        (guest < GUEST_RAM_FRAMES).then_some(GuestFrame(guest))
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
