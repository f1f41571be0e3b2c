//! All-or-nothing restore: a refused record changes nothing in the domain.

use crate::common;

use crate::shared::{in_flight, intel_with_ctl2, saved};
use common::domain;
use vmce::record::RecordError;
use vmce::registers::MciCtl2;
use vmce::{Profile, Vcpu};

#[test]
fn failed_restores_change_nothing() {
    let domain = domain(Profile::Intel, 3);
    domain.vcpus()[1]
        .restore(Profile::Intel, &intel_with_ctl2())
        .unwrap();
    let view = |vcpu: &Vcpu| (vcpu.state(), vcpu.is_pending());
    let before: Vec<_> = domain.vcpus().iter().map(view).collect();

    let mut bad = in_flight();
    bad.state.mci_ctl2[0] = MciCtl2::from_bits_retain(1 << 31);
    for records in [
        vec![saved(0, in_flight()), saved(2, bad)],
        vec![saved(0, in_flight()), saved(3, in_flight())],
        vec![saved(2, in_flight()), saved(2, intel_with_ctl2())],
    ] {
        assert!(domain.restore_vcpus(&records).is_err());
        let after: Vec<_> = domain.vcpus().iter().map(view).collect();
        assert_eq!(after, before, "{records:?}");
        assert!(!domain.vcpus()[0].is_pending());
    }
    assert_eq!(
        domain.vcpus()[1].restore(Profile::Intel, &bad),
        Err(RecordError::Ctl2Reserved {
            bank: 0,
            bits: 1 << 31
        })
    );
    assert_eq!(view(&domain.vcpus()[1]), before[1]);
    assert_eq!(
        domain.vcpus()[1].restore(Profile::Amd, &in_flight()),
        Err(RecordError::VendorMismatch {
            destination: Profile::Amd
        })
    );
    let mut bank0 = in_flight();
    bank0.state.banks[0].addr = 1;
    assert_eq!(
        domain.vcpus()[1].restore(Profile::Intel, &bank0),
        Err(RecordError::Bank0NotEmpty)
    );
    assert_eq!(view(&domain.vcpus()[1]), before[1]);

    domain.restore_vcpus(&[saved(2, in_flight())]).unwrap();
    assert!(
        domain.vcpus()[2].take_pending(),
        "restored pending #MC re-armed"
    );
}
