//! The domain's virtual MCA in migration records: what the source saves and the destination
//! restores, through vmce's record API.
//!
//! | kernel hook                  | vmce                                                        |
//! |------------------------------|-------------------------------------------------------------|
//! | [`save`]                     | `Domain::save`: every vCPU and the domain record in one consistent cut; `native::encode_vcpu` / `encode_domain` or `xen::encode`, always `LossPolicy::Refuse` |
//! | [`IncomingRecords::add`]     | `native::decode` as a V2 loader (it reads V1 too)           |
//! | [`IncomingRecords::restore`] | `Domain::restore`: the domain record and every vCPU, all or nothing |
//!
//! A save holds vmce's domain lock from the first record to the last, so a machine check
//! reflected meanwhile lands wholly before the save (every record has it) or wholly after.

use super::DOMAIN;
use crate::kprintln;
use crate::percpu::MAX_CPUS;
use core::fmt;
use spin::mutex::{SpinMutex, SpinMutexGuard};
use vmce::VcpuSnapshot;
use vmce::record::NativeError;
use vmce::record::native::{self, NativeRecord, NativeVersion};
use vmce::record::xen::{self, XenRelease};
use vmce::record::{LossPolicy, RecordError, SavedDomain, SavedVcpu};

pub use vmce_qemu_protocol::migration::RecordFormat;

/// The longest record of any format.
pub const RECORD_MAX: usize = native::MAX_DOMAIN_RECORD_BYTES;
const _: () = assert!(native::MAX_VCPU_RECORD_BYTES <= RECORD_MAX);
const _: () = assert!(xen::MAX_RECORD_BYTES <= RECORD_MAX);
const _: () = assert!(2 * RECORD_MAX + 16 <= crate::channel::LINE_MAX);

/// One encoded record.
pub type Record = heapless::Vec<u8, RECORD_MAX>;

/// Whose state a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordOwner {
    /// One vCPU.
    Vcpu(u32),
    /// The domain (profile, vCPU count, broken frames).
    Domain,
}

impl fmt::Display for RecordOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vcpu(id) => write!(f, "vCPU {id}"),
            Self::Domain => f.write_str("domain"),
        }
    }
}

/// The outcome of a save: the records in stream order (the domain record first), or, when
/// any record cannot be written without losing state, every refusal and no records at all.
///
/// About 6 KiB: it lives in a static ([`save`] hands out a guard), never on the 32 KiB kernel
/// stack of the timer tick that runs a save.
pub struct Save {
    /// The records to send.
    pub records: heapless::Vec<Record, { MAX_CPUS + 1 }>,
    /// What refused, and vmce's reason.
    pub refusals: heapless::Vec<(RecordOwner, RecordError), { MAX_CPUS + 1 }>,
}

static SAVE: SpinMutex<Save> = SpinMutex::new(Save {
    records: heapless::Vec::new(),
    refusals: heapless::Vec::new(),
});

/// Saves every vCPU and the domain in `format`, logging each saved state under `phase`.
pub fn save(format: RecordFormat, phase: &str) -> SpinMutexGuard<'static, Save> {
    let Some(domain) = DOMAIN.get() else {
        panic!("no domain to save");
    };
    let mut save = SAVE.lock();
    save.records.clear();
    save.refusals.clear();
    // One consistent cut: the guard keeps injections out until the last record is read.
    let cut = domain.save();
    for saved in cut.vcpus() {
        let id = saved.id.0;
        kprintln!(
            "MIG {phase}: saved vCPU {id}: {}",
            ShowSnapshot(&saved.snapshot)
        );
        match encode_vcpu(&saved, format) {
            Ok(record) => {
                let _ = save.records.push(record);
            }
            Err(error) => {
                let _ = save.refusals.push((RecordOwner::Vcpu(id), error));
            }
        }
    }
    let saved_domain = cut.domain();
    drop(cut);
    kprintln!("MIG {phase}: saved domain: {}", ShowDomain(&saved_domain));
    match encode_domain(&saved_domain, format) {
        Ok(Some(record)) => {
            let _ = save.records.insert(0, record);
        }
        Ok(None) => {}
        Err(error) => {
            let _ = save.refusals.push((RecordOwner::Domain, error));
        }
    }
    if !save.refusals.is_empty() {
        save.records.clear();
    }
    save
}

fn encode_vcpu(saved: &SavedVcpu, format: RecordFormat) -> Result<Record, RecordError> {
    let mut buffer = [0u8; RECORD_MAX];
    let encoding = match format {
        RecordFormat::NativeV2 => {
            native::encode_vcpu(saved, NativeVersion::V2, LossPolicy::Refuse, &mut buffer)?
        }
        RecordFormat::NativeV1 => {
            native::encode_vcpu(saved, NativeVersion::V1, LossPolicy::Refuse, &mut buffer)?
        }
        RecordFormat::Xen4_10 => {
            xen::encode(saved, XenRelease::Xen4_10, LossPolicy::Refuse, &mut buffer)?
        }
    };
    to_record(&buffer, encoding.len)
}

/// The domain record, or `None` for a format without one (when it would lose nothing).
fn encode_domain(saved: &SavedDomain, format: RecordFormat) -> Result<Option<Record>, RecordError> {
    let mut buffer = [0u8; RECORD_MAX];
    // Xen has no domain record, exactly like native V1: vmce's V1 rule (write nothing, refuse
    // when broken frames would be lost) is the rule for both.
    let version = match format {
        RecordFormat::NativeV2 => NativeVersion::V2,
        RecordFormat::NativeV1 | RecordFormat::Xen4_10 => NativeVersion::V1,
    };
    let encoding = native::encode_domain(saved, version, LossPolicy::Refuse, &mut buffer)?;
    if encoding.len == 0 {
        return Ok(None);
    }
    to_record(&buffer, encoding.len).map(Some)
}

fn to_record(buffer: &[u8], len: usize) -> Result<Record, RecordError> {
    buffer
        .get(..len)
        .and_then(|bytes| Record::from_slice(bytes).ok())
        .ok_or(RecordError::BufferTooSmall { needed: len })
}

/// Why the destination cannot restore what it received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreError {
    /// vmce refused a record.
    Record(RecordError),
    /// No record for this vCPU: it would start from power-on state and lose what it had.
    MissingVcpu(u32),
    /// Two records for this vCPU.
    DuplicateVcpu(u32),
    /// Two domain records.
    DuplicateDomain,
}

impl From<RecordError> for RestoreError {
    fn from(error: RecordError) -> Self {
        Self::Record(error)
    }
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Record(error) => error.fmt(f),
            Self::MissingVcpu(id) => write!(f, "no record for vCPU {id}"),
            Self::DuplicateVcpu(id) => write!(f, "two records for vCPU {id}"),
            Self::DuplicateDomain => f.write_str("two domain records"),
        }
    }
}

/// The records a destination has received, decoded and checked, not yet restored.
pub struct IncomingRecords {
    vcpus: heapless::Vec<SavedVcpu, MAX_CPUS>,
    domain: Option<SavedDomain>,
}

impl IncomingRecords {
    /// Nothing received yet.
    pub const fn new() -> Self {
        Self {
            vcpus: heapless::Vec::new(),
            domain: None,
        }
    }

    /// Decodes one native record (untrusted input: vmce checks every field against this
    /// domain's profile and vCPU count).
    pub fn add(&mut self, bytes: &[u8]) -> Result<(), RestoreError> {
        let Some(domain) = DOMAIN.get() else {
            panic!("no domain to restore into");
        };
        let count = u32::try_from(domain.vcpus().len()).unwrap_or(u32::MAX);
        let (record, used) = native::decode(bytes, domain.profile(), count, NativeVersion::V2)?;
        if used != bytes.len() {
            return Err(RecordError::Native(NativeError::TrailingBytes {
                extra: bytes.len() - used,
            })
            .into());
        }
        match record {
            NativeRecord::Vcpu(saved) => {
                kprintln!(
                    "MIG restore: record for vCPU {}: {}",
                    saved.id.0,
                    ShowSnapshot(&saved.snapshot)
                );
                if self.vcpus.iter().any(|earlier| earlier.id == saved.id) {
                    return Err(RestoreError::DuplicateVcpu(saved.id.0));
                }
                // Cannot overflow: decode accepted the id, so it is one of MAX_CPUS at most.
                self.vcpus
                    .push(saved)
                    .map_err(|saved| RestoreError::DuplicateVcpu(saved.id.0))
            }
            NativeRecord::Domain(saved) => {
                kprintln!("MIG restore: domain record: {}", ShowDomain(&saved));
                if self.domain.is_some() {
                    return Err(RestoreError::DuplicateDomain);
                }
                self.domain = Some(saved);
                Ok(())
            }
        }
    }

    /// Restores every vCPU (all or nothing, pending #MCs re-armed), then the domain record
    /// (its broken frames join the domain's list). Every vCPU must have a record.
    pub fn restore(&self) -> Result<(), RestoreError> {
        let Some(domain) = DOMAIN.get() else {
            panic!("no domain to restore into");
        };
        for id in (0u32..).take(domain.vcpus().len()) {
            if !self.vcpus.iter().any(|saved| saved.id.0 == id) {
                return Err(RestoreError::MissingVcpu(id));
            }
        }
        if self.domain.is_none() {
            kprintln!("MIG restore: no domain record (a V1 stream): own profile, no broken frames");
        }
        domain
            .restore(self.domain.as_ref(), &self.vcpus)
            .map_err(RecordError::from)?;
        Ok(())
    }
}

/// A vCPU's saved state, one line, machine-readable.
struct ShowSnapshot<'a>(&'a VcpuSnapshot);

impl fmt::Display for ShowSnapshot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = &self.0.state;
        let [_, bank1] = state.banks;
        let [_, ctl2_bank1] = state.mci_ctl2;
        write!(
            f,
            "MCG_STATUS={:#x} MC1_STATUS={:#x} MC1_ADDR={:#x} MC1_MISC={:#x} MC1_CTL2={:#x} pending={}",
            state.mcg_status.bits(),
            bank1.status.bits(),
            bank1.addr,
            bank1.misc,
            ctl2_bank1.bits(),
            if self.0.pending { "yes" } else { "no" }
        )
    }
}

/// A domain record, one line.
struct ShowDomain<'a>(&'a SavedDomain);

impl fmt::Display for ShowDomain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "profile {}, {} vCPUs, broken frames [",
            self.0.profile, self.0.vcpus
        )?;
        for (index, frame) in self.0.broken_frames.iter().enumerate() {
            if index > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{:#x}", frame.0)?;
        }
        f.write_str("]")
    }
}
