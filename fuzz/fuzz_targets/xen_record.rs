//! Xen `VMCE_VCPU` records (descriptor and payload) from arbitrary bytes: a typed error, or a
//! state that re-encodes to exactly the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmce::Profile;
use vmce::record::LossPolicy;
use vmce::record::xen::{self, XenRelease};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else { return };
    let profile = Profile::ALL[usize::from(selector) % 3];
    let loader = XenRelease::ALL[usize::from(selector / 3) % 3];
    let vcpus = u32::from(selector >> 4) + 1;
    if let Ok((saved, len)) = xen::decode(bytes, profile, vcpus, loader) {
        let release = XenRelease::from_payload_len(len as u32 - 8).expect("decoded length");
        assert!(release <= loader);
        let mut out = [0u8; xen::MAX_RECORD_BYTES];
        let encoding = xen::encode(&saved, release, LossPolicy::Refuse, &mut out).expect("re-encode");
        assert_eq!(&out[..encoding.len], &bytes[..len]);
        assert!(saved.id.0 < vcpus);
    }
});
