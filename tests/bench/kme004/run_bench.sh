#!/bin/sh
# Runs bench_e4 against a real `qumail kme` (two KMEs in one process with
# ETSI 004 listeners, linked over loopback mTLS).
#
# usage: tests/bench/kme004/run_bench.sh BUILD_DIR [bench_e4 options...]
#   e.g. tests/bench/kme004/run_bench.sh build-rel --seconds 5 --clients 1,16,64
# Environment: KME_SYNC=full|normal (SQLite synchronous, default full),
#              KME_RATE (secret key rate, bits/s, default 2^24).
set -eu
build=$(cd "${1:?usage: run_bench.sh BUILD_DIR [options]}" && pwd)
shift
src=$(cd "$(dirname "$0")/../../.." && pwd)
qumail=$build/qumail
bench=$build/tests/bench/kme004/bench_e4
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
   "max_key_count": 100000, "secret_key_rate": $rate, "sqlite_synchronous": "$sync",
   "etsi004": {"port": 0, "max_connections": 512}}
JSON
}
{ echo '{"kmes": ['; kme kme-a kme-b; echo ','; kme kme-b kme-a; echo ']}'; } >"$tmp/kme.json"

# The background job opens its redirection in the child, maybe after the
# first sed below: create the log first.
: >"$tmp/kme.log"
"$qumail" kme --config "$tmp/kme.json" >"$tmp/kme.log" 2>&1 &
pid=$!
i=0
a=""
b=""
while [ $i -lt 600 ]; do # up to 60 s: an ASan build under load starts slowly
    a=$(sed -n 's/.*kme kme-a: ETSI 004 on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$tmp/kme.log")
    b=$(sed -n 's/.*kme kme-b: ETSI 004 on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$tmp/kme.log")
    [ -n "$a" ] && [ -n "$b" ] && break
    i=$((i + 1))
    sleep 0.1
done
if [ -z "$a" ] || [ -z "$b" ]; then
    cat "$tmp/kme.log"
    echo "run_bench: qumail kme did not start" >&2
    exit 1
fi
sleep 2 # the link comes up and the pools fill a little
echo "server: qumail kme pid $pid (SQLite synchronous=$sync, key rate $rate bit/s)"
"$bench" --port-a "$a" --port-b "$b" --certs "$tmp/certs" "$@"
