//! The snapshots and record bytes the record suites share.

use vmce::record::native::{self, NativeVersion};
use vmce::record::{LossPolicy, SavedVcpu};
use vmce::registers::{McgCap, McgExtCtl, McgStatus, MciCtl2, MciStatus};
use vmce::state::GuestBank;
use vmce::{Profile, VcpuId, VcpuMceState, VcpuSnapshot, Vendor};

/// `MCi_CTL2` with `CMCI_EN` and an error threshold of 2.
pub const CMCI_EN_THRESHOLD_2: u64 = 0x4000_0002;

/// An Intel vCPU whose bank 1 has `CMCI_EN` and a threshold (bank 0 is empty).
pub fn intel_with_ctl2() -> VcpuSnapshot {
    let mut state = VcpuMceState::new(Profile::Intel);
    state.mci_ctl2 = [
        MciCtl2::empty(),
        MciCtl2::from_bits_retain(CMCI_EN_THRESHOLD_2),
    ];
    VcpuSnapshot {
        state,
        pending: false,
    }
}

/// [`intel_with_ctl2`] under the LMCE profile, with `LMCE_EN` set.
pub fn lmce_enabled() -> VcpuSnapshot {
    let mut snapshot = intel_with_ctl2();
    snapshot.state = VcpuMceState {
        mcg_cap: Profile::IntelLmce.mcg_cap(),
        mcg_ext_ctl: McgExtCtl::LMCE_EN,
        ..snapshot.state
    };
    snapshot
}

/// [`intel_with_ctl2`] with an error in bank 1, `MCIP|RIPV` and a pending #MC.
pub fn in_flight() -> VcpuSnapshot {
    let mut snapshot = intel_with_ctl2();
    snapshot.state.mcg_status = McgStatus::MCIP | McgStatus::RIPV;
    snapshot.state.banks[1] = GuestBank {
        status: MciStatus::from_bits_retain(0xBD00_0000_0000_00CF),
        addr: 0x0012_3ABC,
        misc: 0x86,
    };
    snapshot.pending = true;
    snapshot
}

/// `snapshot` as vCPU `id`'s record.
pub fn saved(id: u32, snapshot: VcpuSnapshot) -> SavedVcpu {
    SavedVcpu {
        id: VcpuId(id),
        snapshot: snapshot.check(profile_of(&snapshot)).unwrap(),
    }
}

/// The profile a test snapshot belongs to: its vendor, with LMCE when its caps have it.
pub fn profile_of(snapshot: &VcpuSnapshot) -> Profile {
    match snapshot.state.vendor {
        Vendor::Amd => Profile::Amd,
        Vendor::Intel if snapshot.state.mcg_cap.contains(McgCap::LMCE_P) => Profile::IntelLmce,
        Vendor::Intel => Profile::Intel,
    }
}

/// `saved` as a native vCPU record of `version`.
pub fn native_bytes(saved: &SavedVcpu, version: NativeVersion) -> Vec<u8> {
    let mut out = [0u8; native::MAX_VCPU_RECORD_BYTES];
    let encoding = native::encode_vcpu(saved, version, LossPolicy::Refuse, &mut out).unwrap();
    out[..encoding.len].to_vec()
}

/// A `VMCE_VCPU` record (typecode 18) with a payload of exactly `payload` bytes.
pub fn xen_record_bytes(instance: u16, payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![18, 0];
    bytes.extend_from_slice(&instance.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// `words`, little-endian, one after the other.
pub fn le_words(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|word| word.to_le_bytes()).collect()
}

/// A `VMCE_VCPU` record (typecode 18) of `payload`'s words.
pub fn xen_record(instance: u16, payload: &[u64]) -> Vec<u8> {
    xen_record_bytes(instance, &le_words(payload))
}
