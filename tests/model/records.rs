//! What each save format carries and the exact bytes it is written as, by hand
//! (docs/behaviour.md §5, the tables of `src/record/mod.rs`, `xen.rs` and `native.rs`):
//! Xen's `VMCE_VCPU` descriptor and little-endian words, vmce's native envelope and
//! postcard payloads (LEB128 varints, `u8` and `bool` as one byte, a sequence as its varint
//! length and its elements).

use super::reference::{LMCE_P, RefDomain, RefVcpu};
use vmce::Profile;
use vmce::record::native::{NativeVersion, RecordKind};
use vmce::record::xen::XenRelease;
use vmce::record::{HvmError, NativeError};
use vmce::record::{RecordError, StateFields};

/// A save format the model knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Xen(XenRelease),
    Native(NativeVersion),
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::Xen(XenRelease::Xen4_2),
        Format::Xen(XenRelease::Xen4_3),
        Format::Xen(XenRelease::Xen4_10),
        Format::Native(NativeVersion::V1),
        Format::Native(NativeVersion::V2),
    ];

    /// The state groups a vCPU record of the format carries (`MCG_CAP` always):
    /// 4.2 nothing more; 4.3 `MCi_CTL2`; 4.10 and V1 also `MCG_EXT_CTL`; V2 everything.
    pub fn carries(self) -> StateFields {
        match self {
            Format::Xen(XenRelease::Xen4_2) => StateFields::empty(),
            Format::Xen(XenRelease::Xen4_3) => StateFields::MCI_CTL2,
            Format::Xen(XenRelease::Xen4_10) | Format::Native(NativeVersion::V1) => {
                StateFields::MCI_CTL2 | StateFields::MCG_EXT_CTL
            }
            Format::Native(NativeVersion::V2) => {
                StateFields::MCI_CTL2
                    | StateFields::MCG_EXT_CTL
                    | StateFields::MCG_STATUS
                    | StateFields::BANK1
                    | StateFields::PENDING
            }
        }
    }
}

/// One encoded record: up to 96 bytes (a V2 vCPU record is at most 90, a domain record of 4
/// frames 61, a Xen record 40).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bytes {
    pub buf: [u8; 96],
    pub len: usize,
}

impl Bytes {
    pub const EMPTY: Bytes = Bytes {
        buf: [0; 96],
        len: 0,
    };

    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn push(&mut self, byte: u8) {
        self.buf[self.len] = byte;
        self.len += 1;
    }

    fn push_all(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.push(byte);
        }
    }

    fn varint(&mut self, mut value: u64) {
        loop {
            let low = (value & 0x7F) as u8;
            value >>= 7;
            if value == 0 {
                self.push(low);
                return;
            }
            self.push(low | 0x80);
        }
    }
}

/// A vCPU record in `format`, or why the save refuses it (under `LossPolicy::Refuse`):
/// first what the format cannot carry, then (Xen before 4.10) `LMCE_P`.
pub fn vcpu_record(id: u32, vcpu: &RefVcpu, format: Format) -> Result<Bytes, RecordError> {
    let lost = vcpu.present().difference(format.carries());
    if !lost.is_empty() {
        return Err(RecordError::WouldLose { fields: lost });
    }
    let mut out = Bytes::EMPTY;
    match format {
        Format::Xen(release) => {
            if release != XenRelease::Xen4_10 && vcpu.mcg_cap & LMCE_P != 0 {
                return Err(RecordError::Hvm(HvmError::LmceBeforeXen410));
            }
            let words = match release {
                XenRelease::Xen4_2 => 1,
                XenRelease::Xen4_3 => 3,
                XenRelease::Xen4_10 => 4,
            };
            out.push_all(&18u16.to_le_bytes());
            out.push_all(&(id as u16).to_le_bytes());
            out.push_all(&(8 * words as u32).to_le_bytes());
            let all = [vcpu.mcg_cap, vcpu.ctl2[0], vcpu.ctl2[1], vcpu.mcg_ext_ctl];
            for word in &all[..words] {
                out.push_all(&word.to_le_bytes());
            }
        }
        Format::Native(version) => {
            let mut payload = Bytes::EMPTY;
            payload.varint(u64::from(id));
            payload.varint(vcpu.mcg_cap);
            payload.varint(vcpu.ctl2[0]);
            payload.varint(vcpu.ctl2[1]);
            payload.varint(vcpu.mcg_ext_ctl);
            if version == NativeVersion::V2 {
                payload.varint(vcpu.mcg_status);
                payload.varint(vcpu.bank1_status);
                payload.varint(vcpu.bank1_addr);
                payload.varint(vcpu.bank1_misc);
                payload.push(u8::from(vcpu.pending));
            }
            out.push(1);
            out.push(version as u8);
            out.push_all(&(payload.len as u16).to_le_bytes());
            out.push_all(payload.as_slice());
        }
    }
    Ok(out)
}

/// The domain record that goes with a save in `format`: none for Xen's layouts and V1 (which
/// then refuse when broken frames would be lost), a V2 record otherwise (refused when the
/// list overflowed: a frame no record can carry).
pub fn domain_record(domain: &RefDomain, format: Format) -> Result<Option<Bytes>, RecordError> {
    match format {
        Format::Xen(_) | Format::Native(NativeVersion::V1) => {
            if domain.frames_len != 0 || domain.overflowed {
                Err(RecordError::WouldLose {
                    fields: StateFields::BROKEN_FRAMES,
                })
            } else {
                Ok(None)
            }
        }
        Format::Native(NativeVersion::V2) => {
            if domain.overflowed {
                return Err(RecordError::Native(NativeError::BrokenFramesOverflowed));
            }
            let mut payload = Bytes::EMPTY;
            payload.push(if domain.intel() { 0 } else { 1 });
            payload.push(u8::from(domain.profile == Profile::IntelLmce));
            payload.varint(domain.count as u64);
            payload.varint(domain.frames_len as u64);
            for &frame in domain.frames() {
                payload.varint(frame);
            }
            let mut out = Bytes::EMPTY;
            out.push(2);
            out.push(2);
            out.push_all(&(payload.len as u16).to_le_bytes());
            out.push_all(payload.as_slice());
            Ok(Some(out))
        }
    }
}

/// Whether a loader takes a record written in `written`: Xen 4.2 takes exactly its 8 bytes,
/// 4.3 and 4.10 any length up to their own, and `LMCE_P` only from 4.10 on; a native loader
/// takes versions up to its own.
pub fn loader_takes(
    written: Format,
    loader: Format,
    mcg_cap: u64,
    kind: RecordKind,
) -> Result<(), RecordError> {
    match (written, loader) {
        (Format::Xen(from), Format::Xen(to)) => {
            let length = match from {
                XenRelease::Xen4_2 => 8,
                XenRelease::Xen4_3 => 24,
                XenRelease::Xen4_10 => 32,
            };
            let accepted = match to {
                XenRelease::Xen4_2 => 8,
                XenRelease::Xen4_3 => 24,
                XenRelease::Xen4_10 => 32,
            };
            let takes = match to {
                XenRelease::Xen4_2 => length == 8,
                _ => length <= accepted,
            };
            if !takes {
                return Err(RecordError::Hvm(HvmError::BadLength { length, accepted }));
            }
            if to != XenRelease::Xen4_10 && mcg_cap & LMCE_P != 0 {
                return Err(RecordError::Hvm(HvmError::LmceBeforeXen410));
            }
            Ok(())
        }
        (Format::Native(from), Format::Native(to)) => {
            if from as u8 > to as u8 {
                return Err(RecordError::Native(NativeError::UnsupportedVersion {
                    kind,
                    version: from as u8,
                    newest: to as u8,
                }));
            }
            Ok(())
        }
        _ => unreachable!("a loader of the record's own family"),
    }
}
