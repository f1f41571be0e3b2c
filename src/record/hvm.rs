//! A whole Xen HVM context stream: find the `VMCE_VCPU` records among the others.
//!
//! # Background
//! `xc_domain_hvm_getcontext` returns one blob: a header record (typecode 1, a 24-byte
//! payload starting with the magic `0x54381286` and the format version 1), then records of
//! every type (CPU, LAPIC, MTRR, ..., `VMCE_VCPU`), each an 8-byte descriptor and its
//! payload, then an END record (typecode 0, length 0). vmce skips every other type by its
//! length and reads the `VMCE_VCPU` ones ([`HvmContext::vmce_vcpus`]); [`HvmWriter`] writes
//! such a stream.
//!
//! # Framing as Xen frames it
//! [`HvmContext::parse`] takes and refuses what Xen's `hvm_load` does (facts read in Xen's
//! `xen/arch/x86/hvm/save.c`, formerly `xen/common/hvm/save.c`; the behaviour is
//! reproduced, not the code):
//!
//! | what | Xen | vmce |
//! |---|---|---|
//! | first record | must be the header, loaded at its exact length (24) | [`HvmError::MissingHeader`], [`HvmError::BadHeaderLength`] |
//! | header instance | not looked at | any accepted |
//! | header magic, version | must be `0x54381286` and 1 (`arch_hvm_check`, formerly `arch_hvm_load`) | [`HvmError::BadMagic`], [`HvmError::BadHeaderVersion`] |
//! | header CPUID, TSC kHz | a CPUID mismatch is only logged | not looked at |
//! | a record running past the end | refused | [`RecordError::Truncated`] |
//! | fewer than 8 bytes where a record should start | refused ("did not end") | [`HvmError::MissingEnd`] |
//! | the first record of typecode 0 (END) | ends the load: its instance, its length and every byte after it are ignored | the same ([`HvmContext::end_offset`]) |
//!
//! Xen also refuses a record whose typecode has no load handler (a second header among
//! them); vmce cannot know which types the destination handles and skips every record
//! other than `VMCE_VCPU`. Each `VMCE_VCPU` record loads as [`super::xen`] describes.
//!
//! Floor: records, on [`super::xen`] and the record leaves.

pub use super::wire::{HEADER_PAYLOAD_BYTES, HVM_FILE_VERSION, HVM_MAGIC};

use super::encode::{Encoding, LossPolicy, write_out};
use super::error::{HvmError, RecordError};
use super::fields::StateFields;
use super::xen::{
    self, DESCRIPTOR_BYTES, HvmDescriptor, LoadNotes, VMCE_VCPU_TYPECODE, XenRelease,
    decode_payload, payload_of,
};
use crate::domain::SavedVcpu;
use crate::profile::Profile;

/// Typecode of the header record.
pub const HEADER_TYPECODE: u16 = 1;
/// Typecode of the END record.
pub const END_TYPECODE: u16 = 0;

/// The header record's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HvmHeader {
    /// Format version: [`HVM_FILE_VERSION`] (a stream with another is refused).
    pub version: u32,
    /// The saving hypervisor's changeset.
    pub changeset: u64,
    /// CPUID leaf 1 EAX of the saving host.
    pub cpuid: u32,
    /// The guest's TSC frequency in kHz.
    pub gtsc_khz: u32,
}

impl HvmHeader {
    fn parse(payload: &[u8]) -> Result<HvmHeader, RecordError> {
        let length = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let bytes: &[u8; HEADER_PAYLOAD_BYTES] = payload
            .try_into()
            .map_err(|_| RecordError::Hvm(HvmError::BadHeaderLength { length }))?;
        let [
            m0,
            m1,
            m2,
            m3,
            v0,
            v1,
            v2,
            v3,
            c0,
            c1,
            c2,
            c3,
            c4,
            c5,
            c6,
            c7,
            p0,
            p1,
            p2,
            p3,
            k0,
            k1,
            k2,
            k3,
        ] = *bytes;
        let magic = u32::from_le_bytes([m0, m1, m2, m3]);
        if magic != HVM_MAGIC {
            return Err(RecordError::Hvm(HvmError::BadMagic { found: magic }));
        }
        let version = u32::from_le_bytes([v0, v1, v2, v3]);
        if version != HVM_FILE_VERSION {
            return Err(RecordError::Hvm(HvmError::BadHeaderVersion {
                found: version,
            }));
        }
        Ok(HvmHeader {
            version,
            changeset: u64::from_le_bytes([c0, c1, c2, c3, c4, c5, c6, c7]),
            cpuid: u32::from_le_bytes([p0, p1, p2, p3]),
            gtsc_khz: u32::from_le_bytes([k0, k1, k2, k3]),
        })
    }

    fn to_bytes(self) -> [u8; HEADER_PAYLOAD_BYTES] {
        let mut bytes = [0u8; HEADER_PAYLOAD_BYTES];
        let fields: [&[u8]; 5] = [
            &HVM_MAGIC.to_le_bytes(),
            &self.version.to_le_bytes(),
            &self.changeset.to_le_bytes(),
            &self.cpuid.to_le_bytes(),
            &self.gtsc_khz.to_le_bytes(),
        ];
        let mut at = 0;
        for field in fields {
            if let Some(slot) = bytes.get_mut(at..at + field.len()) {
                slot.copy_from_slice(field);
            }
            at += field.len();
        }
        bytes
    }
}

/// One record of a context stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HvmRecord<'a> {
    /// Its descriptor.
    pub descriptor: HvmDescriptor,
    /// Its payload.
    pub payload: &'a [u8],
}

/// A checked HVM context stream: a valid header, records that each fit, and an END record.
/// Whatever follows END is ignored, as Xen ignores it.
#[derive(Clone, Copy, Debug)]
pub struct HvmContext<'a> {
    header: HvmHeader,
    /// The records between the header and END.
    body: &'a [u8],
    /// Offset just past END's descriptor.
    end_offset: usize,
}

impl<'a> HvmContext<'a> {
    /// Checks the stream's framing as Xen's loader does (see the module documentation).
    ///
    /// # Errors
    /// [`HvmError::MissingHeader`], [`HvmError::BadHeaderLength`],
    /// [`HvmError::BadMagic`], [`HvmError::BadHeaderVersion`],
    /// [`RecordError::Truncated`] (the header or a record running past the end) or
    /// [`HvmError::MissingEnd`].
    pub fn parse(bytes: &'a [u8]) -> Result<HvmContext<'a>, RecordError> {
        let (descriptor, rest) = HvmDescriptor::parse(bytes)?;
        if descriptor.typecode != HEADER_TYPECODE {
            return Err(RecordError::Hvm(HvmError::MissingHeader {
                found: descriptor.typecode,
            }));
        }
        if usize::try_from(descriptor.length).ok() != Some(HEADER_PAYLOAD_BYTES) {
            return Err(RecordError::Hvm(HvmError::BadHeaderLength {
                length: descriptor.length,
            }));
        }
        let payload = payload_of(&descriptor, rest)?;
        let header = HvmHeader::parse(payload)?;
        let body = rest.get(payload.len()..).unwrap_or(&[]);
        let mut cursor = body;
        loop {
            if cursor.len() < DESCRIPTOR_BYTES {
                return Err(RecordError::Hvm(HvmError::MissingEnd));
            }
            let (descriptor, rest) = HvmDescriptor::parse(cursor)?;
            if descriptor.typecode == END_TYPECODE {
                let records = body.len() - cursor.len();
                return Ok(HvmContext {
                    header,
                    body: body.get(..records).unwrap_or(&[]),
                    end_offset: bytes.len() - rest.len(),
                });
            }
            let payload = payload_of(&descriptor, rest)?;
            cursor = rest.get(payload.len()..).unwrap_or(&[]);
        }
    }

    /// Where the stream ends for a loader: the offset just past the END record's
    /// descriptor. END's instance and length, and the bytes from here on, are ignored.
    pub fn end_offset(&self) -> usize {
        self.end_offset
    }

    /// The header.
    pub fn header(&self) -> HvmHeader {
        self.header
    }

    /// Every record between the header and END, in order.
    pub fn records(&self) -> impl Iterator<Item = HvmRecord<'a>> + 'a {
        let mut cursor = self.body;
        core::iter::from_fn(move || {
            // The framing was checked by `parse`; a failure here only ends the walk.
            let (descriptor, rest) = HvmDescriptor::parse(cursor).ok()?;
            let payload = payload_of(&descriptor, rest).ok()?;
            cursor = rest.get(payload.len()..).unwrap_or(&[]);
            Some(HvmRecord {
                descriptor,
                payload,
            })
        })
    }

    /// The `VMCE_VCPU` records, each restored for a destination domain of `vcpus` vCPUs
    /// under `profile` by a `loader`-release loader, with what was dropped from it (as
    /// [`super::xen::decode`]).
    pub fn vmce_vcpus(
        &self,
        profile: Profile,
        vcpus: u32,
        loader: XenRelease,
    ) -> impl Iterator<Item = Result<(SavedVcpu, LoadNotes), RecordError>> + 'a {
        self.records()
            .filter(|record| record.descriptor.typecode == VMCE_VCPU_TYPECODE)
            .map(move |record| {
                decode_payload(
                    record.descriptor.instance,
                    record.payload,
                    profile,
                    vcpus,
                    loader,
                )
            })
    }
}

/// Writes an HVM context stream into a caller's buffer: header, records, END.
#[derive(Debug)]
pub struct HvmWriter<'a> {
    out: &'a mut [u8],
    len: usize,
    dropped: StateFields,
}

impl<'a> HvmWriter<'a> {
    /// Starts a stream with `header`.
    ///
    /// # Errors
    /// [`RecordError::BufferTooSmall`].
    pub fn new(out: &'a mut [u8], header: HvmHeader) -> Result<HvmWriter<'a>, RecordError> {
        let mut writer = HvmWriter {
            out,
            len: 0,
            dropped: StateFields::empty(),
        };
        writer.push(HEADER_TYPECODE, 0, &header.to_bytes())?;
        Ok(writer)
    }

    /// Appends a record of any type.
    ///
    /// # Errors
    /// [`RecordError::BufferTooSmall`]; [`HvmError::BadLength`] for a payload beyond 4 GiB.
    pub fn push(
        &mut self,
        typecode: u16,
        instance: u16,
        payload: &[u8],
    ) -> Result<(), RecordError> {
        let length = u32::try_from(payload.len()).map_err(|_| {
            RecordError::Hvm(HvmError::BadLength {
                length: u32::MAX,
                accepted: u32::MAX,
            })
        })?;
        let descriptor = HvmDescriptor {
            typecode,
            instance,
            length,
        };
        let needed = self
            .len
            .saturating_add(DESCRIPTOR_BYTES)
            .saturating_add(payload.len());
        let tail = self
            .out
            .get_mut(self.len..needed)
            .ok_or(RecordError::BufferTooSmall { needed })?;
        let (head, body) = tail.split_at_mut(DESCRIPTOR_BYTES);
        head.copy_from_slice(&descriptor.to_bytes());
        body.copy_from_slice(payload);
        self.len = needed;
        Ok(())
    }

    /// Appends `saved`'s `VMCE_VCPU` record in `release`'s layout (see [`super::xen::encode`]).
    ///
    /// # Errors
    /// As [`super::xen::encode`].
    pub fn push_vmce(
        &mut self,
        saved: &SavedVcpu,
        release: XenRelease,
        policy: LossPolicy,
    ) -> Result<(), RecordError> {
        let mut record = [0u8; xen::MAX_RECORD_BYTES];
        let encoding = xen::encode(saved, release, policy, &mut record)?;
        let bytes = record.get(..encoding.len).unwrap_or(&[]);
        let needed = self.len.saturating_add(bytes.len());
        let tail = self
            .out
            .get_mut(self.len..)
            .ok_or(RecordError::BufferTooSmall { needed })?;
        write_out(tail, bytes).map_err(|_| RecordError::BufferTooSmall { needed })?;
        self.len = needed;
        self.dropped |= encoding.dropped;
        Ok(())
    }

    /// Appends END; returns the stream's length and everything dropped by lossy records.
    ///
    /// # Errors
    /// [`RecordError::BufferTooSmall`].
    pub fn finish(mut self) -> Result<Encoding, RecordError> {
        self.push(END_TYPECODE, 0, &[])?;
        Ok(Encoding {
            len: self.len,
            dropped: self.dropped,
        })
    }
}
