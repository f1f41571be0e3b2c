//! Native vCPU and domain records from arbitrary bytes: a typed error, or a record that
//! re-encodes to exactly the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmce::Profile;
use vmce::record::LossPolicy;
use vmce::record::native::{self, NativeRecord, NativeVersion};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else { return };
    let profile = Profile::ALL[usize::from(selector) % 3];
    let loader = NativeVersion::ALL[usize::from(selector / 3) % 2];
    let vcpus = u32::from(selector >> 3) + 1;
    let Ok((record, len)) = native::decode(bytes, profile, vcpus, loader) else { return };
    let version = if bytes[1] == 1 { NativeVersion::V1 } else { NativeVersion::V2 };
    assert!(version <= loader);
    let mut out = [0u8; native::MAX_DOMAIN_RECORD_BYTES];
    let encoding = match &record {
        NativeRecord::Vcpu(saved) => {
            assert!(saved.id.0 < vcpus);
            native::encode_vcpu(saved, version, LossPolicy::Refuse, &mut out)
        }
        NativeRecord::Domain(saved) => {
            assert_eq!((saved.profile, saved.vcpus), (profile, vcpus));
            native::encode_domain(saved, version, LossPolicy::Refuse, &mut out)
        }
    }
    .expect("re-encode");
    assert_eq!(&out[..encoding.len], &bytes[..len]);
});
