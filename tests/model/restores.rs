//! Saves and restores: `Domain::save` in every format against the model's bytes and
//! refusals, the last save decoded by every loader of its family and restored into the live
//! domain, and hostile records restored through every entry point.

use super::accepted_by_both;
use super::harness::{Harness, vendor};
use super::ops::{Base, Entry, Hostile, Mutation};
use super::records::{self, Bytes, Format};
use super::reference::{
    FRAME_CAPACITY, FRAME_LIMIT, MAX_VCPUS, RefDomainRecord, RefRecord, RefVcpu,
};
use vmce::Profile;
use vmce::broken::BrokenFrames;
use vmce::record::RestoreError;
use vmce::record::native::{self, NativeRecord, NativeVersion, RecordKind};
use vmce::record::xen::{self, XenRelease};
use vmce::record::{LoadNotes, LossPolicy, RecordError, SavedDomain, SavedVcpu};
use vmce::registers::{McgCap, McgExtCtl, McgStatus, MciCtl2, MciStatus};
use vmce::state::GuestBank;
use vmce::{GuestFrame, VcpuId, VcpuMceState, VcpuSnapshot};

/// Hostile domain records may carry frames beyond the 52-bit space; vmce refuses them
/// (`FrameOutOfRange`) in `Domain::restore` and `Domain::restore_domain`, as the model
/// expects (`restore_refuses_frames_beyond_52_bits` in `tests/domain/properties.rs`).
pub const HOSTILE_FRAMES_BEYOND_52_BITS: bool = true;

/// The last save that succeeded: its bytes, and the model's state it was taken from.
pub(super) struct Stash {
    pub(super) format: Format,
    pub(super) domain_bytes: Option<Bytes>,
    pub(super) vcpu_bytes: [Bytes; MAX_VCPUS],
    pub(super) records: [RefRecord; MAX_VCPUS],
    pub(super) domain: RefDomainRecord,
}

/// A model record as vmce's `SavedVcpu` (plain field copies), its state checked for
/// `profile` as every record's is before a restore (`VcpuSnapshot::check`).
fn saved_vcpu(profile: Profile, record: &RefRecord) -> Result<SavedVcpu, RecordError> {
    let vcpu = &record.vcpu;
    Ok(SavedVcpu {
        id: VcpuId(record.id),
        snapshot: VcpuSnapshot {
            state: VcpuMceState {
                vendor: vendor(record.intel),
                mcg_cap: McgCap::from_bits_retain(vcpu.mcg_cap),
                mcg_status: McgStatus::from_bits_retain(vcpu.mcg_status),
                mcg_ext_ctl: McgExtCtl::from_bits_retain(vcpu.mcg_ext_ctl),
                mci_ctl2: vcpu.ctl2.map(MciCtl2::from_bits_retain),
                banks: [
                    GuestBank {
                        status: MciStatus::from_bits_retain(record.bank0[0]),
                        addr: record.bank0[1],
                        misc: record.bank0[2],
                    },
                    GuestBank {
                        status: MciStatus::from_bits_retain(vcpu.bank1_status),
                        addr: vcpu.bank1_addr,
                        misc: vcpu.bank1_misc,
                    },
                ],
            },
            pending: vcpu.pending,
        }
        .check(profile)?,
    })
}

/// [`saved_vcpu`] of every record, or the first refusal.
fn saved_vcpus(profile: Profile, records: &[RefRecord]) -> Result<Vec<SavedVcpu>, RecordError> {
    records
        .iter()
        .map(|record| saved_vcpu(profile, record))
        .collect()
}

fn broken_frames<const N: usize>(frames: &[u64], overflowed: bool) -> BrokenFrames<N> {
    let mut list: BrokenFrames<N> = frames.iter().map(|&frame| GuestFrame(frame)).collect();
    if overflowed {
        // One frame more than the list holds marks it overflowed.
        let mut extra = u64::MAX;
        while list.contains(GuestFrame(extra)) {
            extra -= 1;
        }
        list.insert(GuestFrame(extra));
        assert!(list.overflowed(), "only a full list overflows");
    }
    list
}

pub(super) fn frames_of<const N: usize>(list: &BrokenFrames<N>) -> impl Iterator<Item = u64> + '_ {
    list.iter().map(|frame| frame.0)
}

/// Sets field `field` (mod 13) of a record: 0 `MCG_CAP`, 1 `MCG_STATUS`, 2 `MCG_EXT_CTL`,
/// 3/4 `MCi_CTL2`, 5/6/7 bank 1, 8/9/10 bank 0, 11 the vendor flipped, 12 the pending flag.
fn set_field(record: &mut RefRecord, field: u8, value: u64) {
    let vcpu = &mut record.vcpu;
    match field % 13 {
        0 => vcpu.mcg_cap = value,
        1 => vcpu.mcg_status = value,
        2 => vcpu.mcg_ext_ctl = value,
        3 => vcpu.ctl2[0] = value,
        4 => vcpu.ctl2[1] = value,
        5 => vcpu.bank1_status = value,
        6 => vcpu.bank1_addr = value,
        7 => vcpu.bank1_misc = value,
        8 => record.bank0[0] = value,
        9 => record.bank0[1] = value,
        10 => record.bank0[2] = value,
        11 => record.intel = !record.intel,
        _ => vcpu.pending = value & 1 == 1,
    }
}

impl Harness {
    /// `Domain::save` in `format`: the domain record and every vCPU record, each either the
    /// model's bytes or the model's refusal. A save without a refusal becomes the stash.
    pub(super) fn save(&mut self, format: Format) -> Result<(), String> {
        let save = self.domain.save();
        let domain_version = match format {
            Format::Xen(_) | Format::Native(NativeVersion::V1) => NativeVersion::V1,
            Format::Native(NativeVersion::V2) => NativeVersion::V2,
        };
        let got = native::encode_domain(
            &save.domain(),
            domain_version,
            LossPolicy::Refuse,
            &mut self.buffer,
        );
        let expected = records::domain_record(&self.model, format);
        let mut refused = false;
        let mut domain_bytes = None;
        match accepted_by_both(format_args!("{format:?} domain record"), got, expected)? {
            None => refused = true,
            Some((encoding, None)) => {
                ensure!(
                    encoding.len == 0 && encoding.dropped.is_empty(),
                    "{format:?} domain record: vmce wrote {encoding:?}, model none"
                )
            }
            Some((encoding, Some(bytes))) => {
                ensure!(
                    self.buffer[..encoding.len] == *bytes.as_slice() && encoding.dropped.is_empty(),
                    "{format:?} domain record:\n vmce  {:x?}\n model {:x?}",
                    &self.buffer[..encoding.len],
                    bytes.as_slice()
                );
                domain_bytes = Some(bytes);
            }
        }
        let mut vcpu_bytes = [Bytes::EMPTY; MAX_VCPUS];
        let mut saved_count = 0;
        for saved in save.vcpus() {
            let id = saved.id.0 as usize;
            ensure!(
                id == saved_count,
                "save yields vCPU {id} in place {saved_count}"
            );
            saved_count += 1;
            let got = match format {
                Format::Xen(release) => {
                    xen::encode(&saved, release, LossPolicy::Refuse, &mut self.buffer)
                }
                Format::Native(version) => {
                    native::encode_vcpu(&saved, version, LossPolicy::Refuse, &mut self.buffer)
                }
            };
            let expected = records::vcpu_record(saved.id.0, &self.model.vcpus[id], format);
            let what = format_args!("{format:?} record of vCPU {id}");
            match accepted_by_both(what, got, expected)? {
                None => refused = true,
                Some((encoding, bytes)) => {
                    ensure!(
                        self.buffer[..encoding.len] == *bytes.as_slice()
                            && encoding.dropped.is_empty(),
                        "{format:?} record of vCPU {id}:\n vmce  {:x?}\n model {:x?}",
                        &self.buffer[..encoding.len],
                        bytes.as_slice()
                    );
                    vcpu_bytes[id] = bytes;
                }
            }
        }
        drop(save);
        ensure!(saved_count == self.count, "save yields {saved_count} vCPUs");
        if refused {
            self.stats.saves_refused += 1;
            return Ok(());
        }
        self.stats.saves += 1;
        self.stash = Some(Stash {
            format,
            domain_bytes,
            vcpu_bytes,
            records: self.current_records(),
            domain: self.current_domain_record(),
        });
        Ok(())
    }

    fn current_records(&self) -> [RefRecord; MAX_VCPUS] {
        std::array::from_fn(|id| RefRecord {
            id: id as u32,
            intel: self.model.intel(),
            vcpu: self.model.vcpus[id],
            bank0: [0; 3],
        })
    }

    fn current_domain_record(&self) -> RefDomainRecord {
        let mut frames = [0; 64];
        frames[..self.model.frames_len].copy_from_slice(self.model.frames());
        RefDomainRecord {
            profile: self.profile,
            vcpus: self.count as u32,
            frames,
            frames_len: self.model.frames_len,
            overflowed: false,
        }
    }

    /// Decodes the stash with a loader of its family (each record must decode to exactly
    /// the model's state, or be refused as the model says) and restores it into the live
    /// domain.
    pub(super) fn restore_stash(&mut self, loader: u8) -> Result<(), String> {
        let Some(stash) = &self.stash else {
            return Ok(());
        };
        let loader = match stash.format {
            Format::Xen(_) => Format::Xen(XenRelease::ALL[usize::from(loader) % 3]),
            Format::Native(_) => Format::Native(NativeVersion::ALL[usize::from(loader) % 2]),
        };
        let count = self.count as u32;
        let mut saved = [None::<SavedVcpu>; MAX_VCPUS];
        let mut saved_domain: Option<SavedDomain<FRAME_CAPACITY>> = None;
        let mut refused = false;
        if let (Some(bytes), Format::Native(version)) = (&stash.domain_bytes, loader) {
            let got = native::decode_with_capacity::<FRAME_CAPACITY>(
                bytes.as_slice(),
                self.profile,
                count,
                version,
            );
            let expected = records::loader_takes(stash.format, loader, 0, RecordKind::Domain);
            match accepted_by_both(format_args!("domain record by {loader:?}"), got, expected)? {
                None => refused = true,
                Some(((NativeRecord::Domain(domain), len), ())) => {
                    ensure!(
                        len == bytes.len
                            && domain.profile == self.profile
                            && domain.vcpus == count
                            && !domain.broken_frames.overflowed()
                            && frames_of(&domain.broken_frames).eq(stash
                                .domain
                                .frames()
                                .iter()
                                .copied()),
                        "decoded domain record {domain:x?} ({len} bytes), model {:x?}",
                        stash.domain
                    );
                    saved_domain = Some(domain);
                }
                Some((other, ())) => {
                    return Err(format!("domain record by {loader:?}: vmce {other:x?}"));
                }
            }
        }
        for (id, slot) in saved.iter_mut().enumerate().take(self.count) {
            let bytes = stash.vcpu_bytes[id].as_slice();
            let record = &stash.records[id];
            let expected =
                records::loader_takes(stash.format, loader, record.vcpu.mcg_cap, RecordKind::Vcpu);
            let got = match loader {
                Format::Xen(release) => xen::decode(bytes, self.profile, count, release),
                Format::Native(version) => {
                    match native::decode_with_capacity::<FRAME_CAPACITY>(
                        bytes,
                        self.profile,
                        count,
                        version,
                    ) {
                        Ok((NativeRecord::Vcpu(vcpu), len)) => Ok((vcpu, len, LoadNotes::NONE)),
                        Ok((other, _)) => return Err(format!("vCPU {id} decoded as {other:x?}")),
                        Err(error) => Err(error),
                    }
                }
            };
            match accepted_by_both(format_args!("vCPU {id} by {loader:?}"), got, expected)? {
                None => refused = true,
                Some(((vcpu, len, notes), ())) => {
                    let wanted = saved_vcpu(self.profile, record).map_err(|error| {
                        format!("vCPU {id}: the model's record refused: {error}")
                    })?;
                    ensure!(
                        vcpu == wanted && len == bytes.len() && notes.is_empty(),
                        "vCPU {id} decoded by {loader:?}:\n vmce  {vcpu:x?} ({len} bytes, {notes})\n model {wanted:x?}"
                    );
                    *slot = Some(vcpu);
                }
            }
        }
        if refused {
            self.stats.stash_refused += 1;
            return Ok(());
        }
        let vcpus: [SavedVcpu; MAX_VCPUS] = std::array::from_fn(|id| {
            saved[id].unwrap_or(SavedVcpu {
                id: VcpuId(0),
                snapshot: VcpuSnapshot {
                    state: VcpuMceState::new(self.profile),
                    pending: false,
                }
                .check(self.profile)
                .expect("power-on state"),
            })
        });
        let got = self
            .domain
            .restore(saved_domain.as_ref(), &vcpus[..self.count])
            .map_err(RecordError::from);
        let model_domain = saved_domain.as_ref().map(|_| stash.domain);
        let records = stash.records;
        let expected = self
            .model
            .restore(model_domain.as_ref(), &records[..self.count]);
        ensure!(
            got == expected,
            "restore of the stash: vmce {got:?}, model {expected:?}"
        );
        self.count_restore(got, true);
        Ok(())
    }

    fn count_restore(&mut self, result: Result<(), RecordError>, stash: bool) {
        match (result, stash) {
            (Ok(()), true) => self.stats.stash_restored += 1,
            (Ok(()), false) => self.stats.hostile_restored += 1,
            (Err(error), _) => {
                if stash {
                    self.stats.stash_refused += 1;
                } else {
                    self.stats.hostile_refused += 1;
                }
                match error {
                    RecordError::Restore(RestoreError::BrokenFramesCapacity { .. }) => {
                        self.stats.capacity_refused += 1
                    }
                    RecordError::Restore(RestoreError::MissingVcpu { .. }) => {
                        self.stats.missing_vcpu += 1
                    }
                    _ => {}
                }
            }
        }
    }

    /// Records built from the model's state, changed by the mutations, restored through one
    /// entry point: the result must be the model's, and a refusal must change nothing (the
    /// comparison after the step checks every register, pending flag and frame).
    pub(super) fn hostile(&mut self, hostile: &Hostile) -> Result<(), String> {
        let mut records = [RefRecord {
            id: 0,
            intel: true,
            vcpu: RefVcpu::default(),
            bank0: [0; 3],
        }; 2 * MAX_VCPUS];
        let mut domain = self.current_domain_record();
        match (hostile.base, &self.stash) {
            (Base::Stash, Some(stash)) => {
                records[..MAX_VCPUS].copy_from_slice(&stash.records);
                domain = stash.domain;
            }
            (Base::PowerOn, _) => {
                for (record, current) in records.iter_mut().zip(self.current_records()) {
                    *record = RefRecord {
                        vcpu: RefVcpu::power_on(current.vcpu.mcg_cap),
                        ..current
                    };
                }
                domain.frames_len = 0;
            }
            _ => records[..MAX_VCPUS].copy_from_slice(&self.current_records()),
        }
        let mut len = self.count;
        for mutation in hostile.mutations.iter().flatten() {
            match *mutation {
                Mutation::Field {
                    record,
                    field,
                    value,
                } if len > 0 => set_field(&mut records[usize::from(record) % len], field, value),
                Mutation::Id { record, id } if len > 0 => {
                    records[usize::from(record) % len].id = id
                }
                Mutation::Duplicate { record } if len > 0 && len < records.len() => {
                    records[len] = records[usize::from(record) % len];
                    len += 1;
                }
                Mutation::Drop { record } if len > 0 => {
                    let index = usize::from(record) % len;
                    records.copy_within(index + 1..len, index);
                    len -= 1;
                }
                Mutation::DomainProfile(profile) => domain.profile = profile,
                Mutation::DomainVcpus(vcpus) => domain.vcpus = vcpus,
                Mutation::DomainFrames {
                    count,
                    first,
                    stride,
                } => {
                    domain.frames_len = 0;
                    for index in 0..u64::from(count) {
                        let mut frame = first.wrapping_add(index.wrapping_mul(stride));
                        if !HOSTILE_FRAMES_BEYOND_52_BITS {
                            frame %= FRAME_LIMIT;
                        }
                        if !domain.frames().contains(&frame) {
                            domain.frames[domain.frames_len] = frame;
                            domain.frames_len += 1;
                        }
                    }
                    domain.overflowed = false;
                }
                Mutation::DomainOverflowed => {
                    // An overflowed list is a full one: exactly FRAME_CAPACITY frames.
                    domain.frames_len = domain.frames_len.min(FRAME_CAPACITY);
                    let mut next = 0x1000;
                    while domain.frames_len < FRAME_CAPACITY {
                        if !domain.frames().contains(&next) {
                            domain.frames[domain.frames_len] = next;
                            domain.frames_len += 1;
                        }
                        next += 1;
                    }
                    domain.overflowed = true;
                }
                _ => {}
            }
        }
        let records = &records[..len];
        let (got, expected) = if domain.overflowed {
            let list = broken_frames::<FRAME_CAPACITY>(domain.frames(), true);
            self.restore_through(hostile.entry, &domain, list, records)
        } else {
            let list = broken_frames::<64>(domain.frames(), false);
            self.restore_through(hostile.entry, &domain, list, records)
        };
        ensure!(
            got == expected,
            "hostile restore {:?} of {records:x?} with {domain:x?}: vmce {got:?}, model {expected:?}",
            hostile.entry
        );
        self.count_restore(got, false);
        Ok(())
    }

    fn restore_through<const M: usize>(
        &mut self,
        entry: Entry,
        domain: &RefDomainRecord,
        list: BrokenFrames<M>,
        records: &[RefRecord],
    ) -> (Result<(), RecordError>, Result<(), RecordError>) {
        let saved_domain = SavedDomain::<M> {
            profile: domain.profile,
            vcpus: domain.vcpus,
            broken_frames: list,
        };
        let profile = self.profile;
        let live = &self.domain;
        let restore_all = |whole: Option<&SavedDomain<M>>| {
            let saved = saved_vcpus(profile, records)?;
            match whole {
                Some(saved_domain) => live.restore(Some(saved_domain), &saved),
                None => live.restore_vcpus(&saved),
            }
            .map_err(RecordError::from)
        };
        match entry {
            Entry::Whole => (
                restore_all(Some(&saved_domain)),
                self.model.restore(Some(domain), records),
            ),
            Entry::NoDomainRecord | Entry::VcpusOnly => {
                (restore_all(None), self.model.restore(None, records))
            }
            Entry::DomainOnly => (
                live.restore_domain(&saved_domain)
                    .map_err(RecordError::from),
                self.model.restore_domain(domain),
            ),
            Entry::OneVcpu { vcpu } => {
                let Some(record) = records.first() else {
                    return (Ok(()), Ok(()));
                };
                let id = self.vcpu(vcpu);
                (
                    saved_vcpu(profile, record)
                        .map(|first| self.domain.vcpus()[id].restore(&first.snapshot)),
                    self.model.restore_one(id, record),
                )
            }
        }
    }
}
