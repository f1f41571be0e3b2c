//! Xen `VMCE_VCPU` records (descriptor and payload) from arbitrary bytes: a typed error, or a
//! state that the loader's own layout carries unchanged, and that re-encodes to exactly the
//! bytes it came from when they were a release's own layout and nothing was dropped.
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
    if let Ok((saved, len, notes)) = xen::decode(bytes, profile, vcpus, loader) {
        assert!(saved.id.0 < vcpus);
        assert!(loader.loads_payload_len(len as u32 - 8));
        let mut out = [0u8; xen::MAX_RECORD_BYTES];
        let encoding = xen::encode(&saved, loader, LossPolicy::Refuse, &mut out).expect("re-encode");
        let (again, _, again_notes) =
            xen::decode(&out[..encoding.len], profile, vcpus, loader).expect("decode again");
        assert_eq!(again, saved);
        assert!(again_notes.is_empty());
        if let Some(release) = XenRelease::from_payload_len(len as u32 - 8)
            && notes.is_empty()
            && let Ok(encoding) = xen::encode(&saved, release, LossPolicy::Refuse, &mut out)
        {
            assert_eq!(&out[..encoding.len], &bytes[..len]);
        }
    }
});
