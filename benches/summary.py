#!/usr/bin/env python3
"""Summarise a `cargo bench` run of vmce into the tables of BENCHMARKS.md and the README.

Reads criterion's medians (target/criterion/<group>/<bench>/new/estimates.json) and the
facts the benches record (target/tmp/vmce-bench-facts/<key>: sizes, load averages), and
prints markdown: every vmce figure beside the baseline measured in the same run and their
ratio, plus the machine it ran on. Nothing here is typed by hand.

    cargo bench && python3 benches/summary.py            # print the tables
    cargo bench && python3 benches/summary.py --write    # also update BENCHMARKS.md, README.md

With `--lto DIR`, the MSR and record tables are also made from a second run built with fat
LTO into the target directory DIR (see BENCHMARKS.md for the command).

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
# Issue 14: the event path's share of an injection.
EVENT_TARGET_ADDED = 0.10


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


def use_target(target: Path) -> None:
    """Read the results of a run built into another target directory."""
    restore_target(target / "criterion", target / "tmp" / "vmce-bench-facts")


def restore_target(criterion: Path, facts: Path) -> None:
    global CRITERION, FACTS
    CRITERION, FACTS = criterion, facts


class Missing(Exception):
    pass


def median(bench: str) -> float:
    """Criterion's median time per iteration of `bench` (group/name[/param]), in ns.

    Refuses a result older than the start of the bench binary that writes it (the
    `loadavg_<binary>` fact is written first thing), so a table never mixes runs."""
    path = CRITERION / bench / "new" / "estimates.json"
    binary = bench.split("/")[0]
    if binary.startswith("inject"):
        binary = "inject"
    elif binary == "domain_save":
        binary = "records"  # benches/records.rs runs both groups
    started = FACTS / f"loadavg_{binary}"
    try:
        if started.exists() and path.stat().st_mtime < started.stat().st_mtime:
            raise Missing(f"{bench} is from an earlier run than the last `{binary}` bench: rerun `cargo bench`")
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
    x = value / baseline
    return f"{x:.2f}×" if x < 10 else f"{x:.1f}×"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def machine() -> list[str]:
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() not in fields:
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    model = fields.get("model name", "unknown CPU")
    if "cpu family" in fields and "model" in fields:
        model += f" (family {fields['cpu family']}, model {fields['model']})"
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
        "| access (one vCPU, through `Vcpu`) | vmce median | baseline | ratio | < 10 ns | ≤ 4× |",
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
        f"| array load under a sequence lock (a lock-free read path) | {ns(median('msr/diag_seqlock_load'))} |",
        f"| `emulate::read` MCG_CAP, no lock | {ns(median('msr/diag_unlocked_emulate_read_mcg_cap'))} |",
    ]
    checks.append(
        f"MSR emulation under 10 ns: {verdict(worst_ns < MSR_TARGET_NS)} (slowest {ns(worst_ns)})"
    )
    checks.append(
        f"MSR emulation within 4× the array baseline: {verdict(worst_ratio <= MSR_TARGET_RATIO)} "
        f"(worst {worst_ratio:.1f}×)"
    )
    return out


def subtracted(group: str, n: int) -> tuple[float, float, float]:
    both = median(f"{group}/rearm_inject/{n}")
    rearm = median(f"{group}/rearm/{n}")
    return both - rearm, both, rearm


def inject_table(checks: list[str]) -> list[str]:
    out = [
        "| delivery | vCPUs | injection per call | per vCPU | baseline per vCPU (one store) | ratio |",
        "|---|---|---|---|---|---|",
    ]
    per_vcpu_broadcast = []
    for group, label, broadcast in [
        ("inject_broadcast", "broadcast (Intel SRAO)", True),
        ("inject_single_amd", "single (AMD)", False),
        ("inject_single_lmce", "single (Intel LMCE)", False),
    ]:
        for n in SIZES:
            inject = median(f"{group}/batched/{n}")
            targets = n if broadcast else 1
            baseline = median(f"inject_baseline/store_per_vcpu/{targets}") / targets
            per_vcpu = inject / targets
            if broadcast:
                per_vcpu_broadcast.append((n, per_vcpu))
            out.append(
                f"| {label} | {n} | {ns(inject)} | {ns(per_vcpu) if broadcast else '—'} "
                f"| {ns(baseline)} | {ratio(per_vcpu, baseline)} |"
            )
    timer = median("inject_baseline/timer_floor")
    out += [
        "",
        "Cross-check, broadcast, without clock reads per call: re-arm + inject in one loop, "
        "re-arm alone, and their difference (the batched figures above include one pair of "
        f"clock reads per batch, {ns(timer)} measured alone):",
        "",
        "| vCPUs | re-arm + inject | re-arm | difference | per vCPU | batched per vCPU |",
        "|---|---|---|---|---|---|",
    ]
    for n, batched_per_vcpu in per_vcpu_broadcast:
        inject, both, rearm = subtracted("inject_broadcast", n)
        out.append(
            f"| {n} | {ns(both)} | {ns(rearm)} | {ns(inject)} | {ns(inject / n)} | {ns(batched_per_vcpu)} |"
        )
    out += [
        "",
        "Event path: the same batches with `push_injection` after every injection (the event "
        "built from the report and pushed; the queue drained off the clock), into a per-CPU "
        "`EventRing` and into the shared `EventQueue`:",
        "",
        "| delivery | vCPUs | injection | + event, per-CPU ring | added | + event, shared queue | added |",
        "|---|---|---|---|---|---|---|",
    ]
    worst_added = 0.0
    for group, label in [
        ("inject_broadcast", "broadcast (Intel SRAO)"),
        ("inject_single_amd", "single (AMD)"),
        ("inject_single_lmce", "single (Intel LMCE)"),
    ]:
        for n in SIZES:
            plain = median(f"{group}/batched/{n}")
            with_event = median(f"{group}/batched_events/{n}")
            shared = median(f"{group}/batched_events_shared/{n}")
            added = with_event / plain - 1
            worst_added = max(worst_added, added)
            out.append(
                f"| {label} | {n} | {ns(plain)} | {ns(with_event)} | {100 * added:+.1f} % "
                f"| {ns(shared)} | {100 * (shared / plain - 1):+.1f} % |"
            )
    checks.append(
        "Event path (per-CPU ring) adds under 10 % to injection: "
        f"{verdict(worst_added < EVENT_TARGET_ADDED)} (worst {100 * worst_added:+.1f} %)"
    )
    at_512 = dict(per_vcpu_broadcast)[512]
    checks.append(
        f"Broadcast injection under 30 ns per vCPU at 512: "
        f"{verdict(at_512 < INJECT_TARGET_NS_PER_VCPU_AT_512)} ({ns(at_512)} per vCPU)"
    )
    large = [v for n, v in per_vcpu_broadcast if n >= 64]
    checks.append(
        "Broadcast cost linear in vCPUs: per-vCPU cost at "
        + ", ".join(f"{n}: {ns(v)}" for n, v in per_vcpu_broadcast)
        + f" (64 to 4096 vCPUs within {100 * (max(large) / min(large) - 1):.0f} % of each other;"
        " below that the fixed cost of a call dominates)"
    )
    return out


def host_table() -> list[str]:
    baseline = median("host/baseline_array_reads")
    out = [
        "| host #MC path, one error, 32 banks | vmce median | baseline (35 array reads) | ratio |",
        "|---|---|---|---|",
    ]
    for label, bench in [
        ("`collect` + `most_severe` + `GuestMce::from_classified`, `SimulatedHost`", "pipeline_simulated"),
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


def save_table() -> list[str]:
    out = [
        "| vCPUs | `Domain::save`: every vCPU + domain record | per vCPU | baseline (plain copies, no lock) | ratio |",
        "|---|---|---|---|---|",
    ]
    for n in (1, 64, 512):
        value, baseline = median(f"domain_save/{n}"), median(f"domain_save/baseline_copy_{n}")
        out.append(
            f"| {n} | {ns(value)} | {ns(value / n)} | {ns(baseline)} | {ratio(value, baseline)} |"
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
        f"| `Domain<&[Vcpu], 0>`: no broken frames tracked | {fact('size_domain_frames_0')} |",
        f"| `Domain<&[Vcpu], 512>`: 512 broken frames | {int(fact('size_domain_frames_512')):,} |",
        "| per broken frame of the capacity the integrator picks (`Domain<S, N>`) | "
        f"{(int(fact('size_domain_frames_512')) - int(fact('size_domain_frames_0'))) // 512} |",
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
        + ["", "### Domain save (one consistent cut)", ""] + save_table()
        + ["", "### Memory", ""] + memory_table()
    )
    return body, checks


def span(values: list[float]) -> str:
    """"4.4–5.9 ns" for a range of times."""
    low, high = ns(min(values)), ns(max(values))
    if low.split()[-1] == high.split()[-1]:
        return f"{low.split()[0]}–{high}"
    return f"{low}–{high}"


def short(lto_xen_round_trip: float | None) -> list[str]:
    """The README's table: the key lines and the targets, from the same results."""
    load, store = median("msr/baseline_load"), median("msr/baseline_store")
    reads = [median(f"msr/{b}") for b in ("rdmsr_mcg_cap", "rdmsr_mcg_status", "rdmsr_mc1_status", "rdmsr_mc1_ctl2", "rdmsr_not_ours")]
    writes = [median(f"msr/{b}") for b in ("wrmsr_mc1_status_0", "wrmsr_mc1_ctl2", "wrmsr_not_ours", "wrmsr_gp_mcg_cap", "wrmsr_gp_mc1_status_nonzero")]
    accesses = [(v, v / load) for v in reads] + [(v, v / store) for v in writes]
    per512 = median("inject_broadcast/batched/512") / 512
    base512 = median("inject_baseline/store_per_vcpu/512") / 512
    single = [median(f"{g}/batched/{n}") for g in ("inject_single_amd", "inject_single_lmce") for n in SIZES]
    host, host_base = median("host/pipeline_simulated"), median("host/baseline_array_reads")
    xen_rt = median("records/xen_4_10_round_trip")
    copy_rt = median("records/baseline_memcpy_round_trip")
    worst_ns = max(v for v, _ in accesses)
    worst_ratio = max(r for _, r in accesses)
    lto_note = f"; {ns(lto_xen_round_trip)} built with LTO" if lto_xen_round_trip is not None else ""
    return [
        "| what | vmce | baseline (same run) | ratio | target |",
        "|---|---|---|---|---|",
        f"| guest `rdmsr`, one MCA register | {span(reads)} | {ns(load)} array load "
        f"| {min(reads) / load:.2f}–{ratio(max(reads), load)} | < 10 ns: {verdict(worst_ns < MSR_TARGET_NS)}; "
        f"≤ 4×: {verdict(worst_ratio <= MSR_TARGET_RATIO)} |",
        f"| guest `wrmsr`, one MCA register | {span(writes)} | {ns(store)} array store "
        f"| {min(writes) / store:.2f}–{ratio(max(writes), store)} | (as above) |",
        f"| broadcast #MC, per vCPU at 512 vCPUs | {ns(per512)} | {ns(base512)} store | {ratio(per512, base512)} "
        f"| < 30 ns: {verdict(per512 < INJECT_TARGET_NS_PER_VCPU_AT_512)} |",
        f"| single-vCPU #MC (AMD, LMCE), 1 to 4096 vCPUs | {span(single)} | | | |",
        f"| host collect + classify, 32 banks | {ns(host)} | {ns(host_base)} (35 array reads) | {ratio(host, host_base)} | |",
        f"| Xen 4.10 record, encode + decode | {ns(xen_rt)} | {ns(copy_rt)} (two copies) | {ratio(xen_rt, copy_rt)} "
        f"| < 50 ns: {verdict(xen_rt < XEN_ROUND_TRIP_TARGET_NS)}{lto_note} |",
        f"| memory | {fact('size_vcpu')} B per vCPU, {fact('size_domain')} B per domain | | | ≤ 128 B per vCPU: "
        f"{verdict(int(fact('size_vcpu')) <= 128)} |",
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


def lto(target: Path) -> tuple[list[str], list[str], float]:
    use_target(target)
    checks: list[str] = []
    loads = ", ".join(fact(f"loadavg_{bench}") for bench in ("msr", "records"))
    body = (
        [f"1-minute load average as each bench started (msr, records): {loads}", ""]
        + ["#### Guest MSR emulation, LTO", ""] + msr_table(checks)
        + ["", "#### Save and restore, LTO", ""] + records_table(checks)
    )
    xen = median("records/xen_4_10_round_trip")
    return body, [f"with LTO: {check}" for check in checks], xen


def main() -> None:
    args = sys.argv[1:]
    lto_dir = Path(args[args.index("--lto") + 1]) if "--lto" in args else None
    try:
        body, checks = full()
        lto_body = lto_checks = lto_xen = None
        if lto_dir is not None:
            main_run = (CRITERION, FACTS)
            lto_body, lto_checks, lto_xen = lto(lto_dir)
            restore_target(*main_run)
        summary = short(lto_xen)
    except Missing as error:
        raise SystemExit(f"summary.py: {error}")
    results = body + ["", "Targets:", ""] + [f"- {c}" for c in checks]
    print("\n".join(results))
    if lto_body is not None:
        lto_results = lto_body + ["", "Targets:", ""] + [f"- {c}" for c in lto_checks]
        print("\n".join(["", "### Built with LTO", ""] + lto_results))
    if "--write" in args:
        replace_block(ROOT / "BENCHMARKS.md", "bench-results", results)
        if lto_body is not None:
            replace_block(ROOT / "BENCHMARKS.md", "bench-lto", lto_results)
        replace_block(ROOT / "README.md", "bench-summary", summary)
        print("\nwrote BENCHMARKS.md and README.md", file=sys.stderr)


if __name__ == "__main__":
    main()
