#!/bin/sh
# Runs kme_bench against a real `qumail kme` (two KMEs in one process,
# linked over loopback mTLS), both from a Release build directory.
#
# usage: tests/bench/kme/run_bench.sh BUILD_DIR [kme_bench options...]
#   e.g. tests/bench/kme/run_bench.sh build-rel --seconds 5 --clients 1,16,64
# Environment: KME_SYNC=full|normal (SQLite synchronous, default full),
#              KME_RATE (secret key rate, bits/s, default 2^24: 6x what
#              10,000 deliveries/s of 256-bit keys draw), KME_COUNT
#              (max_key_count, default 100000).
set -eu
build=$(cd "${1:?usage: run_bench.sh BUILD_DIR [options]}" && pwd)
shift
src=$(cd "$(dirname "$0")/../../.." && pwd)
qumail=$build/qumail
bench=$build/tests/bench/kme/kme_bench
tmp=$(mktemp -d)
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

sh "$src/certs/mkcerts.sh" -o "$tmp/certs" -k kme-a -k kme-b -s sae-a -s sae-b >/dev/null
rate=${KME_RATE:-16777216}
sync=${KME_SYNC:-full}
kme() { # ID PEER
    cat <<JSON
  {"kme_id": "$1", "port": 0,
   "tls": {"cert": "$tmp/certs/$1.pem", "key": "$tmp/certs/$1.key", "ca": "$tmp/certs/ca.pem"},
   "database": "$tmp/$1.db", "link": {"port": 0, "peer_kme_id": "$2"},
   "key_size": 256, "max_key_size": 1024, "max_key_count": ${KME_COUNT:-100000},
   "secret_key_rate": $rate, "sqlite_synchronous": "$sync"}
JSON
}
{ echo '{"kmes": ['; kme kme-a kme-b; echo ','; kme kme-b kme-a; echo ']}'; } >"$tmp/kme.json"

# The background job opens its redirection in the child, maybe after the
# first sed below: create the log first.
: >"$tmp/kme.log"
"$qumail" kme --config "$tmp/kme.json" >"$tmp/kme.log" 2>&1 &
pid=$!
# Up to 60 s for the KMEs to listen: an ASan build on a loaded machine is
# slow to start (the loop ends as soon as both have).
i=0
while [ $i -lt 600 ]; do
    a=$(sed -n 's/.*kme kme-a: 014 API on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$tmp/kme.log")
    b=$(sed -n 's/.*kme kme-b: 014 API on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$tmp/kme.log")
    [ -n "$a" ] && [ -n "$b" ] && break
    i=$((i + 1))
    sleep 0.1
done
if [ -z "$a" ] || [ -z "$b" ]; then
    cat "$tmp/kme.log"
    echo "run_bench: qumail kme did not start" >&2
    exit 1
fi
# let the pools fill a little
sleep 2
echo "server: qumail kme pid $pid (SQLite synchronous=$sync, key rate $rate bit/s)"
"$bench" --url-a "https://127.0.0.1:$a" --url-b "https://127.0.0.1:$b" --certs "$tmp/certs" \
    --server-pid "$pid" "$@"
