/*
 * flow.c: the README's integration flow through vmce.h, the same steps as
 * examples/host_error.rs: one host memory error into a 4-vCPU guest that runs 3.
 *
 *   flow abi          prints "abi NAME VALUE" for every size, alignment, offset and constant
 *   flow [srar|srao|lmce|amd]   tells the story (default srar)
 *
 * The host CPU is simulated at the MSR boundary (struct sim_host behind vmce_msr_ops),
 * where a hypervisor's rdmsr/wrmsr would be. Exit status 0 when the story ran, 1 when a
 * call failed unexpectedly.
 */
#include "vmce.h"

#include <inttypes.h>
#include <stdalign.h>
#include <stdio.h>
#include <string.h>

_Static_assert(sizeof(vmce_domain) == VMCE_DOMAIN_SIZE, "vmce_domain size");
_Static_assert(alignof(vmce_domain) == VMCE_DOMAIN_ALIGN, "vmce_domain alignment");

#define VCPUS 4u
#define GUEST_RAM_HOST_FRAME 0x4000u /* guest frame g is host frame 0x4000 + g */
#define GUEST_RAM_FRAMES 0x8000u

static int failures;

#define CHECK(call)                                                                        \
    do {                                                                                   \
        int32_t rc_ = (call);                                                              \
        if (rc_ != VMCE_OK) {                                                              \
            printf("FAILED: %s = %d\n", #call, (int)rc_);                                 \
            failures++;                                                                    \
            return 1;                                                                      \
        }                                                                                  \
    } while (0)

/* ---- The ABI table the Rust test compares with its own values. */
static void print_abi(void) {
#define SIZE(t) printf("abi sizeof(%s) %zu\nabi alignof(%s) %zu\n", #t, sizeof(t), #t, alignof(t))
#define OFF(t, f) printf("abi offsetof(%s.%s) %zu\n", #t, #f, offsetof(t, f))
#define CONST(c) printf("abi %s %lld\n", #c, (long long)(c))
    SIZE(vmce_domain);
    SIZE(vmce_host_caps);
    SIZE(vmce_msr_ops);
    SIZE(vmce_host_bank);
    SIZE(vmce_host_mce);
    SIZE(vmce_classification);
    SIZE(vmce_guest_memory);
    SIZE(vmce_guest_mce);
    SIZE(vmce_vcpu_outcome);
    SIZE(vmce_guest_cpus);
    SIZE(vmce_injection_report);
    OFF(vmce_host_caps, mcg_cap);
    OFF(vmce_msr_ops, write);
    OFF(vmce_host_bank, misc);
    OFF(vmce_host_mce, banks);
    OFF(vmce_classification, bank);
    OFF(vmce_classification, text);
    OFF(vmce_guest_mce, guest_addr);
    OFF(vmce_guest_mce, misc);
    OFF(vmce_vcpu_outcome, with_data);
    OFF(vmce_vcpu_outcome, overflow);
    OFF(vmce_guest_cpus, notify);
    OFF(vmce_injection_report, downgraded);
    OFF(vmce_injection_report, overflow);
    OFF(vmce_injection_report, text);
    printf("abi vmce_domain_size() %zu\nabi vmce_domain_align() %zu\n", vmce_domain_size(),
           vmce_domain_align());
    CONST(VMCE_OK);
    CONST(VMCE_ERR_NULL);
    CONST(VMCE_ERR_INVALID);
    CONST(VMCE_ERR_ALIGN);
    CONST(VMCE_ERR_PROFILE);
    CONST(VMCE_ERR_VCPU_COUNT);
    CONST(VMCE_ERR_NO_SUCH_VCPU);
    CONST(VMCE_ERR_NOT_TRANSLATED);
    CONST(VMCE_ERR_ADDRESS);
    CONST(VMCE_ERR_BUFFER_TOO_SMALL);
    CONST(VMCE_ERR_WOULD_LOSE);
    CONST(VMCE_ERR_RECORD);
    CONST(VMCE_ERR_RESTORE);
    CONST(VMCE_ERR_NOT_INITIALIZED);
    CONST(VMCE_MAX_VCPUS);
    CONST(VMCE_NO_VCPU);
    CONST(VMCE_DOMAIN_SIZE);
    CONST(VMCE_DOMAIN_ALIGN);
    CONST(VMCE_HOST_BANKS);
    CONST(VMCE_TEXT_BYTES);
    CONST(VMCE_XEN_RECORD_BYTES);
    CONST(VMCE_VENDOR_INTEL);
    CONST(VMCE_VENDOR_AMD);
    CONST(VMCE_PROFILE_INTEL);
    CONST(VMCE_PROFILE_INTEL_LMCE);
    CONST(VMCE_PROFILE_AMD);
    CONST(VMCE_MSR_HANDLED);
    CONST(VMCE_MSR_NOT_OURS);
    CONST(VMCE_MSR_RAISE_GP);
    CONST(VMCE_DISPOSITION_REFLECT);
    CONST(VMCE_DISPOSITION_HOST_ONLY);
    CONST(VMCE_DISPOSITION_FATAL);
    CONST(VMCE_DISPOSITION_NONE);
    CONST(VMCE_CLASS_SRAO_MEMORY_SCRUB);
    CONST(VMCE_CLASS_SRAR_DATA_LOAD);
    CONST(VMCE_CLASS_SRAR_INSTRUCTION_FETCH);
    CONST(VMCE_CLASS_AMD_UNCORRECTED);
    CONST(VMCE_CLASS_NONE);
    CONST(VMCE_OUTCOME_DELIVERED);
    CONST(VMCE_OUTCOME_SKIPPED);
    CONST(VMCE_OUTCOME_SHUTDOWN);
    CONST(VMCE_OUTCOME_OTHER);
    CONST(VMCE_SHUTDOWN_NONE);
    CONST(VMCE_SHUTDOWN_MCIP);
    CONST(VMCE_SHUTDOWN_MCE_DISABLED);
    CONST(VMCE_SHUTDOWN_OTHER);
    CONST(VMCE_MODE_BROADCAST);
    CONST(VMCE_MODE_LOCAL);
    CONST(VMCE_MODE_SINGLE);
    CONST(VMCE_MODE_OTHER);
    CONST(VMCE_DOWNGRADE_NONE);
    CONST(VMCE_DOWNGRADE_NO_CONSUMER);
    CONST(VMCE_DOWNGRADE_CONSUMER_NOT_UP);
    CONST(VMCE_DOWNGRADE_OTHER);
    CONST(VMCE_XEN_4_2);
    CONST(VMCE_XEN_4_3);
    CONST(VMCE_XEN_4_10);
    CONST(VMCE_NATIVE_V1);
    CONST(VMCE_NATIVE_V2);
    CONST(VMCE_LOSS_REFUSE);
    CONST(VMCE_LOSS_ALLOW);
#undef SIZE
#undef OFF
#undef CONST
}

/* ---- The simulated host CPU: its MCA MSRs, behind vmce_msr_ops. */
struct sim_host {
    uint64_t mcg_cap, mcg_status;
    uint64_t status[32], addr[32], misc[32];
    unsigned writes;
};

static uint64_t sim_read(void *ctx, uint32_t index) {
    struct sim_host *h = ctx;
    if (index == 0x179) return h->mcg_cap;
    if (index == 0x17A) return h->mcg_status;
    if (index >= 0x400 && index < 0x480) {
        uint32_t bank = (index - 0x400) / 4;
        switch ((index - 0x400) % 4) {
        case 1: return h->status[bank];
        case 2: return h->addr[bank];
        case 3: return h->misc[bank];
        default: return ~0ull; /* MCi_CTL */
        }
    }
    return 0;
}

static void sim_write(void *ctx, uint32_t index, uint64_t value) {
    struct sim_host *h = ctx;
    h->writes++;
    if (index == 0x17A) h->mcg_status = value;
    else if (index >= 0x400 && index < 0x480 && (index - 0x400) % 4 == 1)
        h->status[(index - 0x400) / 4] = value;
}

/* ---- The hypervisor's side: the p2m and the vCPUs. */
static bool p2m(void *ctx, uint64_t host_frame, uint64_t *guest_frame) {
    (void)ctx;
    if (host_frame < GUEST_RAM_HOST_FRAME || host_frame - GUEST_RAM_HOST_FRAME >= GUEST_RAM_FRAMES)
        return false;
    *guest_frame = host_frame - GUEST_RAM_HOST_FRAME;
    return true;
}

struct cpus {
    bool up[VCPUS]; /* vCPU 3 was never started */
};

static bool cpu_is_up(void *ctx, uint32_t vcpu) {
    struct cpus *c = ctx;
    return vcpu < VCPUS && c->up[vcpu];
}

static bool cpu_mce_enabled(void *ctx, uint32_t vcpu) {
    return cpu_is_up(ctx, vcpu); /* a started Linux vCPU sets CR4.MCE */
}

static void cpu_notify(void *ctx, uint32_t vcpu, const vmce_vcpu_outcome *outcome) {
    (void)ctx;
    switch (outcome->kind) {
    case VMCE_OUTCOME_DELIVERED:
        printf("  kick vCPU %" PRIu32 ": #MC pending, %s\n", vcpu,
               outcome->with_data ? "bank 1 holds the error" : "MCIP|RIPV only");
        break;
    case VMCE_OUTCOME_SKIPPED: printf("  kick vCPU %" PRIu32 ": not up, skipped\n", vcpu); break;
    case VMCE_OUTCOME_SHUTDOWN: printf("  kick vCPU %" PRIu32 ": shut down\n", vcpu); break;
    default: printf("  kick vCPU %" PRIu32 ": outcome %" PRIu32 "\n", vcpu, outcome->kind);
    }
}

static const char *msr_outcome(uint32_t outcome) {
    switch (outcome) {
    case VMCE_MSR_HANDLED: return "handled";
    case VMCE_MSR_NOT_OURS: return "not ours";
    case VMCE_MSR_RAISE_GP: return "#GP(0)";
    default: return "?";
    }
}

/* What a Linux guest's #MC handler does on one vCPU, through the MSR exit path. */
static int guest_handler(const vmce_domain *dom, uint32_t vcpu) {
    uint32_t outcome;
    uint64_t mcg_status, mcg_cap, status, addr;
    CHECK(vmce_rdmsr(dom, vcpu, 0x17A, &outcome, &mcg_status));
    CHECK(vmce_rdmsr(dom, vcpu, 0x179, &outcome, &mcg_cap));
    printf("  vCPU %" PRIu32 ": #MC (vector 18), MCG_STATUS=%#" PRIx64, vcpu, mcg_status);
    bool found = false;
    for (uint32_t bank = 0; bank < (mcg_cap & 0xFF); bank++) {
        CHECK(vmce_rdmsr(dom, vcpu, 0x401 + 4 * bank, &outcome, &status));
        if (!(status >> 63)) continue;
        found = true;
        CHECK(vmce_rdmsr(dom, vcpu, 0x402 + 4 * bank, &outcome, &addr));
        printf(", bank %" PRIu32 " status=%#" PRIx64 " addr=%#" PRIx64, bank, status, addr);
        CHECK(vmce_wrmsr(dom, vcpu, 0x401 + 4 * bank, 0, &outcome));
    }
    if (!found) printf(", banks empty (joins the rendezvous)");
    CHECK(vmce_wrmsr(dom, vcpu, 0x17A, 0, &outcome));
    printf(", MCIP cleared: %s\n", msr_outcome(outcome));
    return 0;
}

struct scenario {
    const char *name;
    uint32_t profile, vendor;
    uint64_t host_mcg_cap;
    uint32_t bank;
    uint64_t status, mcg_status, misc;
    uint32_t consumer;
};

static const struct scenario scenarios[] = {
    {"srar", VMCE_PROFILE_INTEL, VMCE_VENDOR_INTEL, 0x0F000C14, 9, 0xBD80000000120134ull, 0x7,
     0x86, 2},
    {"srao", VMCE_PROFILE_INTEL, VMCE_VENDOR_INTEL, 0x0F000C14, 9, 0xBD000000004000CFull, 0x5,
     0x86, VMCE_NO_VCPU},
    {"lmce", VMCE_PROFILE_INTEL_LMCE, VMCE_VENDOR_INTEL, 0x0F000C14, 9, 0xBD80000000120134ull,
     0xF, 0x86, 2},
    {"amd", VMCE_PROFILE_AMD, VMCE_VENDOR_AMD, 0x17, 4,
     (1ull << 63) | (1ull << 61) | (1ull << 60) | (1ull << 58) | (1ull << 43) | (0x1Full << 16) |
         0x0136,
     0x7, 0, 2},
};

static int story(const struct scenario *s) {
    static vmce_domain domain, destination; /* caller-provided storage, no allocation */
    const uint64_t host_addr = ((uint64_t)(GUEST_RAM_HOST_FRAME + 0x123) << 12) | 0xABC;
    uint32_t outcome;
    uint64_t value;

    printf("== vmce from C: one host memory error, scenario %s\n", s->name);
    /* Boot: the host's capabilities. Domain creation: a profile the host can back. */
    vmce_host_caps host = {.vendor = s->vendor, .mcg_cap = s->host_mcg_cap};
    CHECK(vmce_domain_init(&domain, s->profile, &host, VCPUS));
    printf("guest \"web-1\": %" PRId64 " vCPUs (runs 3: vCPU 3 never started), %zu bytes of storage\n",
           vmce_domain_vcpus(&domain), sizeof domain);

    if (s->profile == VMCE_PROFILE_INTEL_LMCE) /* the guest kernel opts in to LMCE */
        for (uint32_t vcpu = 0; vcpu < VCPUS; vcpu++) {
            CHECK(vmce_wrmsr(&domain, vcpu, 0x4D0, 1, &outcome));
            if (outcome != VMCE_MSR_HANDLED) return 1;
        }

    /* 1. MSR exit path: the three-way outcome. */
    CHECK(vmce_rdmsr(&domain, 1, 0x179, &outcome, &value));
    printf("rdmsr MCG_CAP on vCPU 1: %s, %#" PRIx64 "\n", msr_outcome(outcome), value);
    CHECK(vmce_rdmsr(&domain, 1, 0x10, &outcome, &value));
    printf("rdmsr 0x10 (TSC) on vCPU 1: %s\n", msr_outcome(outcome));
    CHECK(vmce_wrmsr(&domain, 1, 0x405, 1, &outcome));
    printf("wrmsr MC1_STATUS=1 on vCPU 1: %s\n", msr_outcome(outcome));

    /* 2. Host #MC handler: collect and release through the callback table. */
    struct sim_host sim = {.mcg_cap = s->host_mcg_cap, .mcg_status = s->mcg_status};
    sim.status[s->bank] = s->status;
    sim.addr[s->bank] = host_addr;
    sim.misc[s->bank] = s->misc;
    vmce_msr_ops ops = {.ctx = &sim, .read = sim_read, .write = sim_write};
    vmce_host_mce event;
    CHECK(vmce_host_collect(&host, &ops, &event));
    CHECK(vmce_host_release(&ops, &event));
    printf("\nhost #MC: MCG_STATUS %#" PRIx64 ", %" PRIu32 " valid bank(s); released: bank %" PRIu32
           " status %#" PRIx64 ", MCG_STATUS %#" PRIx64 "\n",
           event.mcg_status, event.bank_count, s->bank, sim.status[s->bank], sim.mcg_status);
    for (uint32_t i = 0; i < event.bank_count; i++)
        printf("  bank %" PRIu32 ": status=%#" PRIx64 " addr=%#" PRIx64 " misc=%#" PRIx64 "\n",
               event.banks[i].bank, event.banks[i].status, event.banks[i].addr,
               event.banks[i].misc);

    /* ... then, from a deferred context: classify, translate, inject. */
    vmce_classification verdict;
    CHECK(vmce_host_classify(&host, &event, &verdict));
    printf("class: %s\n", verdict.text);
    if (verdict.disposition != VMCE_DISPOSITION_REFLECT) {
        printf("=> the guest sees nothing\n");
        return 0;
    }
    vmce_guest_memory memory = {.ctx = NULL, .guest_frame = p2m};
    vmce_guest_mce error;
    CHECK(vmce_guest_mce_from_classified(&verdict, event.mcg_status, &memory, &error));
    printf("owner: guest \"web-1\"; host %#" PRIx64 " -> guest %#" PRIx64 "\n", error.host_addr,
           error.guest_addr);
    if (s->consumer == VMCE_NO_VCPU)
        printf("running on the CPU: no vCPU of web-1\n");
    else
        printf("running on the CPU: vCPU %" PRIu32 " (the consumer)\n", s->consumer);

    printf("\ninjecting:\n");
    struct cpus cpus = {.up = {true, true, true, false}};
    vmce_guest_cpus guest = {.ctx = &cpus,
                             .is_up = cpu_is_up,
                             .machine_check_enabled = cpu_mce_enabled,
                             .notify = cpu_notify};
    vmce_injection_report report;
    CHECK(vmce_inject(&domain, &error, s->consumer, &guest, &report));
    printf("delivery: %s\n", report.text);
    printf("report: delivered %" PRIu32 ", skipped %" PRIu32 ", shutdown %" PRIu32
           ", data vCPU %" PRIu32 "\n",
           report.delivered, report.skipped, report.shutdown, report.data_vcpu);

    /* Live migration with the #MC still in flight: Xen's layout cannot carry it. */
    static uint8_t buf[8192];
    size_t written = 0;
    uint32_t dropped = 0;
    int32_t rc = vmce_save_xen(&domain, VMCE_XEN_4_10, VMCE_LOSS_REFUSE, buf, sizeof buf,
                               &written, &dropped);
    printf("\nsave Xen 4.10, refusing loss: %s\n",
           rc == VMCE_ERR_WOULD_LOSE ? "refused (a #MC in flight would be lost)" : "saved?");
    rc = vmce_save_native(&domain, VMCE_NATIVE_V2, VMCE_LOSS_REFUSE, buf, 4, &written, &dropped);
    printf("save native V2 into 4 bytes: %s\n",
           rc == VMCE_ERR_BUFFER_TOO_SMALL ? "buffer too small" : "saved?");
    if (vmce_native_save_bytes(VCPUS) > sizeof buf) return 1;
    CHECK(vmce_save_native(&domain, VMCE_NATIVE_V2, VMCE_LOSS_REFUSE, buf, sizeof buf, &written,
                           &dropped));
    printf("save native V2: %zu bytes, nothing dropped: %s\n", written, dropped == 0 ? "yes" : "no");
    CHECK(vmce_domain_init(&destination, s->profile, &host, VCPUS));
    CHECK(vmce_restore_native(&destination, VMCE_NATIVE_V2, buf, written));
    rc = vmce_restore_native(&destination, VMCE_NATIVE_V2, buf, written - 1);
    printf("restore of a truncated stream: %s\n",
           rc == VMCE_ERR_RECORD ? "refused, nothing changed" : "accepted?");

    /* 3. VM entry, on the destination: the restored #MCs are pending there. */
    printf("\nwhat each vCPU sees on its next VM entry (destination host):\n");
    for (uint32_t vcpu = 0; vcpu < VCPUS; vcpu++) {
        int32_t pending = vmce_take_pending(&destination, vcpu);
        if (pending < 0) return 1;
        if (pending) {
            if (guest_handler(&destination, vcpu)) return 1;
        } else if (!cpus.up[vcpu]) {
            printf("  vCPU %" PRIu32 ": not up, skipped (no shutdown)\n", vcpu);
        } else {
            printf("  vCPU %" PRIu32 ": nothing, runs on\n", vcpu);
        }
    }
    /* Handled; the guest cleared MCi_STATUS only, so bank 1's stale ADDR is still there and
     * Xen's layout drops it (reported in `dropped`). */
    CHECK(vmce_save_xen(&destination, VMCE_XEN_4_10, VMCE_LOSS_ALLOW, buf, sizeof buf, &written,
                        &dropped));
    CHECK(vmce_restore_xen(&domain, VMCE_XEN_4_10, buf, written));
    printf("\nafter the handler: saved as Xen 4.10 allowing loss (%zu bytes, dropped %#" PRIx32
           "), restored into the source\n",
           written, dropped);
    printf("vmce_take_pending on a vCPU the domain lacks: %d\n",
           (int)vmce_take_pending(&domain, VCPUS));
    CHECK(vmce_domain_destroy(&destination));
    CHECK(vmce_domain_destroy(&domain));
    printf("vmce_rdmsr after destroy: %d\n",
           (int)vmce_rdmsr(&domain, 0, 0x179, &outcome, &value));
    return 0;
}

int main(int argc, char **argv) {
    const char *name = argc > 1 ? argv[1] : "srar";
    if (strcmp(name, "abi") == 0) {
        print_abi();
        return 0;
    }
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++)
        if (strcmp(scenarios[i].name, name) == 0) return story(&scenarios[i]) || failures;
    fprintf(stderr, "unknown scenario %s; try srar, srao, lmce or amd\n", name);
    return 2;
}
