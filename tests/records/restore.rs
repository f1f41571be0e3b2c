//! All-or-nothing restore: a refused record changes nothing in the domain.

use crate::common;

use crate::shared::{in_flight, intel_with_ctl2, saved};
use common::domain;
use vmce::record::{RestoreError, SavedVcpu, StateError};
use vmce::registers::MciCtl2;
use vmce::{Profile, Vcpu, VcpuId};

#[test]
fn failed_restores_change_nothing() {
    let domain = domain(Profile::Intel, 3);
    domain.vcpus()[1].restore(&saved(1, intel_with_ctl2()).snapshot);
    let view = |vcpu: &Vcpu| (vcpu.state(), vcpu.is_pending());
    let before: Vec<_> = domain.vcpus().iter().map(view).collect();

    for records in [
        vec![saved(0, in_flight()), saved(3, in_flight())],
        vec![saved(2, in_flight()), saved(2, intel_with_ctl2())],
        vec![
            saved(0, in_flight()),
            SavedVcpu {
                id: VcpuId(2),
                snapshot: in_flight().check(Profile::IntelLmce).unwrap(),
            },
        ],
    ] {
        assert!(domain.restore_vcpus(&records).is_err());
        let after: Vec<_> = domain.vcpus().iter().map(view).collect();
        assert_eq!(after, before, "{records:?}");
        assert!(!domain.vcpus()[0].is_pending());
    }
    // A record checked for another profile than the domain's is refused as such, even one
    // whose state the domain's profile allows.
    let lmce_checked = SavedVcpu {
        id: VcpuId(1),
        snapshot: in_flight().check(Profile::IntelLmce).unwrap(),
    };
    assert_eq!(
        domain.restore_vcpus(&[lmce_checked]),
        Err(RestoreError::CheckedForOtherProfile {
            id: 1,
            checked_for: Profile::IntelLmce,
            destination: Profile::Intel
        })
    );
    // What no vCPU of the profile can hold never becomes a record to restore.
    let mut bad = in_flight();
    bad.state.mci_ctl2[0] = MciCtl2::from_bits_retain(1 << 31);
    assert_eq!(
        bad.check(Profile::Intel),
        Err(StateError::Ctl2Reserved {
            bank: 0,
            bits: 1 << 31
        })
    );
    assert_eq!(
        in_flight().check(Profile::Amd),
        Err(StateError::VendorMismatch {
            destination: Profile::Amd
        })
    );
    let mut bank0 = in_flight();
    bank0.state.banks[0].addr = 1;
    assert_eq!(bank0.check(Profile::Intel), Err(StateError::Bank0NotEmpty));
    assert_eq!(view(&domain.vcpus()[1]), before[1]);

    domain.restore_vcpus(&[saved(2, in_flight())]).unwrap();
    assert!(
        domain.vcpus()[2].take_pending(),
        "restored pending #MC re-armed"
    );
}
