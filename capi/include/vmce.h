/*
 * vmce.h: the C ABI of vmce, a virtual Machine Check Architecture for x86 hypervisors.
 *
 * C11 (or C++11). Link with libvmce_capi.a (`cargo build -p vmce-capi`, target/<profile>/libvmce_capi.a)
 * and, on Linux, -lpthread -ldl -lm (the library links Rust's std).
 *
 * Hand-written; capi/tests/c_flow.rs compiles tests/c/flow.c against it and checks every
 * size, alignment, offset and constant below against the Rust side.
 *
 * Rules:
 * - Nothing is allocated: a domain lives in a `vmce_domain` the caller provides (static,
 *   embedded in its own domain structure, or any VMCE_DOMAIN_SIZE bytes aligned to
 *   VMCE_DOMAIN_ALIGN). It holds up to VMCE_MAX_VCPUS vCPUs and 64 broken guest frames.
 *   vmce_domain_init and the restores work on the stack: allow them 16 KiB of it.
 * - Every function checks its arguments (null pointers, enum values, vCPU ids, lengths) and
 *   returns a negative VMCE_ERR_* instead of failing; no Rust panic crosses the boundary.
 * - Enumerations are uint32_t with VMCE_* constants; a value a function does not know is
 *   VMCE_ERR_INVALID. Values ending in _OTHER stand for outcomes a newer library may add.
 * - vmce_rdmsr, vmce_wrmsr and vmce_take_pending of different vCPUs may run concurrently,
 *   and alongside one vmce_inject. vmce_inject, the saves and the restores take the domain
 *   lock: never call them from the host #MC handler itself (it may have interrupted a
 *   holder); collect and release there, inject from a deferred context.
 * - Machine-check events (issue 14, part 1) are not wrapped yet.
 */
#ifndef VMCE_H
#define VMCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define VMCE_ALIGNAS(n) alignas(n)
extern "C" {
#else
#define VMCE_ALIGNAS(n) _Alignas(n)
#endif

/* ---- Status codes: every int32_t-returning function returns VMCE_OK or one of these. */
#define VMCE_OK 0
#define VMCE_ERR_NULL (-1)             /* a required pointer (or callback) was null */
#define VMCE_ERR_INVALID (-2)          /* an unknown enum value, a bank count above 32, ... */
#define VMCE_ERR_ALIGN (-3)            /* the domain storage is misaligned */
#define VMCE_ERR_PROFILE (-4)          /* the host cannot back the profile */
#define VMCE_ERR_VCPU_COUNT (-5)       /* 0 vCPUs or more than VMCE_MAX_VCPUS */
#define VMCE_ERR_NO_SUCH_VCPU (-6)     /* the vCPU id is not in the domain */
#define VMCE_ERR_NOT_TRANSLATED (-7)   /* the domain does not own the host address */
#define VMCE_ERR_ADDRESS (-8)          /* the guest address is beyond 52 bits */
#define VMCE_ERR_BUFFER_TOO_SMALL (-9) /* the caller's buffer is too small */
#define VMCE_ERR_WOULD_LOSE (-10)      /* the format cannot carry the state (VMCE_LOSS_REFUSE) */
#define VMCE_ERR_RECORD (-11)          /* a record is malformed or does not fit the domain */
#define VMCE_ERR_RESTORE (-12)         /* records fine, but not restorable here; nothing changed */
#define VMCE_ERR_NOT_INITIALIZED (-13) /* storage not set up by vmce_domain_init */

/* ---- Sizes. */
#define VMCE_MAX_VCPUS 64u        /* vCPUs one vmce_domain holds at most */
#define VMCE_NO_VCPU 0xFFFFFFFFu  /* "no vCPU" where a vCPU id is optional */
#define VMCE_DOMAIN_SIZE 7216u    /* bytes of a vmce_domain (vmce_domain_size()) */
#define VMCE_DOMAIN_ALIGN 8u      /* its alignment (vmce_domain_align()) */
#define VMCE_HOST_BANKS 32u       /* banks a host event holds at most */
#define VMCE_TEXT_BYTES 160u      /* bytes of the text fields, NUL included */
#define VMCE_XEN_RECORD_BYTES 40u /* one Xen VMCE_VCPU record at most (descriptor + payload) */

/* ---- Enumerations (uint32_t). */
#define VMCE_VENDOR_INTEL 0u
#define VMCE_VENDOR_AMD 1u

#define VMCE_PROFILE_INTEL 0u      /* Intel: broadcast delivery */
#define VMCE_PROFILE_INTEL_LMCE 1u /* Intel with LMCE: local delivery once the guest opts in */
#define VMCE_PROFILE_AMD 2u        /* AMD: one vCPU */

/* The three-way MSR outcome. */
#define VMCE_MSR_HANDLED 0u  /* an MCA MSR, emulated (rdmsr: the value is valid) */
#define VMCE_MSR_NOT_OURS 1u /* not an MCA MSR: the hypervisor handles it */
#define VMCE_MSR_RAISE_GP 2u /* inject #GP(0) into the guest */

#define VMCE_DISPOSITION_REFLECT 0u   /* reflect into the owning guest */
#define VMCE_DISPOSITION_HOST_ONLY 1u /* the host's alone (corrected, UCNA, ...) */
#define VMCE_DISPOSITION_FATAL 2u     /* fatal to the host */
#define VMCE_DISPOSITION_NONE 3u      /* no valid bank */

#define VMCE_CLASS_SRAO_MEMORY_SCRUB 0u
#define VMCE_CLASS_SRAR_DATA_LOAD 1u
#define VMCE_CLASS_SRAR_INSTRUCTION_FETCH 2u
#define VMCE_CLASS_AMD_UNCORRECTED 3u
#define VMCE_CLASS_NONE 0xFFFFFFFFu

#define VMCE_OUTCOME_DELIVERED 0u /* a #MC is pending on the vCPU */
#define VMCE_OUTCOME_SKIPPED 1u   /* not up: skipped, not a shutdown */
#define VMCE_OUTCOME_SHUTDOWN 2u  /* up but cannot take it: shut the domain down */
#define VMCE_OUTCOME_OTHER 3u

#define VMCE_SHUTDOWN_NONE 0u
#define VMCE_SHUTDOWN_MCIP 1u         /* MCIP still set */
#define VMCE_SHUTDOWN_MCE_DISABLED 2u /* CR4.MCE clear */
#define VMCE_SHUTDOWN_OTHER 3u

#define VMCE_MODE_BROADCAST 0u /* Intel: every vCPU that is up */
#define VMCE_MODE_LOCAL 1u     /* Intel LMCE: one vCPU */
#define VMCE_MODE_SINGLE 2u    /* AMD: one vCPU */
#define VMCE_MODE_OTHER 3u

#define VMCE_DOWNGRADE_NONE 0u
#define VMCE_DOWNGRADE_NO_CONSUMER 1u    /* action-required, consumed by no vCPU */
#define VMCE_DOWNGRADE_CONSUMER_NOT_UP 2u /* action-required, the consumer is not up */
#define VMCE_DOWNGRADE_OTHER 3u

#define VMCE_XEN_4_2 0u  /* Xen VMCE_VCPU layouts */
#define VMCE_XEN_4_3 1u
#define VMCE_XEN_4_10 2u
#define VMCE_NATIVE_V1 1u /* vmce's own record versions */
#define VMCE_NATIVE_V2 2u
#define VMCE_LOSS_REFUSE 0u /* refuse a save that would lose state */
#define VMCE_LOSS_ALLOW 1u  /* allow it; report what was dropped */

/* ---- Types. */

/* Storage for one domain: opaque, caller-provided, never moved while in use. */
typedef struct vmce_domain {
    VMCE_ALIGNAS(VMCE_DOMAIN_ALIGN) unsigned char opaque[VMCE_DOMAIN_SIZE];
} vmce_domain;

/* The host's capabilities, read once at boot. */
typedef struct vmce_host_caps {
    uint32_t vendor;   /* VMCE_VENDOR_* */
    uint32_t reserved; /* 0 */
    uint64_t mcg_cap;  /* IA32_MCG_CAP */
} vmce_host_caps;

/* The host MSR boundary (vmce::host::MsrAccess), on the CPU that took the #MC. vmce only
 * names MSRs the host's MCG_CAP says exist. Both functions are required. */
typedef struct vmce_msr_ops {
    void *ctx;
    uint64_t (*read)(void *ctx, uint32_t index);
    void (*write)(void *ctx, uint32_t index, uint64_t value);
} vmce_msr_ops;

/* One valid host bank. */
typedef struct vmce_host_bank {
    uint32_t bank;     /* bank number, below 32 */
    uint32_t reserved; /* 0 */
    uint64_t status;   /* MCi_STATUS */
    uint64_t addr;     /* MCi_ADDR, 0 without ADDRV */
    uint64_t misc;     /* MCi_MISC, 0 without MISCV */
} vmce_host_bank;

/* One host machine check: MCG_STATUS and the valid banks in bank order. */
typedef struct vmce_host_mce {
    uint64_t mcg_status;
    uint32_t bank_count; /* valid entries of banks, at most VMCE_HOST_BANKS */
    uint32_t reserved;
    vmce_host_bank banks[VMCE_HOST_BANKS];
} vmce_host_mce;

/* The verdict on an event's most severe bank. */
typedef struct vmce_classification {
    uint32_t disposition; /* VMCE_DISPOSITION_* */
    uint32_t class_;      /* VMCE_CLASS_* for REFLECT, else VMCE_CLASS_NONE */
    vmce_host_bank bank;  /* the bank (zero for NONE) */
    char text[VMCE_TEXT_BYTES]; /* the verdict in words, NUL-terminated */
} vmce_classification;

/* The owning guest's memory map: store the guest frame backing host_frame in *guest_frame
 * and return true, or return false when the domain does not own it. Required. */
typedef struct vmce_guest_memory {
    void *ctx;
    bool (*guest_frame)(void *ctx, uint64_t host_frame, uint64_t *guest_frame);
} vmce_guest_memory;

/* A host error translated for one domain (from vmce_guest_mce_from_classified). */
typedef struct vmce_guest_mce {
    uint32_t class_; /* VMCE_CLASS_* */
    uint32_t reserved;
    uint64_t host_mcg_status;
    uint64_t host_status;
    uint64_t host_addr;
    uint64_t guest_addr; /* the same byte in the guest's physical address space */
    uint64_t misc;
} vmce_guest_mce;

/* What one vCPU got from an injection. */
typedef struct vmce_vcpu_outcome {
    uint32_t kind;            /* VMCE_OUTCOME_* */
    uint32_t shutdown_reason; /* VMCE_SHUTDOWN_* for SHUTDOWN */
    bool with_data;           /* DELIVERED: bank 1 holds the error (else MCIP|RIPV only) */
    bool overflow;            /* DELIVERED: OVER set, bank 1 still held an error */
} vmce_vcpu_outcome;

/* What vmce asks of the guest's vCPUs (vmce::GuestCpus). Called under the domain lock: must
 * not block nor call vmce_inject/save/restore on the same domain. is_up and
 * machine_check_enabled are required; notify (the kick) may be null. */
typedef struct vmce_guest_cpus {
    void *ctx;
    bool (*is_up)(void *ctx, uint32_t vcpu);                 /* started and not offline */
    bool (*machine_check_enabled)(void *ctx, uint32_t vcpu); /* the guest's CR4.MCE */
    void (*notify)(void *ctx, uint32_t vcpu, const vmce_vcpu_outcome *outcome);
} vmce_guest_cpus;

/* The summary of one injection. */
typedef struct vmce_injection_report {
    uint32_t mode;                  /* VMCE_MODE_* */
    uint32_t data_vcpu;             /* bank 1 carries the error there, or VMCE_NO_VCPU */
    uint32_t delivered;             /* vCPUs with a #MC pending */
    uint32_t skipped;               /* vCPUs not up */
    uint32_t shutdown;              /* vCPUs that must shut down: non-zero, crash the domain */
    uint32_t first_shutdown_vcpu;   /* or VMCE_NO_VCPU */
    uint32_t first_shutdown_reason; /* VMCE_SHUTDOWN_* */
    uint32_t downgraded;            /* VMCE_DOWNGRADE_* */
    bool overflow;                  /* OVER set on the data vCPU */
    char text[VMCE_TEXT_BYTES];     /* the report in words, NUL-terminated */
} vmce_injection_report;

/* ---- Domain. */

/* Bytes and alignment a vmce_domain needs (VMCE_DOMAIN_SIZE, VMCE_DOMAIN_ALIGN). */
size_t vmce_domain_size(void);
size_t vmce_domain_align(void);

/* Creates a domain of `vcpus` vCPUs (1..VMCE_MAX_VCPUS) under `profile` (VMCE_PROFILE_*) in
 * `storage`, checked against the host. Overwrites whatever was there; the storage must not
 * move until vmce_domain_destroy. Uses about VMCE_DOMAIN_SIZE bytes of stack.
 * Errors: NULL, ALIGN, INVALID (profile, vendor), VCPU_COUNT, PROFILE. */
int32_t vmce_domain_init(vmce_domain *storage, uint32_t profile, const vmce_host_caps *host,
                         uint32_t vcpus);

/* Ends the domain; the storage may be reused. No other call on it may be running.
 * Errors: NULL, ALIGN, NOT_INITIALIZED. */
int32_t vmce_domain_destroy(vmce_domain *domain);

/* The domain's vCPU count, or a negative VMCE_ERR_*. */
int64_t vmce_domain_vcpus(const vmce_domain *domain);

/* ---- MSR exits and VM entry. */

/* The guest's rdmsr of `msr` on `vcpu`: *outcome is VMCE_MSR_*; *value the value when
 * HANDLED, else 0. Errors: NULL, NOT_INITIALIZED, NO_SUCH_VCPU. */
int32_t vmce_rdmsr(const vmce_domain *domain, uint32_t vcpu, uint32_t msr, uint32_t *outcome,
                   uint64_t *value);

/* The guest's wrmsr of `value` to `msr` on `vcpu`: *outcome is VMCE_MSR_*.
 * Errors: as vmce_rdmsr. */
int32_t vmce_wrmsr(const vmce_domain *domain, uint32_t vcpu, uint32_t msr, uint64_t value,
                   uint32_t *outcome);

/* At VM entry: 1 when a #MC is pending on `vcpu` (now taken: inject vector 18), 0 when not,
 * or a negative VMCE_ERR_*. */
int32_t vmce_take_pending(const vmce_domain *domain, uint32_t vcpu);

/* ---- Host machine checks. */

/* In the host #MC handler: reads MCG_STATUS and every bank below the host's count through
 * ops->read into *event (valid banks only; ADDR/MISC only when ADDRV/MISCV). Then call
 * vmce_host_release. Errors: NULL, INVALID (vendor). */
int32_t vmce_host_collect(const vmce_host_caps *host, const vmce_msr_ops *ops,
                          vmce_host_mce *event);

/* Writes 0 to each collected MCi_STATUS and then to MCG_STATUS through ops->write, so the
 * next machine check is not a shutdown. Errors: NULL, INVALID (bank_count, bank numbers). */
int32_t vmce_host_release(const vmce_msr_ops *ops, const vmce_host_mce *event);

/* Classifies every bank of `event`; *verdict gets the most severe one (fatal before
 * action-required before action-optional before host-only, lowest bank on a tie), or
 * VMCE_DISPOSITION_NONE. Errors: NULL, INVALID. */
int32_t vmce_host_classify(const vmce_host_caps *host, const vmce_host_mce *event,
                           vmce_classification *verdict);

/* For a REFLECT verdict: translates the bank's address for the domain whose memory
 * `memory` describes (page frame rewritten, offset and MISC kept) into *error.
 * `mcg_status` is the event's. Errors: NULL, INVALID (not REFLECT), NOT_TRANSLATED. */
int32_t vmce_guest_mce_from_classified(const vmce_classification *verdict, uint64_t mcg_status,
                                       const vmce_guest_memory *memory, vmce_guest_mce *error);

/* From a deferred context (not the #MC handler): delivers `error` to the domain's vCPUs as
 * the profile requires and puts its frame on the broken-frame list. `consumer` is the vCPU
 * that consumed the data, or VMCE_NO_VCPU (an action-required error is then delivered as
 * action-optional). cpus->notify hears each vCPU's outcome; the summary goes to *report.
 * Errors: NULL, NOT_INITIALIZED, INVALID (class), NO_SUCH_VCPU (consumer), ADDRESS;
 * nothing changes then. */
int32_t vmce_inject(const vmce_domain *domain, const vmce_guest_mce *error, uint32_t consumer,
                    const vmce_guest_cpus *cpus, vmce_injection_report *report);

/* ---- Save and restore (vCPUs paused for the final save). */

/* Buffer bytes vmce_save_xen / vmce_save_native may need for `vcpus` vCPUs. */
size_t vmce_xen_save_bytes(uint32_t vcpus);
size_t vmce_native_save_bytes(uint32_t vcpus);

/* Writes one Xen VMCE_VCPU record (HVM descriptor + payload) per vCPU in vCPU order, in the
 * layout of `release` (VMCE_XEN_*), into buf[0..len), as one consistent cut of the domain.
 * *written (may be null) gets the bytes written; *dropped (may be null) the StateFields bits
 * dropped under VMCE_LOSS_ALLOW. Xen's layouts never carry MCG_STATUS, bank 1 or a pending
 * #MC: with one in flight, VMCE_LOSS_REFUSE gives WOULD_LOSE.
 * Errors: NULL, NOT_INITIALIZED, INVALID, WOULD_LOSE, BUFFER_TOO_SMALL, RECORD. */
int32_t vmce_save_xen(const vmce_domain *domain, uint32_t release, uint32_t policy,
                      uint8_t *buf, size_t len, size_t *written, uint32_t *dropped);

/* Restores vCPUs from `len` bytes of consecutive VMCE_VCPU records, as a `loader`
 * (VMCE_XEN_*) release of Xen would load them. All or nothing; vCPUs without a record keep
 * their state. Errors: NULL, NOT_INITIALIZED, INVALID, RECORD, RESTORE. */
int32_t vmce_restore_xen(const vmce_domain *domain, uint32_t loader, const uint8_t *buf,
                         size_t len);

/* Writes vmce's native records of `version` (VMCE_NATIVE_*): the domain record (V2 only:
 * profile, vCPU count, broken frames) then one per vCPU (V2 carries a #MC in flight), as
 * one consistent cut. written/dropped as for vmce_save_xen. */
int32_t vmce_save_native(const vmce_domain *domain, uint32_t version, uint32_t policy,
                         uint8_t *buf, size_t len, size_t *written, uint32_t *dropped);

/* Restores from `len` bytes of native records (versions up to `loader`). With a domain
 * record every vCPU needs one; without (V1) vCPUs without a record keep their state. Pending
 * #MCs are re-armed. All or nothing. Errors: as vmce_restore_xen. */
int32_t vmce_restore_native(const vmce_domain *domain, uint32_t loader, const uint8_t *buf,
                            size_t len);

#ifdef __cplusplus
}
#endif

#endif /* VMCE_H */
