//! Bad C input is a status, never a panic or a change: null pointers, unknown enum values,
//! out-of-range counts, uninitialized or misaligned storage.

use std::mem::MaybeUninit;
use std::ptr;
use vmce_capi::*;

const INTEL: vmce_host_caps = vmce_host_caps {
    vendor: VMCE_VENDOR_INTEL,
    reserved: 0,
    mcg_cap: 0x0F00_0C14,
};

#[test]
fn domain_init_refuses_bad_arguments() {
    let mut storage = Box::new(MaybeUninit::<VmceDomain>::zeroed());
    let dom = storage.as_mut_ptr();
    let bad_vendor = vmce_host_caps { vendor: 9, ..INTEL };
    let amd = vmce_host_caps {
        vendor: VMCE_VENDOR_AMD,
        reserved: 0,
        mcg_cap: 0x17,
    };
    // SAFETY: `dom` is a whole, aligned VmceDomain; the other pointers are valid or null.
    unsafe {
        assert_eq!(
            vmce_domain_init(ptr::null_mut(), VMCE_PROFILE_INTEL, &INTEL, 1),
            VMCE_ERR_NULL
        );
        assert_eq!(
            vmce_domain_init(dom, VMCE_PROFILE_INTEL, ptr::null(), 1),
            VMCE_ERR_NULL
        );
        assert_eq!(vmce_domain_init(dom, 3, &INTEL, 1), VMCE_ERR_INVALID);
        assert_eq!(
            vmce_domain_init(dom, VMCE_PROFILE_INTEL, &bad_vendor, 1),
            VMCE_ERR_INVALID
        );
        assert_eq!(
            vmce_domain_init(dom, VMCE_PROFILE_INTEL, &INTEL, 0),
            VMCE_ERR_VCPU_COUNT
        );
        assert_eq!(
            vmce_domain_init(dom, VMCE_PROFILE_INTEL, &INTEL, VMCE_MAX_VCPUS + 1),
            VMCE_ERR_VCPU_COUNT
        );
        assert_eq!(
            vmce_domain_init(dom, VMCE_PROFILE_INTEL, &amd, 1),
            VMCE_ERR_PROFILE
        );
        // None of those initialized it.
        assert_eq!(vmce_take_pending(dom, 0), VMCE_ERR_NOT_INITIALIZED);
        assert_eq!(vmce_domain_vcpus(dom), i64::from(VMCE_ERR_NOT_INITIALIZED));
        let misaligned = dom.cast::<u8>().add(1).cast::<VmceDomain>();
        assert_eq!(
            vmce_domain_init(misaligned, VMCE_PROFILE_INTEL, &INTEL, 1),
            VMCE_ERR_ALIGN
        );
        assert_eq!(
            vmce_domain_init(dom, VMCE_PROFILE_INTEL, &INTEL, VMCE_MAX_VCPUS),
            VMCE_OK
        );
        assert_eq!(vmce_domain_vcpus(dom), i64::from(VMCE_MAX_VCPUS));
        assert_eq!(vmce_domain_destroy(dom), VMCE_OK);
        assert_eq!(vmce_domain_destroy(dom), VMCE_ERR_NOT_INITIALIZED);
    }
}

#[test]
fn calls_on_a_domain_check_every_argument() {
    let mut storage = Box::new(MaybeUninit::<VmceDomain>::zeroed());
    let dom = storage.as_mut_ptr();
    let mut outcome = 7u32;
    let mut value = 7u64;
    let mut buf = [0u8; 16];
    let mut written = 0usize;
    // SAFETY: as above.
    unsafe {
        assert_eq!(
            vmce_domain_init(dom, VMCE_PROFILE_INTEL, &INTEL, 2),
            VMCE_OK
        );
        assert_eq!(
            vmce_rdmsr(ptr::null(), 0, 0x179, &mut outcome, &mut value),
            VMCE_ERR_NULL
        );
        assert_eq!(
            vmce_rdmsr(dom, 0, 0x179, ptr::null_mut(), &mut value),
            VMCE_ERR_NULL
        );
        assert_eq!(
            vmce_rdmsr(dom, 2, 0x179, &mut outcome, &mut value),
            VMCE_ERR_NO_SUCH_VCPU
        );
        assert_eq!(
            vmce_wrmsr(dom, VMCE_NO_VCPU, 0x17A, 0, &mut outcome),
            VMCE_ERR_NO_SUCH_VCPU
        );
        assert_eq!((outcome, value), (7, 7), "nothing written on error");
        assert_eq!(vmce_rdmsr(dom, 1, 0x179, &mut outcome, &mut value), VMCE_OK);
        assert_eq!((outcome, value), (VMCE_MSR_HANDLED, 0x0100_0C02));
        let no_write = vmce_msr_ops {
            ctx: ptr::null_mut(),
            read: None,
            write: None,
        };
        let mut event = MaybeUninit::<vmce_host_mce>::zeroed().assume_init();
        assert_eq!(
            vmce_host_collect(&INTEL, &no_write, &mut event),
            VMCE_ERR_NULL
        );
        event.bank_count = VMCE_HOST_BANKS + 1;
        let mut verdict = MaybeUninit::<vmce_classification>::zeroed().assume_init();
        assert_eq!(
            vmce_host_classify(&INTEL, &event, &mut verdict),
            VMCE_ERR_INVALID
        );
        event.bank_count = 1;
        event.banks[0].bank = 32;
        assert_eq!(
            vmce_host_classify(&INTEL, &event, &mut verdict),
            VMCE_ERR_INVALID
        );
        event.bank_count = 0;
        assert_eq!(vmce_host_classify(&INTEL, &event, &mut verdict), VMCE_OK);
        assert_eq!(verdict.disposition, VMCE_DISPOSITION_NONE);
        assert_eq!(
            vmce_save_xen(
                dom,
                3,
                VMCE_LOSS_REFUSE,
                buf.as_mut_ptr(),
                buf.len(),
                &mut written,
                ptr::null_mut()
            ),
            VMCE_ERR_INVALID
        );
        assert_eq!(
            vmce_save_native(
                dom,
                VMCE_NATIVE_V2,
                2,
                buf.as_mut_ptr(),
                buf.len(),
                &mut written,
                ptr::null_mut()
            ),
            VMCE_ERR_INVALID
        );
        assert_eq!(
            vmce_save_xen(
                dom,
                VMCE_XEN_4_10,
                VMCE_LOSS_REFUSE,
                buf.as_mut_ptr(),
                buf.len(),
                &mut written,
                ptr::null_mut()
            ),
            VMCE_ERR_BUFFER_TOO_SMALL,
            "two 40-byte records do not fit 16 bytes"
        );
        assert_eq!(
            vmce_restore_xen(dom, VMCE_XEN_4_10, ptr::null(), 0),
            VMCE_ERR_NULL
        );
        assert_eq!(
            vmce_restore_native(dom, VMCE_NATIVE_V2, buf.as_ptr(), 3),
            VMCE_ERR_RECORD
        );
        assert_eq!(vmce_domain_destroy(dom), VMCE_OK);
    }
}
