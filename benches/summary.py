#!/usr/bin/env python3
"""Summarise a `cargo bench` run of vmce into the tables of BENCHMARKS.md and the README.

Reads criterion's medians (target/criterion/<group>/<bench>/new/estimates.json) and the
facts the benches record (target/tmp/vmce-bench-facts/<key>: sizes, load averages), and
prints markdown: every vmce figure beside the baseline measured in the same run and their
ratio, plus the machine it ran on. Nothing here is typed by hand.

    cargo bench && python3 benches/summary.py            # print the tables
    cargo bench && python3 benches/summary.py --write    # also update BENCHMARKS.md, README.md

A bench that did not run is an error (a partial table is never written).
"""

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = [1, 8, 64, 512, 4096]

# The targets of issue 5.
MSR_TARGET_NS = 10.0
MSR_TARGET_RATIO = 4.0
INJECT_TARGET_NS_PER_VCPU_AT_512 = 30.0
XEN_ROUND_TRIP_TARGET_NS = 50.0


def target_dir() -> Path:
    if "CARGO_TARGET_DIR" in os.environ:
        return Path(os.environ["CARGO_TARGET_DIR"])
    try:
        out = subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--no-deps"],
            cwd=ROOT, capture_output=True, check=True, text=True,
        ).stdout
        return Path(json.loads(out)["target_directory"])
    except (OSError, subprocess.CalledProcessError, KeyError, ValueError):
        return ROOT / "target"


TARGET = target_dir()
CRITERION = Path(os.environ.get("CRITERION_HOME", TARGET / "criterion"))
FACTS = TARGET / "tmp" / "vmce-bench-facts"


class Missing(Exception):
    pass


def median(bench: str) -> float:
    """Criterion's median time per iteration of `bench` (group/name[/param]), in ns."""
    path = CRITERION / bench / "new" / "estimates.json"
    try:
        return json.loads(path.read_text())["median"]["point_estimate"]
    except FileNotFoundError:
        raise Missing(f"no criterion result for {bench} ({path}): run `cargo bench` first")


def fact(key: str) -> str:
    try:
        return (FACTS / key).read_text().strip()
    except FileNotFoundError:
        raise Missing(f"no recorded fact {key} ({FACTS / key}): run `cargo bench` first")


def ns(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:,.1f} µs"
    if value >= 100:
        return f"{value:,.0f} ns"
    if value >= 10:
        return f"{value:.1f} ns"
    return f"{value:.2f} ns"


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.1f}×"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def machine() -> list[str]:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            hypervisor = " (virtual machine)" if " hypervisor" in cpuinfo.read() else ""
    except OSError:
        hypervisor = ""
    rustc = subprocess.run(["rustc", "-V"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    loads = [fact(f"loadavg_{bench}") for bench in ("msr", "inject", "host", "records", "memory")]
    return [
        f"- CPU: {model}{hypervisor}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        f"- Toolchain: `{rustc}`, `cargo bench` (release profile, criterion 0.8, 50 samples)",
        f"- 1-minute load average as each bench started (msr, inject, host, records, memory): "
        + ", ".join(loads),
        f"- Summarised {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
    ]


def msr_table(checks: list[str]) -> list[str]:
    load, store = median("msr/baseline_load"), median("msr/baseline_store")
    rows = [
        ("`rdmsr` MCG_CAP (0x179)", "rdmsr_mcg_cap", load),
        ("`rdmsr` MCG_STATUS (0x17A)", "rdmsr_mcg_status", load),
        ("`rdmsr` MC1_STATUS (0x405)", "rdmsr_mc1_status", load),
        ("`wrmsr` MC1_STATUS (0x405) ← 0", "wrmsr_mc1_status_0", store),
        ("`wrmsr` MC1_CTL2 (0x281) ← CMCI_EN\\|1", "wrmsr_mc1_ctl2", store),
        ("`rdmsr` MC1_CTL2 (0x281)", "rdmsr_mc1_ctl2", load),
        ("`rdmsr` not ours (0x10)", "rdmsr_not_ours", load),
        ("`wrmsr` not ours (0x10)", "wrmsr_not_ours", store),
        ("`wrmsr` MCG_CAP → #GP", "wrmsr_gp_mcg_cap", store),
        ("`wrmsr` MC1_STATUS ← 1 → #GP", "wrmsr_gp_mc1_status_nonzero", store),
    ]
    out = [
        "| access (one vCPU, lock included) | vmce median | baseline | ratio | < 10 ns | ≤ 4× |",
        "|---|---|---|---|---|---|",
    ]
    worst_ns, worst_ratio = 0.0, 0.0
    for label, bench, baseline in rows:
        value = median(f"msr/{bench}")
        kind = "load" if baseline is load else "store"
        worst_ns, worst_ratio = max(worst_ns, value), max(worst_ratio, value / baseline)
        out.append(
            f"| {label} | {ns(value)} | {ns(baseline)} ({kind}) | {ratio(value, baseline)} "
            f"| {'yes' if value < MSR_TARGET_NS else '**no**'} "
            f"| {'yes' if value <= MSR_TARGET_RATIO * baseline else '**no**'} |"
        )
    out += [
        "",
        "Where the time goes (same run):",
        "",
        "| diagnostic | median |",
        "|---|---|",
        f"| array load under an uncontended `spin::SpinMutex` (the `Vcpu` lock) | {ns(median('msr/diag_locked_load'))} |",
        f"| array store under the same lock | {ns(median('msr/diag_locked_store'))} |",
        f"| `emulate::read` MCG_CAP, no lock | {ns(median('msr/diag_unlocked_emulate_read_mcg_cap'))} |",
        f"| `emulate::write` MC1_STATUS ← 0, no lock | {ns(median('msr/diag_unlocked_emulate_write_mc1_status_0'))} |",
    ]
    checks.append(
        f"MSR emulation under 10 ns: {verdict(worst_ns < MSR_TARGET_NS)} (slowest {ns(worst_ns)})"
    )
    checks.append(
        f"MSR emulation within 4× the array baseline: {verdict(worst_ratio <= MSR_TARGET_RATIO)} "
        f"(worst {worst_ratio:.1f}×)"
    )
    return out


def inject_rows(group: str) -> list[tuple[int, float, float, float]]:
    rows = []
    for n in SIZES:
        both = median(f"{group}/rearm_inject/{n}")
        rearm = median(f"{group}/rearm/{n}")
        rows.append((n, both - rearm, both, rearm))
    return rows


def inject_table(checks: list[str]) -> list[str]:
    out = [
        "| delivery | vCPUs | injection per call | per vCPU | baseline per vCPU | ratio | re-arm + inject | re-arm |",
        "|---|---|---|---|---|---|---|---|",
    ]
    at_512 = None
    per_vcpu_broadcast = []
    for group, label, broadcast in [
        ("inject_broadcast", "broadcast (Intel SRAO)", True),
        ("inject_single_amd", "single (AMD)", False),
        ("inject_single_lmce", "single (Intel LMCE)", False),
    ]:
        for n, inject, both, rearm in inject_rows(group):
            targets = n if broadcast else 1
            baseline = median(f"inject_baseline/store_per_vcpu/{targets}") / targets
            per_vcpu = inject / targets
            if broadcast:
                per_vcpu_broadcast.append((n, per_vcpu))
                if n == 512:
                    at_512 = per_vcpu
            out.append(
                f"| {label} | {n} | {ns(inject)} | {ns(per_vcpu) if broadcast else '—'} "
                f"| {ns(baseline)} | {ratio(per_vcpu, baseline)} | {ns(both)} | {ns(rearm)} |"
            )
    timer = median("inject_baseline/timer_floor")
    out += [
        "",
        "Cross-check, broadcast: each injection timed by itself (re-arm outside the timed "
        f"region; includes two clock reads, {ns(timer)} measured alone):",
        "",
        "| vCPUs | timed alone | minus clock reads | per vCPU |",
        "|---|---|---|---|",
    ]
    for n in SIZES:
        alone = median(f"inject_broadcast/timed_alone/{n}")
        out.append(f"| {n} | {ns(alone)} | {ns(alone - timer)} | {ns((alone - timer) / n)} |")
    small = [v for n, v in per_vcpu_broadcast if n >= 64]
    spread = max(small) / min(small)
    checks.append(
        f"Broadcast injection under 30 ns per vCPU at 512: "
        f"{verdict(at_512 is not None and at_512 < INJECT_TARGET_NS_PER_VCPU_AT_512)} "
        f"({ns(at_512)} per vCPU)"
    )
    checks.append(
        "Broadcast cost linear in vCPUs: per-vCPU cost from 64 to 4096 vCPUs "
        + ", ".join(f"{ns(v)}" for n, v in per_vcpu_broadcast if n >= 64)
        + f" (max/min {spread:.2f})"
    )
    return out


def host_table() -> list[str]:
    baseline = median("host/baseline_array_reads")
    out = [
        "| host #MC path, one error, 32 banks | vmce median | baseline (35 array reads) | ratio |",
        "|---|---|---|---|",
    ]
    for label, bench in [
        ("`collect` + `most_severe` + `GuestMce::from_host`, `SimulatedHost`", "pipeline_simulated"),
        ("the same over a flat-array `MsrAccess`", "pipeline_flat"),
    ]:
        value = median(f"host/{bench}")
        out.append(f"| {label} | {ns(value)} | {ns(baseline)} | {ratio(value, baseline)} |")
    return out


def records_table(checks: list[str]) -> list[str]:
    copy, copy_rt = median("records/baseline_memcpy"), median("records/baseline_memcpy_round_trip")
    out = [
        "| per vCPU record | bytes | encode | decode | round trip | baseline round trip (2 copies) | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, name in [
        ("Xen 4.10 `VMCE_VCPU` (descriptor + payload)", "xen_4_10"),
        ("native V1", "native_v1"),
        ("native V2, machine check in flight", "native_v2"),
    ]:
        rt = median(f"records/{name}_round_trip")
        out.append(
            f"| {label} | {fact('bytes_' + name)} | {ns(median(f'records/{name}_encode'))} "
            f"| {ns(median(f'records/{name}_decode'))} | {ns(rt)} | {ns(copy_rt)} | {ratio(rt, copy_rt)} |"
        )
        if name == "xen_4_10":
            checks.append(
                f"Xen record round trip under 50 ns: {verdict(rt < XEN_ROUND_TRIP_TARGET_NS)} ({ns(rt)})"
            )
    out.append(
        f"| plain copy of `VcpuMceState` | {fact('bytes_memcpy')} | {ns(copy)} | {ns(copy)} "
        f"| {ns(copy_rt)} | — | 1.0× |"
    )
    return out


def memory_table() -> list[str]:
    out = [
        "| state | bytes |",
        "|---|---|",
        f"| per vCPU: `Vcpu` (registers, lock, pending flag; budget 128) | {fact('size_vcpu')} |",
        f"| of which the saved registers, `VcpuMceState` | {fact('size_vcpu_state')} |",
        f"| per domain: `Domain<&[Vcpu]>` without its vCPUs (budget 1024) | {fact('size_domain')} |",
        f"| of which the broken-frame list (64 frames) | {fact('size_broken_frames')} |",
    ]
    for n in SIZES:
        out.append(f"| domain of {n} vCPUs, all included | {int(fact(f'size_domain_total_{n}')):,} |")
    return out


def full() -> tuple[list[str], list[str]]:
    checks: list[str] = []
    body = (
        ["Machine and run:", ""] + machine()
        + ["", "### Guest MSR emulation", ""] + msr_table(checks)
        + ["", "### Injection", ""] + inject_table(checks)
        + ["", "### Host collection and classification", ""] + host_table()
        + ["", "### Save and restore, per vCPU", ""] + records_table(checks)
        + ["", "### Memory", ""] + memory_table()
    )
    return body, checks


def short(checks: list[str]) -> list[str]:
    load = median("msr/baseline_load")
    reads = [median(f"msr/{b}") for b in ("rdmsr_mcg_cap", "rdmsr_mcg_status", "rdmsr_mc1_status", "rdmsr_mc1_ctl2", "rdmsr_not_ours")]
    store = median("msr/baseline_store")
    writes = [median(f"msr/{b}") for b in ("wrmsr_mc1_status_0", "wrmsr_mc1_ctl2", "wrmsr_not_ours", "wrmsr_gp_mcg_cap", "wrmsr_gp_mc1_status_nonzero")]
    inject = dict((n, v) for n, v, _, _ in inject_rows("inject_broadcast"))
    amd = dict((n, v) for n, v, _, _ in inject_rows("inject_single_amd"))
    xen_rt = median("records/xen_4_10_round_trip")
    copy_rt = median("records/baseline_memcpy_round_trip")
    per512 = inject[512] / 512
    base512 = median("inject_baseline/store_per_vcpu/512") / 512
    return [
        "| what | vmce | baseline (same run) | ratio |",
        "|---|---|---|---|",
        f"| guest `rdmsr` of an MCA register | {ns(min(reads))}–{ns(max(reads))} | {ns(load)} array load | {ratio(min(reads), load)}–{ratio(max(reads), load)} |",
        f"| guest `wrmsr` of an MCA register | {ns(min(writes))}–{ns(max(writes))} | {ns(store)} array store | {ratio(min(writes), store)}–{ratio(max(writes), store)} |",
        f"| broadcast #MC, 512 vCPUs | {ns(inject[512])} ({ns(per512)} per vCPU) | {ns(base512)} per vCPU store | {ratio(per512, base512)} |",
        f"| single-vCPU #MC (AMD), any size | {ns(min(amd.values()))}–{ns(max(amd.values()))} | | |",
        f"| host collect + classify, 32 banks | {ns(median('host/pipeline_simulated'))} | {ns(median('host/baseline_array_reads'))} 35 array reads | {ratio(median('host/pipeline_simulated'), median('host/baseline_array_reads'))} |",
        f"| Xen 4.10 record round trip | {ns(xen_rt)} | {ns(copy_rt)} two copies | {ratio(xen_rt, copy_rt)} |",
        f"| memory | {fact('size_vcpu')} B per vCPU, {fact('size_domain')} B per domain | | |",
        "",
        "Targets: " + "; ".join(checks) + ".",
    ]


def replace_block(path: Path, name: str, lines: list[str]) -> None:
    start, end = f"<!-- {name}:start", f"<!-- {name}:end -->"
    text = path.read_text()
    head, sep, rest = text.partition(start)
    if not sep:
        raise SystemExit(f"{path}: no `{start}` marker")
    marker_line, _, rest = rest.partition("\n")
    _, sep, tail = rest.partition(end)
    if not sep:
        raise SystemExit(f"{path}: no `{end}` marker")
    path.write_text(head + start + marker_line + "\n" + "\n".join(lines) + "\n" + end + tail)


def main() -> None:
    try:
        body, checks = full()
        summary = short(checks)
    except Missing as error:
        raise SystemExit(f"summary.py: {error}")
    print("\n".join(body + ["", "### Targets", ""] + [f"- {c}" for c in checks]))
    if "--write" in sys.argv[1:]:
        replace_block(ROOT / "BENCHMARKS.md", "bench-results", body + ["", "Targets:", ""] + [f"- {c}" for c in checks])
        replace_block(ROOT / "README.md", "bench-summary", summary)
        print("\nwrote BENCHMARKS.md and README.md", file=sys.stderr)


if __name__ == "__main__":
    main()
