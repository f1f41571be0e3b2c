#!/usr/bin/env bash
# Runs every fuzz target listed in fuzz/Cargo.toml, one after the other, and prints one table:
# target, executions, exec/s, coverage (libFuzzer's cov and ft), crashes, time.
#
#   scripts/fuzz.sh 480                  # 480 s per target
#   scripts/fuzz.sh --runs 10000000      # 10^7 executions per target
#   scripts/fuzz.sh 480 --runs 10000000  # whichever comes first
#   scripts/fuzz.sh 10 host_reflect      # only the targets named
#   scripts/fuzz.sh 480 --write          # also put the table in fuzz/README.md
#   scripts/fuzz.sh 10 --write --note "smoke run, not the campaign"
#
# Each target runs with the flags of fuzz/README.md (see flags_for below), on the corpus
# fuzz/corpus/<target> (created; not committed) seeded from fuzz/seeds/<target>. A crash
# stops that target (libFuzzer's default) and is counted from the new files in
# fuzz/artifacts/<target>/; the script goes on with the next target and exits 1 at the end.
# libFuzzer's full output for each target is kept in fuzz/target/fuzz-logs/<target>.log.
#
# --write replaces the block between <!-- fuzz-run:start --> and <!-- fuzz-run:end --> in
# fuzz/README.md with the table, the date, the machine (nproc, CPU model) and the command.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

usage() {
    local code="${1:-2}"
    if [ "$code" -eq 0 ]; then
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    else
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    fi
    exit "$code"
}

seconds=""
runs=""
write=false
note=""
selected=()
command_line="scripts/fuzz.sh"
for arg in "$@"; do
    case "$arg" in
        *[!A-Za-z0-9_./=-]*) command_line+=" '${arg//\'/\'\\\'\'}'" ;;
        *) command_line+=" $arg" ;;
    esac
done
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="${2:?--runs needs a count}"; shift 2 ;;
        --runs=*) runs="${1#--runs=}"; shift ;;
        --write) write=true; shift ;;
        --note) note="${2:?--note needs a text}"; shift 2 ;;
        -h|--help) usage 0 ;;
        -*) echo "unknown option $1" >&2; usage ;;
        *[!0-9]*) selected+=("$1"); shift ;;
        *) seconds="$1"; shift ;;
    esac
done
if [ -z "$seconds" ] && [ -z "$runs" ]; then
    echo "give a time per target in seconds, or --runs N (or both)" >&2
    usage
fi

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cat >&2 <<'EOF'
cargo-fuzz is not available for the nightly toolchain. Install it with:
    rustup toolchain install nightly
    cargo +nightly install cargo-fuzz
EOF
    exit 1
fi

# The [[bin]] names of fuzz/Cargo.toml, in order.
mapfile -t listed < <(awk '/^\[\[bin\]\]/ { bin = 1; next } /^\[/ { bin = 0 }
    bin && /^name *=/ { gsub(/^name *= *"|".*$/, ""); print }' fuzz/Cargo.toml)
if [ ${#selected[@]} -gt 0 ]; then
    for target in "${selected[@]}"; do
        printf '%s\n' "${listed[@]}" | grep -qx "$target" ||
            { echo "$target is not a [[bin]] of fuzz/Cargo.toml (${listed[*]})" >&2; exit 2; }
    done
    targets=("${selected[@]}")
else
    targets=("${listed[@]}")
fi

# cargo-fuzz flags per target (fuzz/README.md says why). The crate has no unsafe code, so
# AddressSanitizer finds nothing the targets' own checks would not (vmce and the checks have
# no unsafe code): every target runs without it; domain_ops also without compare tracing.
flags_for() {
    case "$1" in
        domain_ops) echo "-s none --no-trace-compares" ;;
        *) echo "-s none" ;;
    esac
}
# libFuzzer flags per target.
libfuzzer_flags_for() {
    case "$1" in
        domain_ops) echo "-max_len=256" ;;
        host_reflect) echo "-max_len=512" ;;
        *) echo "" ;;
    esac
}

logs="$root/fuzz/target/fuzz-logs"
mkdir -p "$logs"
count_artifacts() {
    mkdir -p "$root/fuzz/artifacts/$1"
    find "$root/fuzz/artifacts/$1" -maxdepth 1 -type f \
        \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l
}

rows=()
failed=0
for target in "${targets[@]}"; do
    read -r -a flags <<<"$(flags_for "$target")"
    read -r -a extra <<<"$(libfuzzer_flags_for "$target")"
    limits=()
    [ -n "$seconds" ] && limits+=("-max_total_time=$seconds")
    [ -n "$runs" ] && limits+=("-runs=$runs")
    corpus="$root/fuzz/corpus/$target"
    mkdir -p "$corpus"
    inputs=("$corpus")
    [ -d "$root/fuzz/seeds/$target" ] && inputs+=("$root/fuzz/seeds/$target")
    log="$logs/$target.log"

    printf '\n== %s: building (cargo +nightly fuzz build %s)\n' "$target" "${flags[*]}"
    (cd fuzz && cargo +nightly fuzz build "${flags[@]}" "$target")
    printf '== %s: running %s %s\n' "$target" "${limits[*]}" "${extra[*]}"
    before=$(count_artifacts "$target")
    start=$(date +%s)
    status=0
    (cd fuzz && cargo +nightly fuzz run "${flags[@]}" "$target" "${inputs[@]}" -- \
        "${limits[@]}" "${extra[@]}") >"$log" 2>&1 || status=$?
    elapsed=$(($(date +%s) - start))
    crashes=$(($(count_artifacts "$target") - before))

    # libFuzzer's last stats line: "#N DONE cov: C ft: F corp: ... exec/s: E rss: ...", or,
    # after a crash, the last "#N ..." status line before it.
    stats=$(grep -E '^#[0-9]+[[:space:]]+DONE ' "$log" | tail -n 1 || true)
    [ -z "$stats" ] && stats=$(grep -E '^#[0-9]+[[:space:]]' "$log" | tail -n 1 || true)
    field() { sed -nE "s|.*[[:space:]]$1: ([0-9]+).*|\1|p" <<<"$stats"; }
    executions=$(sed -nE 's|^#([0-9]+).*|\1|p' <<<"$stats")
    cov=$(field cov)
    ft=$(field ft)
    rate=$(field 'exec/s')
    if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes="? (exit $status, see $log)"
    fi
    [ "$status" -ne 0 ] && failed=1
    rows+=("| \`$target\` | ${executions:-?} | ${rate:-?} | ${cov:-?} | ${ft:-?} | $crashes | ${elapsed} s |")
    printf '== %s: %s\n' "$target" "${stats:-no libFuzzer stats line, see $log}"
done

table=$(
    echo "| target | executions | exec/s | cov | ft | crashes | time |"
    echo "|---|--:|--:|--:|--:|--:|--:|"
    printf '%s\n' "${rows[@]}"
)
printf '\n%s\n' "$table"
echo "libFuzzer logs: $logs/"

if $write; then
    readme="$root/fuzz/README.md"
    grep -q '<!-- fuzz-run:start -->' "$readme" && grep -q '<!-- fuzz-run:end -->' "$readme" ||
        { echo "fuzz/README.md has no <!-- fuzz-run:start --> ... <!-- fuzz-run:end --> block" >&2; exit 1; }
    cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
    block=$(mktemp)
    {
        echo "<!-- fuzz-run:start -->"
        echo "<!-- generated by scripts/fuzz.sh --write; rerun it to replace this block -->"
        [ -n "$note" ] && printf '\n**%s**\n' "$note"
        echo
        echo "Run on $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($cpu), one target at a time:"
        echo "\`$command_line\`"
        echo
        echo "$table"
        echo "<!-- fuzz-run:end -->"
    } >"$block"
    awk -v block="$block" '
        /<!-- fuzz-run:start -->/ { while ((getline line < block) > 0) print line; skip = 1; next }
        /<!-- fuzz-run:end -->/ { skip = 0; next }
        !skip' "$readme" >"$readme.new"
    mv "$readme.new" "$readme"
    rm -f "$block"
    echo "wrote the table into fuzz/README.md"
fi
exit "$failed"
