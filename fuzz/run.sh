#!/usr/bin/env bash
# Builds and runs every fuzz target (or the ones named) for SECONDS each:
#
#   fuzz/run.sh SECONDS [TARGET...]
#
# Needs a nightly toolchain; without one it says so and exits 0 (the committed
# corpora still replay on stable in `cargo test -p handoff-core --test fuzz_corpus`).
# Installs cargo-fuzz when nightly is there and it is missing.
#
# Each target fuzzes a scratch corpus under fuzz/target/corpus-run/<target>
# (seeded from fuzz/corpus/<target>, which it never writes to) plus
# fuzz/regressions/<target>. A crash, timeout or out-of-memory exits non-zero
# after all targets ran, naming the input libFuzzer saved under fuzz/artifacts/;
# make it a regression with `cp <artifact> fuzz/regressions/<target>/<name>`.
# Per target it prints executions per second, total executions and coverage.
set -euo pipefail

usage() {
    echo "usage: $0 SECONDS [TARGET...]" >&2
    exit 2
}
[[ $# -ge 1 && $1 =~ ^[0-9]+$ && $1 -gt 0 ]] || usage
seconds=$1
shift

fuzz_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$fuzz_dir")
cd "$repo"

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz/run.sh: no nightly toolchain (rustup toolchain install nightly); skipping fuzzing."
    echo "fuzz/run.sh: the corpora still replay on stable: cargo test -p handoff-core --test fuzz_corpus"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

# libFuzzer options per target, beyond the common ones below.
extra_options() {
    case $1 in
        # Long enough for a head to pass MAX_RESPONSE_HEAD (16 KiB).
        http1) echo "-max_len=20480" ;;
        *) echo "" ;;
    esac
}

# Build every target once; each run below then finds its binary up to date.
cargo +nightly fuzz build

logs="$fuzz_dir/target/run-logs"
mkdir -p "$logs"
summary=()
failed=()
for target in "${targets[@]}"; do
    scratch="$fuzz_dir/target/corpus-run/$target"
    mkdir -p "$scratch"
    if [[ -d "$fuzz_dir/corpus/$target" ]]; then
        cp -p "$fuzz_dir/corpus/$target"/* "$scratch"/ 2>/dev/null || true
    fi
    corpora=("$scratch")
    if [[ -d "$fuzz_dir/regressions/$target" ]]; then
        corpora+=("$fuzz_dir/regressions/$target")
    fi
    log="$logs/$target.log"
    echo "== $target: fuzzing for ${seconds}s (log: ${log#"$repo"/})"
    # shellcheck disable=SC2046 # the extra options are words on purpose
    if cargo +nightly fuzz run "$target" "${corpora[@]}" -- \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        $(extra_options "$target") >"$log" 2>&1; then
        status=ok
    else
        status=FAILED
        failed+=("$target")
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
    coverage=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -n 1 || true)
    line=$(printf '%-13s %-6s exec/s %-8s execs %-11s rss %-6s MB  %s' \
        "$target" "$status" "${rate:-?}" "${execs:-?}" "${rss:-?}" "${coverage:-no coverage line}")
    echo "$line"
    summary+=("$line")
    if [[ $status == FAILED ]]; then
        grep -E 'panicked at|^SUMMARY|ERROR: libFuzzer' "$log" | head -n 5 || true
        artifact=$(grep -Eo 'Test unit written to [^ ]+' "$log" | tail -n 1 | sed 's/.* written to //' || true)
        echo "   artifact: ${artifact:-none saved; see $log}"
    fi
done

echo
echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz/run.sh: failing targets: ${failed[*]}" >&2
    exit 1
fi
