//! Xen's HVM context streams (docs/behaviour.md §5): the walk to every `VMCE_VCPU` record,
//! framing errors, the header check, and END ending the load.

use crate::shared::{intel_with_ctl2, saved, xen_record};
use vmce::record::HvmError;
use vmce::record::hvm::{HvmContext, HvmHeader, HvmWriter};
use vmce::record::xen::XenRelease;
use vmce::record::{LoadNotes, LossPolicy, RecordError, SavedVcpu};
use vmce::{Profile, VcpuMceState, VcpuSnapshot};

const HEADER: HvmHeader = HvmHeader {
    version: 1,
    changeset: 0x1234_5678,
    cpuid: 0x0005_0654,
    gtsc_khz: 2_000_000,
};

fn context(vcpus: &[SavedVcpu], release: XenRelease) -> Vec<u8> {
    let mut out = vec![0u8; 4096];
    let mut writer = HvmWriter::new(&mut out, HEADER).unwrap();
    writer.push(2, 0, &[0xAA; 1024]).unwrap(); // CPU
    for vcpu in vcpus {
        writer.push(3, vcpu.id.0 as u16, &[0x55; 3]).unwrap(); // odd lengths are skipped too
        writer.push_vmce(vcpu, release, LossPolicy::Refuse).unwrap();
    }
    writer.push(5, 0, &[]).unwrap();
    let len = writer.finish().unwrap().len;
    out.truncate(len);
    out
}

#[test]
fn hvm_context_walk_finds_every_vmce_record() {
    let vcpus = [
        saved(0, intel_with_ctl2()),
        saved(
            1,
            VcpuSnapshot {
                state: VcpuMceState::new(Profile::Intel),
                pending: false,
            },
        ),
    ];
    let blob = context(&vcpus, XenRelease::Xen4_10);
    let parsed = HvmContext::parse(&blob).unwrap();
    assert_eq!(parsed.header(), HEADER);
    assert_eq!(parsed.records().count(), 1 + 2 * 2 + 1);
    let restored: Vec<_> = parsed
        .vmce_vcpus(Profile::Intel, 2, XenRelease::Xen4_10)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        restored,
        vcpus.map(|vcpu| (vcpu, LoadNotes::NONE)),
        "nothing dropped"
    );
    assert_eq!(parsed.end_offset(), blob.len());
    // A 4.3 loader refuses the 4.10 records inside the stream.
    assert!(
        parsed
            .vmce_vcpus(Profile::Intel, 2, XenRelease::Xen4_3)
            .all(|record| matches!(
                record,
                Err(RecordError::Hvm(HvmError::BadLength { length: 32, .. }))
            ))
    );
}

#[test]
fn hvm_context_framing_errors_are_named() {
    let blob = context(&[saved(0, intel_with_ctl2())], XenRelease::Xen4_3);
    // Every truncation is an error, never a panic or a partial walk.
    for cut in 0..blob.len() {
        let error = HvmContext::parse(&blob[..cut]).unwrap_err();
        assert!(
            matches!(
                error,
                RecordError::Truncated { .. } | RecordError::Hvm(HvmError::MissingEnd)
            ),
            "cut at {cut}: {error:?}"
        );
    }
    // Running out before END: no room for a descriptor, or nothing at all.
    assert_eq!(
        HvmContext::parse(&blob[..blob.len() - 1]).unwrap_err(),
        RecordError::Hvm(HvmError::MissingEnd)
    );
    assert_eq!(
        HvmContext::parse(&blob[..blob.len() - 8]).unwrap_err(),
        RecordError::Hvm(HvmError::MissingEnd)
    );
    let mut bad_magic = blob.clone();
    bad_magic[8] ^= 1;
    assert_eq!(
        HvmContext::parse(&bad_magic).unwrap_err(),
        RecordError::Hvm(HvmError::BadMagic { found: 0x5438_1287 })
    );
    let mut no_header = blob.clone();
    no_header[0] = 18;
    assert_eq!(
        HvmContext::parse(&no_header).unwrap_err(),
        RecordError::Hvm(HvmError::MissingHeader { found: 18 })
    );
    // A record whose length runs past the end of the stream.
    let mut overlong = blob.clone();
    overlong[8 + 24 + 4..8 + 24 + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        HvmContext::parse(&overlong).unwrap_err(),
        RecordError::Truncated { .. }
    ));
}

/// Xen loads the header with a strict-length entry load and checks its magic and version
/// (`HVM_FILE_VERSION`, 1), not its instance. (Before: any version and only instance 0.)
#[test]
fn hvm_header_is_checked_as_xen_checks_it() {
    let blob = context(&[saved(0, intel_with_ctl2())], XenRelease::Xen4_10);
    for version in [0u32, 2, u32::MAX] {
        let mut other_version = blob.clone();
        other_version[12..16].copy_from_slice(&version.to_le_bytes());
        let error = HvmContext::parse(&other_version).unwrap_err();
        assert_eq!(
            error,
            RecordError::Hvm(HvmError::BadHeaderVersion { found: version })
        );
        assert!(error.to_string().contains("expected 1"), "{error}");
    }
    // The writer writes what it is given; the loader refuses it.
    let mut out = [0u8; 256];
    let header = HvmHeader {
        version: 2,
        ..HEADER
    };
    let len = HvmWriter::new(&mut out, header)
        .unwrap()
        .finish()
        .unwrap()
        .len;
    assert_eq!(
        HvmContext::parse(&out[..len]).unwrap_err(),
        RecordError::Hvm(HvmError::BadHeaderVersion { found: 2 })
    );
    // Any instance: Xen does not look at it.
    let mut header_instance = blob.clone();
    header_instance[2..4].copy_from_slice(&0x1234u16.to_le_bytes());
    let parsed = HvmContext::parse(&header_instance).unwrap();
    assert_eq!(parsed.header(), HEADER);
    assert_eq!(
        parsed
            .vmce_vcpus(Profile::Intel, 1, XenRelease::Xen4_10)
            .count(),
        1
    );
    // Exactly 24 bytes: a longer or shorter header record is refused, even when the first 24
    // bytes are a valid header.
    for length in [0u32, 16, 23, 25, 32] {
        let mut resized = blob[..8].to_vec();
        resized[4..8].copy_from_slice(&length.to_le_bytes());
        let mut payload = blob[8..32].to_vec();
        payload.resize(length as usize, 0);
        resized.extend_from_slice(&payload);
        resized.extend_from_slice(&blob[32..]);
        assert_eq!(
            HvmContext::parse(&resized).unwrap_err(),
            RecordError::Hvm(HvmError::BadHeaderLength { length }),
            "{length}"
        );
    }
}

/// Xen's load stops at the first record whose typecode is END and ignores END's instance,
/// its length and every byte after it. (Before: refused as BadEnd or TrailingBytes.)
#[test]
fn hvm_end_stops_the_load_and_what_follows_is_ignored() {
    let vcpus = [saved(0, intel_with_ctl2())];
    let blob = context(&vcpus, XenRelease::Xen4_10);
    let expected = vec![(vcpus[0], LoadNotes::NONE)];
    let walk = |bytes: &[u8]| {
        let parsed = HvmContext::parse(bytes).unwrap();
        assert_eq!(parsed.header(), HEADER);
        let restored: Vec<_> = parsed
            .vmce_vcpus(Profile::Intel, 1, XenRelease::Xen4_10)
            .collect::<Result<_, _>>()
            .unwrap();
        (restored, parsed.records().count(), parsed.end_offset())
    };
    let canonical = walk(&blob);
    assert_eq!(canonical, (expected, 4, blob.len()));

    let mut trailing = blob.clone();
    trailing.extend_from_slice(&[0xEE; 3]);
    assert_eq!(walk(&trailing), canonical);

    let mut end_with_instance_and_length = blob.clone();
    let end = end_with_instance_and_length.len() - 8;
    end_with_instance_and_length[end + 2..end + 8].copy_from_slice(&[0x22, 0, 9, 0, 0, 0]);
    assert_eq!(walk(&end_with_instance_and_length), canonical);
    // END claims more bytes than there are: still ignored.
    end_with_instance_and_length[end + 4..end + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(walk(&end_with_instance_and_length), canonical);

    // A VMCE_VCPU record after END is not loaded, nor a malformed one.
    let mut after_end = blob.clone();
    after_end.extend_from_slice(&xen_record(0, &[0x0100_0C02, 0x8000, 0, 0]));
    after_end.extend_from_slice(&[18, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
    assert_eq!(walk(&after_end), canonical);
}
