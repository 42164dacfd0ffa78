#!/bin/sh
# SMTP baseline: smtp_load straight into Postfix (delivering over LMTP into
# Dovecot) at concurrency 1, 10, 100 and message sizes 10 KiB and 1 MiB.
# Builds smtp_load in Release (build dir $QUMAIL_BENCH_BUILD, default
# <repo>/build-bench-release) unless $SMTP_LOAD names a binary. Needs root.
# Extra arguments go to bench.py (e.g. --concurrency 1,10 --json out.json).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../../.." && pwd)

if [ -z "${SMTP_LOAD:-}" ]; then
    build=${QUMAIL_BENCH_BUILD:-$top/build-bench-release}
    mkdir -p "$build"
    log=$build/smtp-load-build.log
    { cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Release -DQUMAIL_SANITIZE=OFF &&
      cmake --build "$build" -j2 --target smtp_load; } >"$log" 2>&1 ||
        { cat "$log" >&2; echo "run-baseline: building smtp_load failed" >&2; exit 1; }
    SMTP_LOAD=$build/tests/bench/smtp-load/smtp_load
    export SMTP_LOAD
fi
exec python3 "$here/bench.py" "$@"
