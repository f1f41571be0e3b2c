//! # vmce-capi: vmce for hypervisors written in C
//!
//! A static library (`libvmce_capi.a`) and its hand-written header, `include/vmce.h`, which
//! documents every function. The flow is the README's integration flow, the same steps as
//! `examples/host_error.rs`: create a domain in caller-provided storage, emulate the guest's
//! MCA MSRs, collect and classify a host machine check through a callback table, translate
//! and inject it with per-vCPU outcomes, check for a pending #MC at VM entry, and save and
//! restore Xen or native records into caller buffers. Machine-check events are not wrapped.
//!
//! # Rules of the boundary
//! - **std.** The static library links Rust's `std` (a C program linking it adds
//!   `-lpthread -ldl -lm` on Linux); vmce itself is `no_std`, a freestanding build of this
//!   crate would need its own panic handler and is not offered yet.
//! - **No allocation.** A domain lives in a [`VmceDomain`] the caller provides
//!   ([`VMCE_DOMAIN_SIZE`] bytes, aligned to [`VMCE_DOMAIN_ALIGN`]); it holds up to
//!   [`VMCE_MAX_VCPUS`] vCPUs and [`vmce::broken::BROKEN_FRAMES_DEFAULT`] broken frames.
//!   Initializing one builds it on the stack first (about `VMCE_DOMAIN_SIZE` bytes), and a
//!   restore decodes every record onto the stack before applying them (a few KiB): call
//!   them where 16 KiB of stack is available.
//! - **No panics.** Every C value is checked (null pointers, lengths, enum values, vCPU ids)
//!   and a bad one is a negative [`VMCE_ERR_INVALID`]-style status, never a panic; enums
//!   cross as `uint32_t` so no C value is an invalid Rust enum.
//! - **Thread safety** is vmce's: `vmce_rdmsr`/`vmce_wrmsr`/`vmce_take_pending` of different
//!   vCPUs may run concurrently with each other and with one `vmce_inject`; inject and the
//!   saves and restores serialize on the domain lock (never call them from the host #MC
//!   handler itself, see `Domain::inject`).

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
#![allow(non_camel_case_types)]

use core::ffi::{c_char, c_void};
use core::fmt::Write as _;
use core::mem::{align_of, size_of};
use core::ptr;
use vmce::broken::BROKEN_FRAMES_DEFAULT;
use vmce::classify::{Disposition, ReflectClass};
use vmce::domain::{DomainError, SavedDomain, SavedVcpu};
use vmce::host::{HostBank, HostCapabilities, HostMce, MsrAccess, collect, release};
use vmce::record::native::{self, NativeRecord, NativeVersion};
use vmce::record::xen::{self, XenRelease};
use vmce::record::{LossPolicy, RecordError};
use vmce::registers::{McgCap, McgStatus, MciMisc, MciStatus};
use vmce::{
    DeliveryMode, DowngradeReason, GuestCpus, GuestFrame, GuestMce, GuestMemory, GuestPhysAddr,
    HostFrame, HostPhysAddr, InjectError, Profile, RdmsrOutcome, ShutdownReason, Vcpu, VcpuId,
    VcpuOutcome, Vendor, WrmsrOutcome,
};

// ---------------------------------------------------------------------------------------
// Constants (each mirrored by a #define in vmce.h; tests/c_flow.rs checks they agree).

/// Success.
pub const VMCE_OK: i32 = 0;
/// A required pointer was null.
pub const VMCE_ERR_NULL: i32 = -1;
/// An argument is out of range: an unknown enum value, a bank count above 32, a length.
pub const VMCE_ERR_INVALID: i32 = -2;
/// The domain storage is misaligned.
pub const VMCE_ERR_ALIGN: i32 = -3;
/// The host cannot back the profile (`Profile::check_host`).
pub const VMCE_ERR_PROFILE: i32 = -4;
/// Zero vCPUs, or more than [`VMCE_MAX_VCPUS`].
pub const VMCE_ERR_VCPU_COUNT: i32 = -5;
/// The vCPU id is not in the domain.
pub const VMCE_ERR_NO_SUCH_VCPU: i32 = -6;
/// The host address does not belong to the domain (the memory callback said no).
pub const VMCE_ERR_NOT_TRANSLATED: i32 = -7;
/// The guest address is beyond 52 bits.
pub const VMCE_ERR_ADDRESS: i32 = -8;
/// The caller's buffer is too small.
pub const VMCE_ERR_BUFFER_TOO_SMALL: i32 = -9;
/// The record format cannot carry the state and the policy refuses a lossy save.
pub const VMCE_ERR_WOULD_LOSE: i32 = -10;
/// A record is malformed or does not fit the domain (nothing was restored).
pub const VMCE_ERR_RECORD: i32 = -11;
/// The records are well formed but cannot be restored into this domain (nothing changed).
pub const VMCE_ERR_RESTORE: i32 = -12;
/// The storage was not initialized by `vmce_domain_init` (or was destroyed).
pub const VMCE_ERR_NOT_INITIALIZED: i32 = -13;

/// Most vCPUs one [`VmceDomain`] holds.
pub const VMCE_MAX_VCPUS: u32 = 64;
/// "No vCPU" where a vCPU id is optional (the consumer of an injection, the data vCPU).
pub const VMCE_NO_VCPU: u32 = u32::MAX;
/// Bytes of a [`VmceDomain`].
pub const VMCE_DOMAIN_SIZE: usize = size_of::<VmceDomain>();
/// Alignment of a [`VmceDomain`].
pub const VMCE_DOMAIN_ALIGN: usize = align_of::<VmceDomain>();
/// Most banks a host event holds (the architectural 32).
pub const VMCE_HOST_BANKS: u32 = 32;
/// Bytes of the text fields of [`vmce_classification`] and [`vmce_injection_report`].
pub const VMCE_TEXT_BYTES: usize = 160;

/// Vendor Intel.
pub const VMCE_VENDOR_INTEL: u32 = 0;
/// Vendor AMD.
pub const VMCE_VENDOR_AMD: u32 = 1;

/// `Profile::Intel`.
pub const VMCE_PROFILE_INTEL: u32 = 0;
/// `Profile::IntelLmce`.
pub const VMCE_PROFILE_INTEL_LMCE: u32 = 1;
/// `Profile::Amd`.
pub const VMCE_PROFILE_AMD: u32 = 2;

/// The MSR is vmce's and the access was emulated.
pub const VMCE_MSR_HANDLED: u32 = 0;
/// Not an MCA MSR: the hypervisor handles it.
pub const VMCE_MSR_NOT_OURS: u32 = 1;
/// The guest must get #GP(0).
pub const VMCE_MSR_RAISE_GP: u32 = 2;

/// The most severe bank is reflected into the owning guest.
pub const VMCE_DISPOSITION_REFLECT: u32 = 0;
/// The host handles it alone (corrected, UCNA, ...).
pub const VMCE_DISPOSITION_HOST_ONLY: u32 = 1;
/// Fatal to the host.
pub const VMCE_DISPOSITION_FATAL: u32 = 2;
/// No valid bank in the event.
pub const VMCE_DISPOSITION_NONE: u32 = 3;

/// Intel SRAO memory scrub.
pub const VMCE_CLASS_SRAO_MEMORY_SCRUB: u32 = 0;
/// Intel SRAR data load.
pub const VMCE_CLASS_SRAR_DATA_LOAD: u32 = 1;
/// Intel SRAR instruction fetch.
pub const VMCE_CLASS_SRAR_INSTRUCTION_FETCH: u32 = 2;
/// AMD uncorrected, poisoned.
pub const VMCE_CLASS_AMD_UNCORRECTED: u32 = 3;
/// Not a reflected class (disposition is not REFLECT).
pub const VMCE_CLASS_NONE: u32 = u32::MAX;

/// A #MC is pending on the vCPU.
pub const VMCE_OUTCOME_DELIVERED: u32 = 0;
/// The vCPU is not up: skipped (not a shutdown).
pub const VMCE_OUTCOME_SKIPPED: u32 = 1;
/// The vCPU cannot take the #MC: shut the domain down.
pub const VMCE_OUTCOME_SHUTDOWN: u32 = 2;
/// An outcome this header does not know yet.
pub const VMCE_OUTCOME_OTHER: u32 = 3;

/// No shutdown.
pub const VMCE_SHUTDOWN_NONE: u32 = 0;
/// `MCIP` was still set.
pub const VMCE_SHUTDOWN_MCIP: u32 = 1;
/// `CR4.MCE` was clear.
pub const VMCE_SHUTDOWN_MCE_DISABLED: u32 = 2;
/// A reason this header does not know yet.
pub const VMCE_SHUTDOWN_OTHER: u32 = 3;

/// Intel: every vCPU that is up.
pub const VMCE_MODE_BROADCAST: u32 = 0;
/// Intel LMCE: one vCPU.
pub const VMCE_MODE_LOCAL: u32 = 1;
/// AMD: one vCPU.
pub const VMCE_MODE_SINGLE: u32 = 2;
/// A mode this header does not know yet.
pub const VMCE_MODE_OTHER: u32 = 3;

/// Not downgraded.
pub const VMCE_DOWNGRADE_NONE: u32 = 0;
/// Action-required, but no vCPU consumed it.
pub const VMCE_DOWNGRADE_NO_CONSUMER: u32 = 1;
/// Action-required, but the consumer named is not up.
pub const VMCE_DOWNGRADE_CONSUMER_NOT_UP: u32 = 2;
/// A reason this header does not know yet.
pub const VMCE_DOWNGRADE_OTHER: u32 = 3;

/// Xen 4.2 `VMCE_VCPU` layout.
pub const VMCE_XEN_4_2: u32 = 0;
/// Xen 4.3 (to 4.9) layout.
pub const VMCE_XEN_4_3: u32 = 1;
/// Xen 4.10 and later layout.
pub const VMCE_XEN_4_10: u32 = 2;
/// Native record version 1.
pub const VMCE_NATIVE_V1: u32 = 1;
/// Native record version 2.
pub const VMCE_NATIVE_V2: u32 = 2;
/// Refuse a save that would lose state.
pub const VMCE_LOSS_REFUSE: u32 = 0;
/// Allow it and report what was dropped.
pub const VMCE_LOSS_ALLOW: u32 = 1;

/// Bytes of one Xen `VMCE_VCPU` record at most (descriptor and the 4.10 payload).
pub const VMCE_XEN_RECORD_BYTES: usize = 8 + 32;

// ---------------------------------------------------------------------------------------
// Types.

/// Caller-provided storage for one domain: `vmce_domain` in C, an opaque byte array of
/// [`VMCE_DOMAIN_SIZE`] bytes aligned to [`VMCE_DOMAIN_ALIGN`].
pub struct VmceDomain {
    /// Set by `vmce_domain_init`, cleared by `vmce_domain_destroy`.
    magic: u64,
    domain: vmce::Domain<heapless::Vec<Vcpu, { VMCE_MAX_VCPUS as usize }>>,
}

const MAGIC: u64 = 0x766d_6365_646f_6d31; // "vmcedom1"

/// The host's capabilities: vendor (`VMCE_VENDOR_*`) and raw `IA32_MCG_CAP`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct vmce_host_caps {
    /// `VMCE_VENDOR_*`.
    pub vendor: u32,
    /// Zero.
    pub reserved: u32,
    /// `IA32_MCG_CAP`.
    pub mcg_cap: u64,
}

/// The host MSR boundary: `read`/`write` implement `vmce::host::MsrAccess` on the CPU that
/// took the machine check.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct vmce_msr_ops {
    /// Passed back to every call.
    pub ctx: *mut c_void,
    /// Reads MSR `index`.
    pub read: Option<unsafe extern "C" fn(ctx: *mut c_void, index: u32) -> u64>,
    /// Writes `value` to MSR `index`.
    pub write: Option<unsafe extern "C" fn(ctx: *mut c_void, index: u32, value: u64)>,
}

/// One valid host bank.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct vmce_host_bank {
    /// Bank number.
    pub bank: u32,
    /// Zero.
    pub reserved: u32,
    /// `MCi_STATUS`.
    pub status: u64,
    /// `MCi_ADDR` (0 without `ADDRV`).
    pub addr: u64,
    /// `MCi_MISC` (0 without `MISCV`).
    pub misc: u64,
}

/// One host machine-check event: `IA32_MCG_STATUS` and the valid banks, in bank order.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct vmce_host_mce {
    /// `IA32_MCG_STATUS`.
    pub mcg_status: u64,
    /// Valid entries of `banks`.
    pub bank_count: u32,
    /// Zero.
    pub reserved: u32,
    /// The valid banks.
    pub banks: [vmce_host_bank; VMCE_HOST_BANKS as usize],
}

/// The verdict on a host event's most severe bank.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct vmce_classification {
    /// `VMCE_DISPOSITION_*`.
    pub disposition: u32,
    /// `VMCE_CLASS_*` (for REFLECT), else `VMCE_CLASS_NONE`.
    pub class_: u32,
    /// The bank (valid unless the disposition is NONE).
    pub bank: vmce_host_bank,
    /// The verdict in words, NUL-terminated (truncated to fit).
    pub text: [c_char; VMCE_TEXT_BYTES],
}

/// The guest's memory map: `guest_frame` stores the guest frame backing `host_frame` and
/// returns true, or returns false when the domain does not own it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct vmce_guest_memory {
    /// Passed back to every call.
    pub ctx: *mut c_void,
    /// The translation.
    pub guest_frame: Option<
        unsafe extern "C" fn(ctx: *mut c_void, host_frame: u64, guest_frame: *mut u64) -> bool,
    >,
}

/// A host error translated for one domain, ready for `vmce_inject`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct vmce_guest_mce {
    /// `VMCE_CLASS_*`.
    pub class_: u32,
    /// Zero.
    pub reserved: u32,
    /// The host's `MCG_STATUS`.
    pub host_mcg_status: u64,
    /// The host's `MCi_STATUS`.
    pub host_status: u64,
    /// The host-physical address.
    pub host_addr: u64,
    /// The same byte in the guest's physical address space.
    pub guest_addr: u64,
    /// The host's `MCi_MISC`.
    pub misc: u64,
}

/// What one vCPU got from an injection.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct vmce_vcpu_outcome {
    /// `VMCE_OUTCOME_*`.
    pub kind: u32,
    /// `VMCE_SHUTDOWN_*` (for SHUTDOWN).
    pub shutdown_reason: u32,
    /// DELIVERED: bank 1 holds the error (else `MCIP|RIPV` only).
    pub with_data: bool,
    /// DELIVERED: bank 1 still held an error, so `OVER` was set.
    pub overflow: bool,
}

/// The guest CPU state vmce cannot see, and the kick (`vmce::GuestCpus`). Called with the
/// domain lock held: must not block nor call back into the same domain's inject, save or
/// restore.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct vmce_guest_cpus {
    /// Passed back to every call.
    pub ctx: *mut c_void,
    /// Whether the guest brought the vCPU up (required).
    pub is_up: Option<unsafe extern "C" fn(ctx: *mut c_void, vcpu: u32) -> bool>,
    /// The vCPU's `CR4.MCE` (required).
    pub machine_check_enabled: Option<unsafe extern "C" fn(ctx: *mut c_void, vcpu: u32) -> bool>,
    /// Once per vCPU considered, after its state changed (may be null).
    pub notify: Option<
        unsafe extern "C" fn(ctx: *mut c_void, vcpu: u32, outcome: *const vmce_vcpu_outcome),
    >,
}

/// The summary of one injection.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct vmce_injection_report {
    /// `VMCE_MODE_*`.
    pub mode: u32,
    /// The vCPU whose bank 1 carries the error, or `VMCE_NO_VCPU`.
    pub data_vcpu: u32,
    /// vCPUs with a #MC now pending.
    pub delivered: u32,
    /// vCPUs not up, skipped.
    pub skipped: u32,
    /// vCPUs that must shut down (non-zero: shut the domain down).
    pub shutdown: u32,
    /// The first vCPU to shut down, or `VMCE_NO_VCPU`.
    pub first_shutdown_vcpu: u32,
    /// Its `VMCE_SHUTDOWN_*`.
    pub first_shutdown_reason: u32,
    /// `VMCE_DOWNGRADE_*`.
    pub downgraded: u32,
    /// The data vCPU's bank 1 held an error, so `OVER` was set.
    pub overflow: bool,
    /// The report in words, NUL-terminated (truncated to fit).
    pub text: [c_char; VMCE_TEXT_BYTES],
}

// ---------------------------------------------------------------------------------------
// Conversions (total: unknown values are errors, unknown future variants are *_OTHER).

fn profile_from(value: u32) -> Option<Profile> {
    match value {
        VMCE_PROFILE_INTEL => Some(Profile::Intel),
        VMCE_PROFILE_INTEL_LMCE => Some(Profile::IntelLmce),
        VMCE_PROFILE_AMD => Some(Profile::Amd),
        _ => None,
    }
}

fn host_from(caps: &vmce_host_caps) -> Option<HostCapabilities> {
    let vendor = match caps.vendor {
        VMCE_VENDOR_INTEL => Vendor::Intel,
        VMCE_VENDOR_AMD => Vendor::Amd,
        _ => return None,
    };
    Some(HostCapabilities::new(
        vendor,
        McgCap::from_bits_retain(caps.mcg_cap),
    ))
}

fn class_to(class: ReflectClass) -> u32 {
    #[allow(unreachable_patterns)]
    match class {
        ReflectClass::SraoMemoryScrub => VMCE_CLASS_SRAO_MEMORY_SCRUB,
        ReflectClass::SrarDataLoad => VMCE_CLASS_SRAR_DATA_LOAD,
        ReflectClass::SrarInstructionFetch => VMCE_CLASS_SRAR_INSTRUCTION_FETCH,
        ReflectClass::AmdUncorrected => VMCE_CLASS_AMD_UNCORRECTED,
        _ => VMCE_CLASS_NONE,
    }
}

fn class_from(value: u32) -> Option<ReflectClass> {
    match value {
        VMCE_CLASS_SRAO_MEMORY_SCRUB => Some(ReflectClass::SraoMemoryScrub),
        VMCE_CLASS_SRAR_DATA_LOAD => Some(ReflectClass::SrarDataLoad),
        VMCE_CLASS_SRAR_INSTRUCTION_FETCH => Some(ReflectClass::SrarInstructionFetch),
        VMCE_CLASS_AMD_UNCORRECTED => Some(ReflectClass::AmdUncorrected),
        _ => None,
    }
}

fn shutdown_to(reason: ShutdownReason) -> u32 {
    #[allow(unreachable_patterns)]
    match reason {
        ShutdownReason::MachineCheckInProgress => VMCE_SHUTDOWN_MCIP,
        ShutdownReason::MachineCheckDisabled => VMCE_SHUTDOWN_MCE_DISABLED,
        _ => VMCE_SHUTDOWN_OTHER,
    }
}

fn outcome_to(outcome: VcpuOutcome) -> vmce_vcpu_outcome {
    let mut out = vmce_vcpu_outcome {
        kind: VMCE_OUTCOME_OTHER,
        shutdown_reason: VMCE_SHUTDOWN_NONE,
        with_data: false,
        overflow: false,
    };
    #[allow(unreachable_patterns)]
    match outcome {
        VcpuOutcome::Delivered {
            with_data,
            overflow,
        } => {
            out.kind = VMCE_OUTCOME_DELIVERED;
            out.with_data = with_data;
            out.overflow = overflow;
        }
        VcpuOutcome::Skipped => out.kind = VMCE_OUTCOME_SKIPPED,
        VcpuOutcome::Shutdown(reason) => {
            out.kind = VMCE_OUTCOME_SHUTDOWN;
            out.shutdown_reason = shutdown_to(reason);
        }
        _ => {}
    }
    out
}

fn bank_to(bank: &HostBank) -> vmce_host_bank {
    vmce_host_bank {
        bank: u32::from(bank.bank),
        reserved: 0,
        status: bank.status.bits(),
        addr: bank.addr,
        misc: bank.misc.0,
    }
}

fn bank_from(bank: &vmce_host_bank) -> Option<HostBank> {
    let number = u8::try_from(bank.bank).ok()?;
    (bank.bank < VMCE_HOST_BANKS).then_some(HostBank {
        bank: number,
        status: MciStatus::from_bits_retain(bank.status),
        addr: bank.addr,
        misc: MciMisc(bank.misc),
    })
}

fn host_mce_from(event: &vmce_host_mce) -> Option<HostMce> {
    let count = usize::try_from(event.bank_count).ok()?;
    let banks = event.banks.get(..count)?;
    let mut out = heapless::Vec::new();
    for bank in banks {
        out.push(bank_from(bank)?).ok()?;
    }
    Some(HostMce {
        mcg_status: McgStatus::from_bits_retain(event.mcg_status),
        banks: out,
    })
}

/// Writes `args` into `out` as a NUL-terminated string, truncated to fit.
fn write_text(out: &mut [c_char; VMCE_TEXT_BYTES], args: core::fmt::Arguments<'_>) {
    struct Text<'a> {
        out: &'a mut [c_char; VMCE_TEXT_BYTES],
        len: usize,
    }
    impl core::fmt::Write for Text<'_> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            for byte in s.bytes() {
                // Keep the last byte for the NUL.
                if self.len + 1 >= VMCE_TEXT_BYTES {
                    break;
                }
                if let Some(slot) = self.out.get_mut(self.len) {
                    *slot = byte as c_char;
                    self.len += 1;
                }
            }
            Ok(())
        }
    }
    *out = [0; VMCE_TEXT_BYTES];
    let _ = Text { out, len: 0 }.write_fmt(args);
}

fn record_error(error: RecordError) -> i32 {
    match error {
        RecordError::BufferTooSmall { .. } => VMCE_ERR_BUFFER_TOO_SMALL,
        RecordError::WouldLose { .. } => VMCE_ERR_WOULD_LOSE,
        _ => VMCE_ERR_RECORD,
    }
}

fn policy_from(value: u32) -> Option<LossPolicy> {
    match value {
        VMCE_LOSS_REFUSE => Some(LossPolicy::Refuse),
        VMCE_LOSS_ALLOW => Some(LossPolicy::Allow),
        _ => None,
    }
}

fn xen_release_from(value: u32) -> Option<XenRelease> {
    match value {
        VMCE_XEN_4_2 => Some(XenRelease::Xen4_2),
        VMCE_XEN_4_3 => Some(XenRelease::Xen4_3),
        VMCE_XEN_4_10 => Some(XenRelease::Xen4_10),
        _ => None,
    }
}

fn native_version_from(value: u32) -> Option<NativeVersion> {
    match value {
        VMCE_NATIVE_V1 => Some(NativeVersion::V1),
        VMCE_NATIVE_V2 => Some(NativeVersion::V2),
        _ => None,
    }
}

/// The initialized domain behind `domain`, or the status to return.
///
/// # Safety
/// `domain` is null or points to a `VmceDomain`-sized, aligned, readable object that is
/// either initialized by `vmce_domain_init` or holds a value other than `MAGIC` in its
/// first 8 bytes.
unsafe fn domain_ref<'a>(domain: *const VmceDomain) -> Result<&'a VmceDomain, i32> {
    if domain.is_null() {
        return Err(VMCE_ERR_NULL);
    }
    if !domain.is_aligned() {
        return Err(VMCE_ERR_ALIGN);
    }
    // SAFETY: non-null and aligned; the caller guarantees the object is readable. Only the
    // magic is read before the domain is trusted.
    let magic = unsafe { ptr::addr_of!((*domain).magic).read() };
    if magic != MAGIC {
        return Err(VMCE_ERR_NOT_INITIALIZED);
    }
    // SAFETY: the magic says `vmce_domain_init` wrote a whole `VmceDomain` here.
    Ok(unsafe { &*domain })
}

/// `*ptr`, or `VMCE_ERR_NULL`.
///
/// # Safety
/// `ptr` is null or valid for reads of a `T` for `'a`.
unsafe fn arg<'a, T>(ptr: *const T) -> Result<&'a T, i32> {
    // SAFETY: the caller's contract.
    unsafe { ptr.as_ref() }.ok_or(VMCE_ERR_NULL)
}

/// `*ptr` for writing, or `VMCE_ERR_NULL`.
///
/// # Safety
/// `ptr` is null or valid for writes of a `T` for `'a`, and aliased by nothing else.
unsafe fn out<'a, T>(ptr: *mut T) -> Result<&'a mut T, i32> {
    // SAFETY: the caller's contract.
    unsafe { ptr.as_mut() }.ok_or(VMCE_ERR_NULL)
}

fn status(result: Result<(), i32>) -> i32 {
    match result {
        Ok(()) => VMCE_OK,
        Err(code) => code,
    }
}

// ---------------------------------------------------------------------------------------
// Domain.

/// Bytes a domain needs (`VMCE_DOMAIN_SIZE`).
#[unsafe(no_mangle)]
pub extern "C" fn vmce_domain_size() -> usize {
    VMCE_DOMAIN_SIZE
}

/// Alignment a domain needs (`VMCE_DOMAIN_ALIGN`).
#[unsafe(no_mangle)]
pub extern "C" fn vmce_domain_align() -> usize {
    VMCE_DOMAIN_ALIGN
}

/// Creates a domain of `vcpus` vCPUs under `profile` in `storage`.
///
/// # Safety
/// `storage` is null or valid for writes of `VMCE_DOMAIN_SIZE` bytes and not in use by
/// another thread; `host` is null or valid for reads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vmce_domain_init(
    storage: *mut VmceDomain,
    profile: u32,
    host: *const vmce_host_caps,
    vcpus: u32,
) -> i32 {
    // SAFETY: the caller's contract.
    let host = match unsafe { arg(host) } {
        Ok(host) => host,
        Err(code) => return code,
    };
    if storage.is_null() {
        return VMCE_ERR_NULL;
    }
    if !storage.is_aligned() {
        return VMCE_ERR_ALIGN;
    }
    let (Some(profile), Some(host)) = (profile_from(profile), host_from(host)) else {
        return VMCE_ERR_INVALID;
    };
    if vcpus == 0 || vcpus > VMCE_MAX_VCPUS {
        return VMCE_ERR_VCPU_COUNT;
    }
    let mut list = heapless::Vec::new();
    for _ in 0..vcpus {
        if list.push(Vcpu::new(profile)).is_err() {
            return VMCE_ERR_VCPU_COUNT;
        }
    }
    let domain = match vmce::Domain::new(profile, &host, list) {
        Ok(domain) => domain,
        Err(DomainError::Profile(_)) => return VMCE_ERR_PROFILE,
        Err(_) => return VMCE_ERR_VCPU_COUNT,
    };
    // SAFETY: non-null, aligned, and writable for a whole `VmceDomain` (the caller's
    // contract); whatever was there is overwritten without being dropped.
    unsafe {
        storage.write(VmceDomain {
            magic: MAGIC,
            domain,
        })
    };
    VMCE_OK
}

/// Ends a domain: the storage may be reused.
///
/// # Safety
/// As for every function taking a domain; no other call on it may be running.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vmce_domain_destroy(domain: *mut VmceDomain) -> i32 {
    // SAFETY: the caller's contract.
    if let Err(code) = unsafe { domain_ref(domain) } {
        return code;
    }
    // SAFETY: initialized (checked above), exclusively the caller's now.
    unsafe {
        ptr::drop_in_place(ptr::addr_of_mut!((*domain).domain));
        ptr::addr_of_mut!((*domain).magic).write(0);
    }
    VMCE_OK
}

/// The domain's vCPU count, or a negative status.
///
/// # Safety
/// `domain` is null or points to storage passed to `vmce_domain_init`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vmce_domain_vcpus(domain: *const VmceDomain) -> i64 {
    // SAFETY: the caller's contract.
    match unsafe { domain_ref(domain) } {
        Ok(domain) => i64::try_from(domain.domain.vcpus().len()).unwrap_or(i64::MAX),
        Err(code) => i64::from(code),
    }
}

fn vcpu_of(domain: &VmceDomain, vcpu: u32) -> Result<&Vcpu, i32> {
    domain
        .domain
        .vcpu(VcpuId(vcpu))
        .ok_or(VMCE_ERR_NO_SUCH_VCPU)
}

// ---------------------------------------------------------------------------------------
// MSR exits and VM entry.

/// Emulates the guest's `rdmsr` of `msr` on `vcpu`: `*outcome` is `VMCE_MSR_*`, `*value`
/// the value when handled (else 0).
///
/// # Safety
/// `domain` as for `vmce_domain_vcpus`; `outcome` and `value` null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vmce_rdmsr(
    domain: *const VmceDomain,
    vcpu: u32,
    msr: u32,
    outcome: *mut u32,
    value: *mut u64,
) -> i32 {
    // SAFETY: the caller's contract.
    status(unsafe {
        (|| {
            let domain = domain_ref(domain)?;
            let outcome = out(outcome)?;
            let value = out(value)?;
            let (kind, read) = match vcpu_of(domain, vcpu)?.rdmsr(msr) {
                RdmsrOutcome::Handled(read) => (VMCE_MSR_HANDLED, read),
                RdmsrOutcome::NotOurs => (VMCE_MSR_NOT_OURS, 0),
                RdmsrOutcome::RaiseGp(_) => (VMCE_MSR_RAISE_GP, 0),
            };
            *outcome = kind;
            *value = read;
            Ok(())
        })()
    })
}

/// Emulates the guest's `wrmsr` of `value` to `msr` on `vcpu`: `*outcome` is `VMCE_MSR_*`.
///
/// # Safety
/// `domain` as for `vmce_domain_vcpus`; `outcome` null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vmce_wrmsr(
    domain: *const VmceDomain,
    vcpu: u32,
    msr: u32,
    value: u64,
    outcome: *mut u32,
) -> i32 {
    // SAFETY: the caller's contract.
    status(unsafe {
        (|| {
            let domain = domain_ref(domain)?;
            let outcome = out(outcome)?;
            *outcome = match vcpu_of(domain, vcpu)?.wrmsr(msr, value) {
                WrmsrOutcome::Handled => VMCE_MSR_HANDLED,
                WrmsrOutcome::NotOurs => VMCE_MSR_NOT_OURS,
                WrmsrOutcome::RaiseGp(_) => VMCE_MSR_RAISE_GP,
            };
            Ok(())
        })()
    })
}

/// At VM entry: 1 when a #MC is pending on `vcpu` (now taken: inject vector 18), 0 when
/// not, or a negative status.
///
/// # Safety
/// `domain` as for `vmce_domain_vcpus`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vmce_take_pending(domain: *const VmceDomain, vcpu: u32) -> i32 {
    // SAFETY: the caller's contract.
    match unsafe { domain_ref(domain) }.and_then(|domain| vcpu_of(domain, vcpu)) {
        Ok(vcpu) => i32::from(vcpu.take_pending()),
        Err(code) => code,
    }
}

// ---------------------------------------------------------------------------------------
// Host machine checks.

struct CMsrs<'a> {
    ops: &'a vmce_msr_ops,
    read: unsafe extern "C" fn(*mut c_void, u32) -> u64,
    write: unsafe extern "C" fn(*mut c_void, u32, u64),
}

impl MsrAccess for CMsrs<'_> {
    fn read(&mut self, index: u32) -> u64 {
        // SAFETY: the C caller supplied the function and its context for this call.
        unsafe { (self.read)(self.ops.ctx, index) }
    }
    fn write(&mut self, index: u32, value: u64) {
        // SAFETY: as for `read`.
        unsafe { (self.write)(self.ops.ctx, index, value) }
    }
}

fn c_msrs(ops: &vmce_msr_ops) -> Result<CMsrs<'_>, i32> {
    match (ops.read, ops.write) {
        (Some(read), Some(write)) => Ok(CMsrs { ops, read, write }),
        _ => Err(VMCE_ERR_NULL),
    }
}

/// Reads the host's `IA32_MCG_STATUS` and every bank below the host's count through `ops`
/// into `*event` (call in the #MC handler, on the CPU that took it; then
/// `vmce_host_release`). Only `ops->read` is called.
///
/// # Safety
/// Pointers null or valid (`event` writable); `ops`'s functions callable with `ops->ctx`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vmce_host_collect(
    host: *const vmce_host_caps,
    ops: *const vmce_msr_ops,
    event: *mut vmce_host_mce,
) -> i32 {
    // SAFETY: the caller's contract.
    status(unsafe {
        (|| {
            let host = host_from(arg(host)?).ok_or(VMCE_ERR_INVALID)?;
            let mut msrs = c_msrs(arg(ops)?)?;
            let event = out(event)?;
            let collected = collect(&mut msrs, &host);
            event.mcg_status = collected.mcg_status.bits();
            event.reserved = 0;
            event.banks = [vmce_host_bank::default(); VMCE_HOST_BANKS as usize];
            let mut count = 0u32;
            for (slot, bank) in event.banks.iter_mut().zip(collected.banks()) {
                *slot = bank_to(bank);
                count += 1;
            }
            event.bank_count = count;
            Ok(())
        })()
    })
}

/// Clears the banks of `event` and then `IA32_MCG_STATUS` through `ops->write`.
///
/// # Safety
/// As for `vmce_host_collect` (`event` readable).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vmce_host_release(
    ops: *const vmce_msr_ops,
    event: *const vmce_host_mce,
) -> i32 {
    // SAFETY: the caller's contract.
    status(unsafe {
        (|| {
            let mut msrs = c_msrs(arg(ops)?)?;
            let event = host_mce_from(arg(event)?).ok_or(VMCE_ERR_INVALID)?;
            release(&mut msrs, &event);
            Ok(())
        })()
    })
}

/// Classifies every bank of `event` and stores the most severe one and its verdict in
/// `*verdict` (disposition `VMCE_DISPOSITION_NONE` when no bank is valid).
///
/// # Safety
/// Pointers null or valid (`verdict` writable).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vmce_host_classify(
    host: *const vmce_host_caps,
    event: *const vmce_host_mce,
    verdict: *mut vmce_classification,
) -> i32 {
    // SAFETY: the caller's contract.
    status(unsafe {
        (|| {
            let host = host_from(arg(host)?).ok_or(VMCE_ERR_INVALID)?;
            let event = host_mce_from(arg(event)?).ok_or(VMCE_ERR_INVALID)?;
            let verdict = out(verdict)?;
            verdict.class_ = VMCE_CLASS_NONE;
            verdict.bank = vmce_host_bank::default();
            match event.most_severe(&host) {
                None => {
                    verdict.disposition = VMCE_DISPOSITION_NONE;
                    write_text(&mut verdict.text, format_args!("no valid bank"));
                }
                Some((bank, disposition)) => {
                    verdict.bank = bank_to(&bank);
                    verdict.disposition = match disposition {
                        Disposition::Reflect(class) => {
                            verdict.class_ = class_to(class);
                            VMCE_DISPOSITION_REFLECT
                        }
                        Disposition::HostOnly(_) => VMCE_DISPOSITION_HOST_ONLY,
                        Disposition::Fatal(_) => VMCE_DISPOSITION_FATAL,
                    };
                    write_text(&mut verdict.text, format_args!("{disposition}"));
                }
            }
            Ok(())
        })()
    })
}

struct CMemory<'a> {
    memory: &'a vmce_guest_memory,
    guest_frame: unsafe extern "C" fn(*mut c_void, u64, *mut u64) -> bool,
}

impl GuestMemory for CMemory<'_> {
    fn guest_frame(&self, host: HostFrame) -> Option<GuestFrame> {
        let mut frame = 0u64;
        // SAFETY: the C caller supplied the function and its context; `frame` is writable.
        let owned = unsafe { (self.guest_frame)(self.memory.ctx, host.0, &mut frame) };
        owned.then_some(GuestFrame(frame))
    }
}

/// Translates a bank classified as reflected (`verdict->disposition` REFLECT) for the domain
/// whose memory `memory` describes, into `*error`. `VMCE_ERR_NOT_TRANSLATED` when the domain
/// does not own the address; `VMCE_ERR_INVALID` when the verdict is not REFLECT.
///
/// # Safety
/// Pointers null or valid (`error` writable); `memory`'s function callable with its context.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vmce_guest_mce_from_classified(
    verdict: *const vmce_classification,
    mcg_status: u64,
    memory: *const vmce_guest_memory,
    error: *mut vmce_guest_mce,
) -> i32 {
    // SAFETY: the caller's contract.
    status(unsafe {
        (|| {
            let verdict = arg(verdict)?;
            let memory = arg(memory)?;
            let guest_frame = memory.guest_frame.ok_or(VMCE_ERR_NULL)?;
            let error = out(error)?;
            if verdict.disposition != VMCE_DISPOSITION_REFLECT {
                return Err(VMCE_ERR_INVALID);
            }
            let class = class_from(verdict.class_).ok_or(VMCE_ERR_INVALID)?;
            let bank = bank_from(&verdict.bank).ok_or(VMCE_ERR_INVALID)?;
            let mce = GuestMce::from_classified(
                class,
                McgStatus::from_bits_retain(mcg_status),
                &bank,
                &CMemory {
                    memory,
                    guest_frame,
                },
            )
            .map_err(|_| VMCE_ERR_NOT_TRANSLATED)?;
            *error = vmce_guest_mce {
                class_: class_to(mce.class),
                reserved: 0,
                host_mcg_status: mce.host_mcg_status.bits(),
                host_status: mce.host_status.bits(),
                host_addr: mce.host_addr.0,
                guest_addr: mce.guest_addr.0,
                misc: mce.misc.0,
            };
            Ok(())
        })()
    })
}

struct CCpus<'a> {
    cpus: &'a vmce_guest_cpus,
    is_up: unsafe extern "C" fn(*mut c_void, u32) -> bool,
    enabled: unsafe extern "C" fn(*mut c_void, u32) -> bool,
}

impl GuestCpus for CCpus<'_> {
    fn is_up(&self, vcpu: VcpuId) -> bool {
        // SAFETY: the C caller supplied the function and its context.
        unsafe { (self.is_up)(self.cpus.ctx, vcpu.0) }
    }
    fn machine_check_enabled(&self, vcpu: VcpuId) -> bool {
        // SAFETY: as for `is_up`.
        unsafe { (self.enabled)(self.cpus.ctx, vcpu.0) }
    }
    fn notify(&mut self, vcpu: VcpuId, outcome: VcpuOutcome) {
        if let Some(notify) = self.cpus.notify {
            let outcome = outcome_to(outcome);
            // SAFETY: as for `is_up`; `outcome` lives across the call.
            unsafe { notify(self.cpus.ctx, vcpu.0, &outcome) }
        }
    }
}

/// Delivers `error` to the domain's vCPUs (`Domain::inject`): `consumer` is the vCPU that
/// consumed the data, or `VMCE_NO_VCPU`; `cpus->notify` hears every vCPU's outcome; the
/// summary goes to `*report`. Call from a deferred context, not the host #MC handler.
///
/// # Safety
/// Pointers null or valid (`report` writable); `cpus`'s functions callable with its context.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vmce_inject(
    domain: *const VmceDomain,
    error: *const vmce_guest_mce,
    consumer: u32,
    cpus: *const vmce_guest_cpus,
    report: *mut vmce_injection_report,
) -> i32 {
    // SAFETY: the caller's contract.
    status(unsafe {
        (|| {
            let domain = domain_ref(domain)?;
            let error = arg(error)?;
            let cpus = arg(cpus)?;
            let report = out(report)?;
            let (Some(is_up), Some(enabled)) = (cpus.is_up, cpus.machine_check_enabled) else {
                return Err(VMCE_ERR_NULL);
            };
            let mce = GuestMce {
                class: class_from(error.class_).ok_or(VMCE_ERR_INVALID)?,
                host_mcg_status: McgStatus::from_bits_retain(error.host_mcg_status),
                host_status: MciStatus::from_bits_retain(error.host_status),
                host_addr: HostPhysAddr(error.host_addr),
                guest_addr: GuestPhysAddr(error.guest_addr),
                misc: MciMisc(error.misc),
            };
            let consumer = (consumer != VMCE_NO_VCPU).then_some(VcpuId(consumer));
            let mut guest = CCpus {
                cpus,
                is_up,
                enabled,
            };
            let done =
                domain
                    .domain
                    .inject(&mce, consumer, &mut guest)
                    .map_err(|error| match error {
                        InjectError::NoSuchVcpu(_) => VMCE_ERR_NO_SUCH_VCPU,
                        InjectError::AddressOutOfRange(_) => VMCE_ERR_ADDRESS,
                        _ => VMCE_ERR_INVALID,
                    })?;
            #[allow(unreachable_patterns)]
            let mode = match done.mode {
                DeliveryMode::Broadcast => VMCE_MODE_BROADCAST,
                DeliveryMode::Local => VMCE_MODE_LOCAL,
                DeliveryMode::Single => VMCE_MODE_SINGLE,
                _ => VMCE_MODE_OTHER,
            };
            #[allow(unreachable_patterns)]
            let downgraded = match done.downgraded {
                None => VMCE_DOWNGRADE_NONE,
                Some(DowngradeReason::NoConsumer) => VMCE_DOWNGRADE_NO_CONSUMER,
                Some(DowngradeReason::ConsumerNotUp(_)) => VMCE_DOWNGRADE_CONSUMER_NOT_UP,
                Some(_) => VMCE_DOWNGRADE_OTHER,
            };
            report.mode = mode;
            report.data_vcpu = done.data_vcpu.map_or(VMCE_NO_VCPU, |vcpu| vcpu.0);
            report.delivered = done.delivered;
            report.skipped = done.skipped;
            report.shutdown = done.shutdown;
            report.first_shutdown_vcpu = done.first_shutdown.map_or(VMCE_NO_VCPU, |(v, _)| v.0);
            report.first_shutdown_reason = done
                .first_shutdown
                .map_or(VMCE_SHUTDOWN_NONE, |(_, reason)| shutdown_to(reason));
            report.downgraded = downgraded;
            report.overflow = done.overflow;
            write_text(&mut report.text, format_args!("{done}"));
            Ok(())
        })()
    })
}

// ---------------------------------------------------------------------------------------
// Save and restore.

/// Bytes `vmce_save_xen` may need for a domain of `vcpus` vCPUs.
#[unsafe(no_mangle)]
pub extern "C" fn vmce_xen_save_bytes(vcpus: u32) -> usize {
    VMCE_XEN_RECORD_BYTES.saturating_mul(vcpus as usize)
}

/// Bytes `vmce_save_native` may need for a domain of `vcpus` vCPUs.
#[unsafe(no_mangle)]
pub extern "C" fn vmce_native_save_bytes(vcpus: u32) -> usize {
    native::max_domain_record_bytes(BROKEN_FRAMES_DEFAULT)
        .saturating_add(native::MAX_VCPU_RECORD_BYTES.saturating_mul(vcpus as usize))
}

/// Stores `len` and `dropped` through their optional pointers.
///
/// # Safety
/// Each pointer null or writable.
unsafe fn store_written(written: *mut usize, len: usize, dropped: *mut u32, lost: u32) {
    // SAFETY: the caller's contract.
    unsafe {
        if let Some(written) = written.as_mut() {
            *written = len;
        }
        if let Some(dropped) = dropped.as_mut() {
            *dropped = lost;
        }
    }
}

/// The caller's output buffer, or an error.
///
/// # Safety
/// `buf` null or valid for writes of `len` bytes, aliased by nothing else during the call.
unsafe fn buffer<'a>(buf: *mut u8, len: usize) -> Result<&'a mut [u8], i32> {
    if buf.is_null() {
        return Err(VMCE_ERR_NULL);
    }
    if isize::try_from(len).is_err() {
        return Err(VMCE_ERR_INVALID);
    }
    // SAFETY: the caller's contract; non-null, length within isize.
    Ok(unsafe { core::slice::from_raw_parts_mut(buf, len) })
}

/// The caller's input buffer, or an error.
///
/// # Safety
/// `buf` null or valid for reads of `len` bytes, not written during the call.
unsafe fn input<'a>(buf: *const u8, len: usize) -> Result<&'a [u8], i32> {
    if buf.is_null() {
        return Err(VMCE_ERR_NULL);
    }
    if isize::try_from(len).is_err() {
        return Err(VMCE_ERR_INVALID);
    }
    // SAFETY: the caller's contract; non-null, length within isize.
    Ok(unsafe { core::slice::from_raw_parts(buf, len) })
}

/// Saves every vCPU as a Xen `VMCE_VCPU` record of `release` (`VMCE_XEN_*`), one after the
/// other in vCPU order, into `buf` (one consistent cut, under the domain lock). `*written`
/// gets the bytes written; `*dropped` (may be null) the state-field bits dropped under
/// `VMCE_LOSS_ALLOW` (`vmce::record::StateFields`). On error nothing useful is in
/// `buf`.
///
/// # Safety
/// `domain` as for `vmce_domain_vcpus`; `buf` writable for `len` bytes; `written` and
/// `dropped` null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vmce_save_xen(
    domain: *const VmceDomain,
    release: u32,
    policy: u32,
    buf: *mut u8,
    len: usize,
    written: *mut usize,
    dropped: *mut u32,
) -> i32 {
    // SAFETY: the caller's contract.
    status(unsafe {
        (|| {
            let domain = domain_ref(domain)?;
            let release = xen_release_from(release).ok_or(VMCE_ERR_INVALID)?;
            let policy = policy_from(policy).ok_or(VMCE_ERR_INVALID)?;
            let buf = buffer(buf, len)?;
            let save = domain.domain.save();
            let mut at = 0usize;
            let mut lost = 0u32;
            for vcpu in save.vcpus() {
                let rest = buf.get_mut(at..).ok_or(VMCE_ERR_BUFFER_TOO_SMALL)?;
                let encoding = xen::encode(&vcpu, release, policy, rest).map_err(record_error)?;
                at = at.saturating_add(encoding.len);
                lost |= u32::from(encoding.dropped.bits());
            }
            drop(save);
            store_written(written, at, dropped, lost);
            Ok(())
        })()
    })
}

/// Restores the domain's vCPUs from `len` bytes of consecutive Xen `VMCE_VCPU` records, read
/// as a `loader` (`VMCE_XEN_*`) release would. All or nothing; vCPUs without a record keep
/// their state.
///
/// # Safety
/// `domain` as for `vmce_domain_vcpus`; `buf` readable for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vmce_restore_xen(
    domain: *const VmceDomain,
    loader: u32,
    buf: *const u8,
    len: usize,
) -> i32 {
    // SAFETY: the caller's contract.
    status(unsafe {
        (|| {
            let domain = domain_ref(domain)?;
            let loader = xen_release_from(loader).ok_or(VMCE_ERR_INVALID)?;
            let buf = input(buf, len)?;
            let profile = domain.domain.profile();
            let count = u32::try_from(domain.domain.vcpus().len()).unwrap_or(u32::MAX);
            let mut saved: heapless::Vec<SavedVcpu, { VMCE_MAX_VCPUS as usize }> =
                heapless::Vec::new();
            let mut at = 0usize;
            while let Some(rest) = buf.get(at..).filter(|rest| !rest.is_empty()) {
                let (vcpu, used, _notes) =
                    xen::decode(rest, profile, count, loader).map_err(record_error)?;
                saved.push(vcpu).map_err(|_| VMCE_ERR_RESTORE)?;
                at = at.saturating_add(used);
            }
            domain
                .domain
                .restore_vcpus(&saved)
                .map_err(|_| VMCE_ERR_RESTORE)
        })()
    })
}

/// Saves the domain as native records of `version` (`VMCE_NATIVE_*`): the domain record
/// (V2; V1 has none) and then one record per vCPU, in vCPU order, one consistent cut.
/// `written`/`dropped` as for `vmce_save_xen`.
///
/// # Safety
/// As for `vmce_save_xen`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vmce_save_native(
    domain: *const VmceDomain,
    version: u32,
    policy: u32,
    buf: *mut u8,
    len: usize,
    written: *mut usize,
    dropped: *mut u32,
) -> i32 {
    // SAFETY: the caller's contract.
    status(unsafe {
        (|| {
            let domain = domain_ref(domain)?;
            let version = native_version_from(version).ok_or(VMCE_ERR_INVALID)?;
            let policy = policy_from(policy).ok_or(VMCE_ERR_INVALID)?;
            let buf = buffer(buf, len)?;
            let save = domain.domain.save();
            let head = native::encode_domain(&save.domain(), version, policy, buf)
                .map_err(record_error)?;
            let mut at = head.len;
            let mut lost = u32::from(head.dropped.bits());
            for vcpu in save.vcpus() {
                let rest = buf.get_mut(at..).ok_or(VMCE_ERR_BUFFER_TOO_SMALL)?;
                let encoding =
                    native::encode_vcpu(&vcpu, version, policy, rest).map_err(record_error)?;
                at = at.saturating_add(encoding.len);
                lost |= u32::from(encoding.dropped.bits());
            }
            drop(save);
            store_written(written, at, dropped, lost);
            Ok(())
        })()
    })
}

/// Restores the domain from `len` bytes of native records (a loader of versions up to
/// `loader`): with a domain record every vCPU needs a record; without one (V1) vCPUs without
/// a record keep their state. All or nothing.
///
/// # Safety
/// As for `vmce_restore_xen`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vmce_restore_native(
    domain: *const VmceDomain,
    loader: u32,
    buf: *const u8,
    len: usize,
) -> i32 {
    // SAFETY: the caller's contract.
    status(unsafe {
        (|| {
            let domain = domain_ref(domain)?;
            let loader = native_version_from(loader).ok_or(VMCE_ERR_INVALID)?;
            let buf = input(buf, len)?;
            let profile = domain.domain.profile();
            let count = u32::try_from(domain.domain.vcpus().len()).unwrap_or(u32::MAX);
            let mut saved: heapless::Vec<SavedVcpu, { VMCE_MAX_VCPUS as usize }> =
                heapless::Vec::new();
            let mut record: Option<SavedDomain> = None;
            let mut at = 0usize;
            while let Some(rest) = buf.get(at..).filter(|rest| !rest.is_empty()) {
                let (decoded, used) =
                    native::decode(rest, profile, count, loader).map_err(record_error)?;
                match decoded {
                    NativeRecord::Vcpu(vcpu) => {
                        saved.push(vcpu).map_err(|_| VMCE_ERR_RESTORE)?;
                    }
                    NativeRecord::Domain(whole) => {
                        if record.replace(whole).is_some() {
                            return Err(VMCE_ERR_RECORD);
                        }
                    }
                }
                at = at.saturating_add(used);
            }
            domain
                .domain
                .restore(record.as_ref(), &saved)
                .map_err(|_| VMCE_ERR_RESTORE)
        })()
    })
}
