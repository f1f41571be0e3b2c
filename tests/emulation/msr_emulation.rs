//! docs/behaviour.md §3, row by row, for every profile and for guests restored from older
//! hosts.

use crate::common;

use vmce::emulate::GpCause;
use vmce::registers::McgCap;
use vmce::{Profile, RdmsrOutcome, Vcpu, WrmsrOutcome};

use RdmsrOutcome::{Handled as R, NotOurs as RNotOurs, RaiseGp as RGp};
use WrmsrOutcome::{Handled as W, NotOurs as WNotOurs, RaiseGp as WGp};

const ALL_ONES: u64 = u64::MAX;

fn status(bank: u32) -> u32 {
    0x401 + 4 * bank
}

/// Every architectural bank register index of banks `from..32`.
fn bank_error_registers(from: u32) -> impl Iterator<Item = u32> {
    (from..32).flat_map(|bank| [0x401 + 4 * bank, 0x402 + 4 * bank, 0x403 + 4 * bank])
}

#[test]
fn mcg_cap_reads_the_profile_and_faults_on_write() {
    for profile in Profile::ALL {
        let vcpu = Vcpu::new(profile);
        assert_eq!(vcpu.rdmsr(0x179), R(profile.mcg_cap().bits()), "{profile}");
        assert_eq!(
            vcpu.wrmsr(0x179, profile.mcg_cap().bits()),
            WGp(GpCause::ReadOnly),
            "{profile}"
        );
        assert_eq!(vcpu.wrmsr(0x179, 0), WGp(GpCause::ReadOnly), "{profile}");
        assert_eq!(vcpu.rdmsr(0x179), R(profile.mcg_cap().bits()), "{profile}");
    }
}

#[test]
fn mcg_status_stores_architectural_bits_and_faults_on_reserved() {
    // (profile, value, expected)
    let rows: &[(Profile, u64, WrmsrOutcome)] = &[
        (Profile::Intel, 0x7, W),
        (Profile::Intel, 0x0, W),
        (
            Profile::Intel,
            0x8,
            WGp(GpCause::ReservedBits { bits: 0x8 }),
        ),
        (
            Profile::Intel,
            0xF,
            WGp(GpCause::ReservedBits { bits: 0x8 }),
        ),
        (
            Profile::Intel,
            1 << 4,
            WGp(GpCause::ReservedBits { bits: 1 << 4 }),
        ),
        (
            Profile::Intel,
            1 << 63,
            WGp(GpCause::ReservedBits { bits: 1 << 63 }),
        ),
        (Profile::IntelLmce, 0xF, W),
        (
            Profile::IntelLmce,
            0x1F,
            WGp(GpCause::ReservedBits { bits: 0x10 }),
        ),
        (Profile::Amd, 0x7, W),
        (Profile::Amd, 0x8, WGp(GpCause::ReservedBits { bits: 0x8 })),
    ];
    for &(profile, value, expected) in rows {
        let vcpu = Vcpu::new(profile);
        assert_eq!(vcpu.wrmsr(0x17A, 0x1), W, "RIPV is writable");
        assert_eq!(vcpu.wrmsr(0x17A, value), expected, "{profile} {value:#x}");
        let stored = if expected == W { value } else { 0x1 };
        assert_eq!(vcpu.rdmsr(0x17A), R(stored), "{profile} {value:#x}");
    }
}

#[test]
fn mcg_ctl_is_absent_read_zero_write_ignored() {
    for profile in Profile::ALL {
        let vcpu = Vcpu::new(profile);
        assert_eq!(vcpu.rdmsr(0x17B), R(0));
        assert_eq!(vcpu.wrmsr(0x17B, ALL_ONES), W);
        assert_eq!(vcpu.wrmsr(0x17B, 0x1234), W);
        assert_eq!(vcpu.rdmsr(0x17B), R(0));
    }
}

#[test]
fn mci_ctl_is_all_ones_below_count_and_ignores_writes() {
    for profile in Profile::ALL {
        let vcpu = Vcpu::new(profile);
        for bank in 0..2 {
            let ctl = 0x400 + 4 * bank;
            assert_eq!(vcpu.rdmsr(ctl), R(ALL_ONES), "{profile} MC{bank}_CTL");
            assert_eq!(vcpu.wrmsr(ctl, 0), W);
            assert_eq!(vcpu.wrmsr(ctl, 0x5), W);
            assert_eq!(vcpu.rdmsr(ctl), R(ALL_ONES));
        }
        for bank in 2..32 {
            let ctl = 0x400 + 4 * bank;
            assert_eq!(vcpu.rdmsr(ctl), R(0), "{profile} MC{bank}_CTL beyond count");
            assert_eq!(vcpu.wrmsr(ctl, ALL_ONES), W);
        }
    }
}

/// A bank-0/1 error register with nothing logged: reads 0, takes 0, refuses anything else.
fn stores_only_zero(vcpu: &Vcpu, index: u32, at: &dyn std::fmt::Display) {
    assert_eq!(vcpu.rdmsr(index), R(0), "{at}: {index:#x}");
    assert_eq!(vcpu.wrmsr(index, 0), W, "{at}: {index:#x}");
    let refused = WGp(GpCause::NonZeroBankWrite);
    assert_eq!(vcpu.wrmsr(index, 1), refused, "{at}: {index:#x}");
}

#[test]
fn banks_0_and_1_store_and_only_zero_may_be_written() {
    for profile in Profile::ALL {
        let vcpu = Vcpu::new(profile);
        for index in bank_error_registers(0).take(6) {
            stores_only_zero(&vcpu, index, &profile);
            assert_eq!(vcpu.wrmsr(index, ALL_ONES), WGp(GpCause::NonZeroBankWrite));
        }
    }
}

#[test]
fn banks_2_to_31_read_zero_accept_zero_fault_otherwise() {
    for profile in Profile::ALL {
        let vcpu = Vcpu::new(profile);
        for index in bank_error_registers(2) {
            assert_eq!(vcpu.rdmsr(index), R(0), "{profile} {index:#x}");
            assert_eq!(vcpu.wrmsr(index, 0), W, "{profile} {index:#x}");
            assert_eq!(
                vcpu.wrmsr(index, 0x8000_0000_0000_0000),
                WGp(GpCause::NonZeroBankWrite)
            );
        }
    }
}

#[test]
fn ctl2_intel_banks_0_1_store_writable_bits_and_fault_on_reserved() {
    for profile in [Profile::Intel, Profile::IntelLmce] {
        let vcpu = Vcpu::new(profile);
        for (bank, value) in [(0u32, (1u64 << 30) | 0x7FFF), (1, (1 << 30) | 1)] {
            let ctl2 = 0x280 + bank;
            assert_eq!(vcpu.rdmsr(ctl2), R(0));
            assert_eq!(vcpu.wrmsr(ctl2, value), W);
            assert_eq!(vcpu.rdmsr(ctl2), R(value), "{profile} MC{bank}_CTL2");
            for reserved in [1u64 << 15, 1 << 29, 1 << 31, 1 << 63] {
                assert_eq!(
                    vcpu.wrmsr(ctl2, value | reserved),
                    WGp(GpCause::ReservedBits { bits: reserved }),
                    "{profile} MC{bank}_CTL2 {reserved:#x}"
                );
                assert_eq!(vcpu.rdmsr(ctl2), R(value), "unchanged after #GP");
            }
        }
        for bank in 2..32 {
            assert_eq!(vcpu.rdmsr(0x280 + bank), R(0));
            assert_eq!(vcpu.wrmsr(0x280 + bank, 1 << 30), W);
            assert_eq!(
                vcpu.wrmsr(0x280 + bank, ALL_ONES),
                W,
                "ignored, even reserved bits"
            );
            assert_eq!(vcpu.rdmsr(0x280 + bank), R(0));
        }
    }
}

#[test]
fn ctl2_amd_reads_zero_ignores_writes() {
    let vcpu = Vcpu::new(Profile::Amd);
    for bank in 0..32 {
        assert_eq!(vcpu.rdmsr(0x280 + bank), R(0));
        assert_eq!(vcpu.wrmsr(0x280 + bank, (1 << 30) | 3), W);
        assert_eq!(vcpu.rdmsr(0x280 + bank), R(0));
    }
}

#[test]
fn mcg_ext_ctl_needs_lmce_p_and_only_lmce_en_is_writable() {
    for profile in [Profile::Intel, Profile::Amd] {
        let vcpu = Vcpu::new(profile);
        assert_eq!(vcpu.rdmsr(0x4D0), RGp(GpCause::NotAdvertised), "{profile}");
        assert_eq!(
            vcpu.wrmsr(0x4D0, 0),
            WGp(GpCause::NotAdvertised),
            "{profile}"
        );
        assert_eq!(
            vcpu.wrmsr(0x4D0, 1),
            WGp(GpCause::NotAdvertised),
            "{profile}"
        );
    }
    let vcpu = Vcpu::new(Profile::IntelLmce);
    assert_eq!(vcpu.rdmsr(0x4D0), R(0));
    assert_eq!(vcpu.wrmsr(0x4D0, 1), W);
    assert_eq!(vcpu.rdmsr(0x4D0), R(1));
    assert_eq!(vcpu.wrmsr(0x4D0, 3), WGp(GpCause::ReservedBits { bits: 2 }));
    assert_eq!(
        vcpu.wrmsr(0x4D0, 1 << 63),
        WGp(GpCause::ReservedBits { bits: 1 << 63 })
    );
    assert_eq!(vcpu.rdmsr(0x4D0), R(1));
    assert_eq!(vcpu.wrmsr(0x4D0, 0), W);
    assert_eq!(vcpu.rdmsr(0x4D0), R(0));
}

#[test]
fn p5_registers_alias_bank_1_on_intel_and_are_not_ours_on_amd() {
    use vmce::address::{GuestPhysAddr, HostPhysAddr};
    use vmce::classify::ReflectClass;
    use vmce::registers::{McgStatus, MciMisc, MciStatus};
    for profile in [Profile::Intel, Profile::IntelLmce] {
        let domain = common::domain(profile, 1);
        let vcpu = &domain.vcpus()[0];
        assert_eq!(vcpu.rdmsr(0x0), R(0));
        assert_eq!(vcpu.rdmsr(0x1), R(0));
        let error = vmce::GuestMce {
            class: ReflectClass::SraoMemoryScrub,
            host_mcg_status: McgStatus::from_bits_retain(0x5),
            host_status: MciStatus::from_bits_retain(0xBD00_0000_0040_00CF),
            host_addr: HostPhysAddr(0x0412_3000),
            guest_addr: GuestPhysAddr(0x0012_3000),
            misc: MciMisc(0x86),
        };
        domain
            .inject(&error, None, &mut common::RecordingCpus::new(1))
            .unwrap();
        assert_eq!(vcpu.rdmsr(0x0), R(0x0012_3000), "P5_MC_ADDR = MC1_ADDR");
        assert_eq!(
            vcpu.rdmsr(0x1),
            R(0xBD00_0000_0000_00CF),
            "P5_MC_TYPE = MC1_STATUS"
        );
        assert_eq!(vcpu.rdmsr(0x1), vcpu.rdmsr(status(1)));
        assert_eq!(vcpu.wrmsr(0x0, 0), WGp(GpCause::ReadOnly));
        assert_eq!(vcpu.wrmsr(0x1, 0), WGp(GpCause::ReadOnly));
    }
    let vcpu = Vcpu::new(Profile::Amd);
    assert_eq!(vcpu.rdmsr(0x0), RNotOurs);
    assert_eq!(vcpu.rdmsr(0x1), RNotOurs);
    assert_eq!(vcpu.wrmsr(0x0, 0), WNotOurs);
    assert_eq!(vcpu.wrmsr(0x1, 5), WNotOurs);
}

#[test]
fn other_msrs_are_not_ours() {
    let outside = [
        0x2,
        0x3A,
        0x10,
        0x178,
        0x17C,
        0x17F,
        0x27F,
        0x2A0,
        0x3FF,
        0x480,
        0x4CF,
        0x4D1,
        0xC000_0080,
        0xC000_0410,
        u32::MAX,
    ];
    for profile in Profile::ALL {
        let vcpu = Vcpu::new(profile);
        let before = (vcpu.state(), vcpu.is_pending());
        for index in outside {
            assert_eq!(vcpu.rdmsr(index), RNotOurs, "{profile} {index:#x}");
            assert_eq!(
                vcpu.wrmsr(index, ALL_ONES),
                WNotOurs,
                "{profile} {index:#x}"
            );
        }
        assert_eq!((vcpu.state(), vcpu.is_pending()), before);
    }
}

#[test]
fn clearing_mcip_is_a_plain_store() {
    let vcpu = Vcpu::new(Profile::Intel);
    assert_eq!(vcpu.wrmsr(0x17A, 0x7), W);
    assert_eq!(vcpu.wrmsr(0x17A, 0x3), W);
    assert_eq!(vcpu.rdmsr(0x17A), R(0x3));
}

/// Guests created on pre-Xen-4.2 hosts carried host-derived caps: more banks, CTL_P.
#[test]
fn restored_guests_keep_their_banks_and_mcg_ctl() {
    let rows: &[(Profile, u64)] = &[
        (Profile::Intel, 0x0100_0806),
        (Profile::Intel, 0x0000_0106),
        (Profile::IntelLmce, 0x0900_0C06),
        (Profile::Amd, 0x0000_0106),
        (Profile::Amd, 0x0000_0020),
    ];
    for &(profile, caps) in rows {
        let vcpu = Vcpu::with_restored_caps(profile, McgCap::from_bits_retain(caps)).unwrap();
        let count = (caps & 0xFF) as u32;
        let ctl_p = caps & (1 << 8) != 0;
        assert_eq!(vcpu.rdmsr(0x179), R(caps), "{profile} {caps:#x}");
        assert_eq!(
            vcpu.rdmsr(0x17B),
            R(if ctl_p { ALL_ONES } else { 0 }),
            "MCG_CTL {caps:#x}"
        );
        assert_eq!(vcpu.wrmsr(0x17B, 0), W);
        assert_eq!(vcpu.rdmsr(0x17B), R(if ctl_p { ALL_ONES } else { 0 }));
        for bank in 0..32 {
            let expected_ctl = if bank < count { ALL_ONES } else { 0 };
            assert_eq!(
                vcpu.rdmsr(0x400 + 4 * bank),
                R(expected_ctl),
                "{caps:#x} MC{bank}_CTL"
            );
            assert_eq!(vcpu.wrmsr(0x400 + 4 * bank, 0), W);
            for offset in 1..4 {
                assert_eq!(
                    vcpu.rdmsr(0x400 + 4 * bank + offset),
                    R(0),
                    "{caps:#x} bank {bank} RAZ"
                );
                assert_eq!(vcpu.wrmsr(0x400 + 4 * bank + offset, 0), W);
                assert_eq!(
                    vcpu.wrmsr(0x400 + 4 * bank + offset, 1),
                    WGp(GpCause::NonZeroBankWrite)
                );
            }
        }
    }
}

#[test]
fn restored_caps_outside_the_profile_are_refused() {
    use vmce::profile::CapsError;
    let rows: &[(Profile, u64, CapsError)] = &[
        (
            Profile::Amd,
            0x0100_0806,
            CapsError::UnsupportedBits {
                profile: Profile::Amd,
                bits: 0x0100_0800,
            },
        ),
        (
            Profile::Intel,
            0x0900_0C02,
            CapsError::UnsupportedBits {
                profile: Profile::Intel,
                bits: 0x0800_0000,
            },
        ),
        (
            Profile::Intel,
            0x0100_0C02 | (1 << 9),
            CapsError::UnsupportedBits {
                profile: Profile::Intel,
                bits: 1 << 9,
            },
        ),
        (
            Profile::Amd,
            0x0000_02FF,
            CapsError::UnsupportedBits {
                profile: Profile::Amd,
                bits: 1 << 9,
            },
        ),
    ];
    for &(profile, caps, expected) in rows {
        assert_eq!(
            Vcpu::with_restored_caps(profile, McgCap::from_bits_retain(caps)).err(),
            Some(expected),
            "{profile} {caps:#x}"
        );
    }
}

/// Xen's restore rule tolerates every bank count, 0 to 255: so do `with_restored_caps`,
/// `Domain::new`'s vCPU check and every record format. (Before: counts below 2 and above 32
/// were refused.)
#[test]
fn restored_caps_take_every_bank_count() {
    for profile in Profile::ALL {
        let base = profile.mcg_cap().without_count().bits();
        for count in 0..=u8::MAX {
            for caps in [base | u64::from(count), base | 0x100 | u64::from(count)] {
                let caps = McgCap::from_bits_retain(caps);
                assert_eq!(
                    profile.check_restored_caps(caps),
                    Ok(()),
                    "{profile} {caps}"
                );
                let vcpu = Vcpu::with_restored_caps(profile, caps).unwrap();
                assert_eq!(vcpu.rdmsr(0x179), R(caps.bits()));
            }
        }
    }
}

/// What a vCPU restored with 0, 1, 33 or 255 banks sees (the rows of `vmce::emulate`'s table
/// and `Profile::check_restored_caps`'s documentation): `MCG_CAP` as saved, `MCi_CTL`
/// all-ones below the count within the 32 architectural banks, banks 0 and 1 as always,
/// nothing at 0x480 and beyond (other MSRs), and errors still logged in bank 1.
#[test]
fn restored_bank_counts_0_1_33_255_expose_the_documented_registers() {
    use vmce::{Access, Domain, GuestMce, GuestPhysAddr, VcpuId};
    for profile in Profile::ALL {
        for count in [0u8, 1, 33, 255] {
            let caps = McgCap::from_bits_retain(profile.mcg_cap().without_count().bits())
                .union(McgCap::with_count(count));
            let vcpu = Vcpu::with_restored_caps(profile, caps).unwrap();
            let at = format!("{profile}, {count} banks");
            assert_eq!(vcpu.rdmsr(0x179), R(caps.bits()), "{at}: MCG_CAP as saved");
            assert_eq!(vcpu.rdmsr(0x17B), R(0), "{at}: MCG_CTL without CTL_P");
            for bank in 0u32..32 {
                let ctl = if bank < u32::from(count) { ALL_ONES } else { 0 };
                assert_eq!(vcpu.rdmsr(0x400 + 4 * bank), R(ctl), "{at}: MC{bank}_CTL");
                assert_eq!(
                    vcpu.wrmsr(0x400 + 4 * bank, 0),
                    W,
                    "{at}: MC{bank}_CTL write"
                );
            }
            // Banks 0 and 1 answer whatever the count.
            for index in [0x401, 0x402, 0x403, 0x405, 0x406, 0x407] {
                stores_only_zero(&vcpu, index, &at);
            }
            // Banks 32 and up would sit where the VMX capability MSRs and others live: not
            // ours, even when the count says the guest has them (Xen would emulate them).
            for index in (0x480..0x4D0).chain(0x4D1..0x480 + 4 * 223) {
                assert_eq!(vcpu.rdmsr(index), RNotOurs, "{at}: {index:#x}");
                assert_eq!(vcpu.wrmsr(index, 0), WNotOurs, "{at}: {index:#x}");
            }
            // The error is still logged in bank 1, which a guest of 0 or 1 banks never scans.
            let domain = Domain::new(
                profile,
                &common::host_for(profile),
                vec![Vcpu::with_restored_caps(profile, caps).unwrap()],
            )
            .unwrap_or_else(|error| panic!("{at}: {error}"));
            let error = GuestMce::broken_frame_access(
                profile.vendor(),
                Access::DataLoad,
                GuestPhysAddr(0x5000),
            );
            let report = domain
                .inject(&error, Some(VcpuId(0)), &mut common::RecordingCpus::new(1))
                .unwrap();
            assert_eq!(report.delivered, 1, "{at}");
            let vcpu = &domain.vcpus()[0];
            let R(mc1_status) = vcpu.rdmsr(0x405) else {
                panic!("{at}: MC1_STATUS not handled");
            };
            assert_eq!(mc1_status >> 63, 1, "{at}: MC1_STATUS.VAL");
            assert_eq!(vcpu.rdmsr(0x406), R(0x5000), "{at}: MC1_ADDR");
            assert_eq!(vcpu.rdmsr(0x179), R(caps.bits()), "{at}: MCG_CAP unchanged");
        }
    }
}
