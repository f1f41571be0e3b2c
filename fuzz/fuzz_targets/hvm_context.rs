//! Whole Xen HVM context streams from arbitrary bytes: a typed error, or a walk whose
//! `VMCE_VCPU` records each decode or fail with a typed error, and whose records re-written
//! through `HvmWriter` give back the same header and records (and the same bytes, unless the
//! stream had what Xen's loader ignores: a header instance, END's instance or length, bytes
//! after END).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmce::Profile;
use vmce::record::hvm::{HvmContext, HvmWriter};
use vmce::record::xen::XenRelease;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else { return };
    let profile = Profile::ALL[usize::from(selector) % 3];
    let Ok(context) = HvmContext::parse(bytes) else { return };
    for record in context.vmce_vcpus(profile, u32::from(selector >> 2) + 1, XenRelease::Xen4_10) {
        let _ = record;
    }
    let mut out = vec![0u8; bytes.len()];
    let mut writer = HvmWriter::new(&mut out, context.header()).expect("header fits");
    for record in context.records() {
        writer
            .push(record.descriptor.typecode, record.descriptor.instance, record.payload)
            .expect("record fits");
    }
    let len = writer.finish().expect("END fits").len;
    let again = HvmContext::parse(&out[..len]).expect("re-written stream parses");
    assert_eq!(again.header(), context.header());
    assert!(again.records().eq(context.records()));
    let canonical = bytes[2..4] == [0, 0]
        && context.end_offset() == bytes.len()
        && bytes[bytes.len() - 6..] == [0; 6];
    if canonical {
        assert_eq!(&out[..len], bytes);
    }
});
