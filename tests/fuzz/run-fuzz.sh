#!/bin/sh
# Builds every libFuzzer target (clang, -DQUMAIL_FUZZ=ON: all libraries
# instrumented) and runs each for a set time from its seeds, then prints
# one line per target: executions, executions per second, coverage
# (libFuzzer's cov: edges and ft: features), corpus size, peak RSS, and the
# load average. Targets are found, not listed: every tests/fuzz/<dir>/
# with a CMakeLists.txt is configured, every build target named fuzz_* is
# built, and every fuzz_* executable it yields is run with
# tests/fuzz/<dir>/seeds.
#
# usage: tests/fuzz/run-fuzz.sh [-t SECONDS] [-b BUILD_DIR] [-j JOBS] [TARGET...]
#   -t  seconds per target (default 60)      -b  build dir (default build-fuzz)
#   -j  parallel targets (default 1)         TARGET  only these (names)
# Crashes are kept in BUILD_DIR/fuzz-runs/<target>/ (crash-*, and the log);
# the script exits 1 if any target crashed.
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
seconds=60
build=build-fuzz
jobs=1
while getopts t:b:j: o; do
    case $o in
    t) seconds=$OPTARG ;;
    b) build=$OPTARG ;;
    j) jobs=$OPTARG ;;
    *) echo "usage: $0 [-t SECONDS] [-b BUILD_DIR] [-j JOBS] [TARGET...]" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
case $build in /*) ;; *) build=$src/$build ;; esac

CC=${CC:-clang} cmake -S "$src" -B "$build" -DQUMAIL_FUZZ=ON -DQUMAIL_TESTS=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
# Every target named fuzz_* (qumail_fuzz_target() ones and any other).
names=$(cmake --build "$build" --target help | sed -n 's/^\.\.\. \(fuzz_[A-Za-z0-9_]*\).*/\1/p' |
    grep -v '^fuzz_all$' | grep -v '_regress$' | sort -u)
[ -n "$names" ] || { echo "no fuzz targets configured" >&2; exit 1; }
# shellcheck disable=SC2086
nice cmake --build "$build" --target $names -j2 >"$build/fuzz-build.log" 2>&1 || {
    tail -30 "$build/fuzz-build.log" >&2
    exit 1
}

runs=$build/fuzz-runs
mkdir -p "$runs"
targets=$(find "$build/tests/fuzz" -type f -perm -u+x -name 'fuzz_*' | sort)
[ -n "$targets" ] || { echo "no fuzz targets built" >&2; exit 1; }

run_one() { # BINARY
    bin=$1
    name=$(basename "$bin")
    rel=$(dirname "${bin#"$build"/}")   # tests/fuzz/<dir>
    out=$runs/$name
    rm -rf "$out"
    mkdir -p "$out/corpus"
    [ -d "$src/$rel/seeds" ] && cp "$src/$rel/seeds/"* "$out/corpus/" 2>/dev/null || true
    seeds=$(ls "$out/corpus" | wc -l)
    (cd "$out" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
        nice "$bin" -max_total_time="$seconds" -print_final_stats=1 -timeout=25 \
        -rss_limit_mb=2048 corpus >"$out/log" 2>&1) || true
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out/log" | tail -1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$out/log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$out/log" | tail -1)
    cov=$(echo "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
    corp=$(ls "$out/corpus" | wc -l)
    status=ok
    ls "$out"/crash-* "$out"/leak-* "$out"/timeout-* "$out"/oom-* >/dev/null 2>&1 && status=CRASH
    grep -q "ERROR: libFuzzer\|ERROR: AddressSanitizer\|runtime error" "$out/log" && status=CRASH
    printf '%-26s %6ss %12s %8s %6s %7s %5s->%-6s %5sMB  %s\n' "$name" "$seconds" \
        "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$seeds" "$corp" "${rss:-?}" "$status"
}

echo "fuzzing $(echo "$targets" | wc -l) targets for ${seconds}s each; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-26s %7s %12s %8s %6s %7s %12s %7s  %s\n' target time execs exec/s cov ft 'seeds->corp' rss status
tmp=$(mktemp)
n=0
for bin in $targets; do
    name=$(basename "$bin")
    if [ $# -gt 0 ]; then
        case " $* " in *" $name "*) ;; *) continue ;; esac
    fi
    if [ "$jobs" -gt 1 ]; then
        run_one "$bin" >>"$tmp" &
        n=$((n + 1))
        [ $((n % jobs)) -eq 0 ] && wait
    else
        run_one "$bin" | tee -a "$tmp"
    fi
done
wait
[ "$jobs" -gt 1 ] && cat "$tmp"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
if grep -q CRASH "$tmp"; then
    rm -f "$tmp"
    echo "crashes: see $runs/<target>/" >&2
    exit 1
fi
rm -f "$tmp"
