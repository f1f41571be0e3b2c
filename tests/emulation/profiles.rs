//! docs/behaviour.md §2: the guest's capabilities are a function of the profile, never of
//! the host.

use crate::common;

use proptest::prelude::*;
use vmce::host::HostCapabilities;
use vmce::registers::McgCap;
use vmce::{Domain, Profile, ProfileError, RdmsrOutcome, Vcpu, Vendor};

/// Every MCA MSR a guest can name, plus neighbours.
fn mca_msrs() -> Vec<u32> {
    let mut msrs = vec![0x0, 0x1, 0x179, 0x17A, 0x17B, 0x4D0];
    msrs.extend(0x280..0x2A0);
    msrs.extend(0x400..0x480);
    msrs
}

/// What a guest of `profile` sees on `host`, register by register.
fn guest_view(
    profile: Profile,
    host: &HostCapabilities,
) -> Result<Vec<RdmsrOutcome>, vmce::domain::DomainError> {
    let domain = Domain::new(profile, host, vec![Vcpu::new(profile), Vcpu::new(profile)])?;
    Ok(domain
        .vcpus()
        .iter()
        .flat_map(|vcpu| mca_msrs().into_iter().map(|msr| vcpu.rdmsr(msr)))
        .collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any host that can back a profile gives the guest exactly the same registers.
    #[test]
    fn guest_view_is_identical_on_every_backing_host(raw_cap in any::<u64>(), amd in any::<bool>()) {
        let vendor = if amd { Vendor::Amd } else { Vendor::Intel };
        let host = HostCapabilities::new(vendor, McgCap::from_bits_retain(raw_cap));
        for profile in Profile::ALL {
            let reference = guest_view(profile, &common::host_for(profile)).unwrap();
            match guest_view(profile, &host) {
                Ok(view) => prop_assert_eq!(view, reference, "{} on host {:#x}", profile, raw_cap),
                Err(vmce::domain::DomainError::Profile(error)) => {
                    // Refused only for a real reason.
                    let caps = McgCap::from_bits_retain(raw_cap);
                    let reason_holds = match error {
                        ProfileError::VendorMismatch { .. } => vendor != profile.vendor(),
                        ProfileError::HostWithoutBanks => caps.count() == 0,
                        ProfileError::HostLacks { missing, .. } => {
                            !missing.is_empty() && !caps.contains(missing) && profile.host_requirements().contains(missing)
                        }
                        ProfileError::LmceOnAmd => false,
                        _ => false,
                    };
                    prop_assert!(reason_holds, "{} refused on {:#x}: {}", profile, raw_cap, error);
                }
                Err(other) => prop_assert!(false, "unexpected {other}"),
            }
        }
    }
}

#[test]
fn many_concrete_hosts_give_the_same_mcg_cap() {
    let intel_hosts = [
        0x0100_010A,
        0x0F00_0C14,
        0x0100_0C09,
        0x0900_0816,
        0x0F00_0C1C,
        0x1F00_0C20,
        0x01FF_FFFF,
    ];
    for raw in intel_hosts {
        let host = HostCapabilities::new(Vendor::Intel, McgCap::from_bits_retain(raw));
        assert_eq!(
            guest_view(Profile::Intel, &host).unwrap(),
            guest_view(Profile::Intel, &common::intel_host()).unwrap()
        );
        let vcpu = Vcpu::new(Profile::Intel);
        assert_eq!(
            vcpu.rdmsr(0x179),
            RdmsrOutcome::Handled(0x0100_0C02),
            "host {raw:#x}"
        );
    }
    for raw in [0x0000_0006, 0x0000_0017, 0x0000_0106, 0x0F00_0C1C] {
        let host = HostCapabilities::new(Vendor::Amd, McgCap::from_bits_retain(raw));
        assert_eq!(
            guest_view(Profile::Amd, &host).unwrap(),
            guest_view(Profile::Amd, &common::amd_host()).unwrap()
        );
    }
}

#[test]
fn hosts_that_cannot_back_a_profile_are_named() {
    let no_ser = HostCapabilities::new(Vendor::Intel, McgCap::from_bits_retain(0x0000_0C09));
    let err = Profile::Intel.check_host(&no_ser).unwrap_err();
    assert_eq!(
        err,
        ProfileError::HostLacks {
            profile: Profile::Intel,
            missing: McgCap::SER_P
        }
    );
    assert!(
        err.to_string()
            .contains("host lacks SER_P, so SRAO/SRAR errors cannot be reflected"),
        "{err}"
    );

    let no_lmce = common::qemu_host();
    let err = Profile::IntelLmce.check_host(&no_lmce).unwrap_err();
    assert_eq!(
        err,
        ProfileError::HostLacks {
            profile: Profile::IntelLmce,
            missing: McgCap::LMCE_P
        }
    );
    assert!(
        err.to_string()
            .contains("LMCE asked for but host lacks LMCE_P"),
        "{err}"
    );

    let neither = HostCapabilities::new(Vendor::Intel, McgCap::from_bits_retain(0x6));
    assert_eq!(
        Profile::IntelLmce.check_host(&neither),
        Err(ProfileError::HostLacks {
            profile: Profile::IntelLmce,
            missing: McgCap::SER_P | McgCap::LMCE_P
        })
    );

    assert_eq!(
        Profile::Amd.check_host(&common::intel_host()),
        Err(ProfileError::VendorMismatch {
            profile: Profile::Amd,
            host: Vendor::Intel
        })
    );
    assert_eq!(
        Profile::Intel.check_host(&common::amd_host()),
        Err(ProfileError::VendorMismatch {
            profile: Profile::Intel,
            host: Vendor::Amd
        })
    );
    let bankless = HostCapabilities::new(Vendor::Amd, McgCap::empty());
    assert_eq!(
        Profile::Amd.check_host(&bankless),
        Err(ProfileError::HostWithoutBanks)
    );
    assert_eq!(Profile::Intel.check_host(&common::intel_host()), Ok(()));
    assert_eq!(Profile::IntelLmce.check_host(&common::intel_host()), Ok(()));
}

#[test]
fn lmce_is_opted_in_once_at_creation_and_never_on_amd() {
    assert_eq!(Profile::Intel.with_lmce(), Ok(Profile::IntelLmce));
    assert_eq!(Profile::IntelLmce.with_lmce(), Ok(Profile::IntelLmce));
    assert_eq!(Profile::Amd.with_lmce(), Err(ProfileError::LmceOnAmd));
    assert!(Profile::IntelLmce.has_lmce() && !Profile::Intel.has_lmce());
}

#[test]
fn a_domain_refuses_vcpus_of_another_profile() {
    use vmce::VcpuId;
    use vmce::domain::DomainError;
    let host = common::intel_host();
    let mixed = vec![Vcpu::new(Profile::Intel), Vcpu::new(Profile::IntelLmce)];
    assert_eq!(
        Domain::new(Profile::Intel, &host, mixed).err(),
        Some(DomainError::VcpuMismatch(VcpuId(1)))
    );
    let amd = vec![Vcpu::new(Profile::Amd)];
    assert_eq!(
        Domain::new(Profile::Intel, &host, amd).err(),
        Some(DomainError::VcpuMismatch(VcpuId(0)))
    );
    assert_eq!(
        Domain::new(Profile::Intel, &host, Vec::<Vcpu>::new()).err(),
        Some(DomainError::NoVcpus)
    );
    // An LMCE vCPU in an LMCE domain is fine; so is a restored old-host vCPU.
    let restored =
        Vcpu::with_restored_caps(Profile::Intel, McgCap::from_bits_retain(0x0000_0106)).unwrap();
    assert!(
        Domain::new(
            Profile::Intel,
            &host,
            vec![Vcpu::new(Profile::Intel), restored]
        )
        .is_ok()
    );
}
