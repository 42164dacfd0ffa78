#!/bin/sh
# qumail's command line: exit codes (0 ok, 1 failure, 2 usage naming the
# option), option aliases shared by mime and kme-client, `config dump`
# (round trip, -n), `policy query`, `check --files` (state folder, never
# "ok" beside an error).
set -u
: "${QUMAIL_BIN:?}" "${QUMAIL_SRC:?}"
Q=$QUMAIL_BIN
fail=0
tmp=$(mktemp -d)
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT INT TERM

# expect WANT_STATUS STDERR_PATTERN cmd...
expect() {
    want=$1 pat=$2
    shift 2
    "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ "$rc" -ne "$want" ]; then
        echo "FAIL: $*: status $rc, want $want"; cat "$tmp/err"; fail=1; return
    fi
    if [ -n "$pat" ] && ! grep -q -e "$pat" "$tmp/err" "$tmp/out"; then
        echo "FAIL: $*: no '$pat' in:"; cat "$tmp/err" "$tmp/out"; fail=1; return
    fi
    echo "ok: $* -> $rc"
}

# --- usage errors: status 2, the option named ---------------------------
expect 2 "unknown command" "$Q" nosuch
expect 2 "'--bogus'" "$Q" mime encrypt --bogus
expect 2 "\-\-level" "$Q" mime encrypt --level purple
expect 2 "\-\-number: 'x'" "$Q" kme-client enc --kme https://k --cert c --key k --slave-sae b --number x
expect 2 "\-\-kme URL is required" "$Q" kme-client status --cert c --key k --slave-sae b
expect 2 "\-\-master-sae ID is required" "$Q" kme-client dec --kme https://k --cert c --key k --key-id x
expect 2 "unknown action 'frob'" "$Q" kme-client frob
expect 2 "\-\-config FILE is required" "$Q" proxy
expect 2 "'--frob'" "$Q" proxy --config x --frob
expect 2 "\-\-config FILE is required" "$Q" kme
expect 2 "option -- 'x'" "$Q" check -x
expect 2 "\\-\\-config FILE or --policy FILE is required" "$Q" check
expect 2 "an action is required" "$Q" config
expect 2 "\-\-config FILE is required" "$Q" config dump
expect 2 "an ADDRESS is required" "$Q" policy query --policy "$QUMAIL_SRC/config/examples/local.policy"
for c in proxy kme kme-client check mime config policy; do
    expect 0 "Exit status\|exit status" "$Q" "$c" --help
done

# --- the same names in mime and kme-client ------------------------------
# (connection refused on a closed port: status 1 means the options parsed)
port=1
for o in "--kme" "--url"; do
    expect 1 "" "$Q" kme-client status $o "https://127.0.0.1:$port" --cert c --key k --slave-sae b
done
for o in "--slave-sae" "--slave" "--sae"; do
    expect 1 "" "$Q" kme-client status --kme "https://127.0.0.1:$port" --cert c --key k $o b
done
printf 'From: a@example.org\r\nTo: b@example.org\r\nSubject: x\r\n\r\nhello\r\n' >"$tmp/m.eml"
for o in "--kme" "--url"; do
    for s in "--slave-sae" "--slave"; do
        expect 1 "" "$Q" mime encrypt $o "https://127.0.0.1:$port" $s b --cert c --key k "$tmp/m.eml"
    done
done

# --- config dump ----------------------------------------------------------
for ex in local gateway sidecar qumail; do
    "$Q" config dump --config "$QUMAIL_SRC/config/examples/$ex.json" >"$tmp/d1.json" 2>"$tmp/err" ||
        { echo "FAIL: config dump $ex"; cat "$tmp/err"; fail=1; continue; }
    # the dump is a configuration that dumps to itself
    "$Q" config dump --config "$tmp/d1.json" >"$tmp/d2.json" 2>"$tmp/err" &&
        cmp -s "$tmp/d1.json" "$tmp/d2.json" &&
        echo "ok: config dump $ex round-trips" ||
        { echo "FAIL: config dump $ex does not round-trip"; diff "$tmp/d1.json" "$tmp/d2.json"; fail=1; }
done
printf '{"smtp": {"limits": {"max_recipients": 7}}}\n' >"$tmp/small.json"
"$Q" config dump -n --config "$tmp/small.json" >"$tmp/out"
python3 - "$tmp/out" <<'PY' && echo "ok: config dump -n" || fail=1
import json, sys
d = json.load(open(sys.argv[1]))
want = {"smtp": {"limits": {"max_recipients": 7}}}
if d != want:
    print("FAIL: config dump -n:", d); sys.exit(1)
PY
"$Q" config dump --config "$tmp/small.json" | grep -q '"max_message_size": "25M"' &&
    echo "ok: config dump shows defaults" || { echo "FAIL: defaults missing"; fail=1; }
printf '{"smtp": {"limits": {"max_recipients": 0}}}\n' >"$tmp/bad.json"
expect 1 "bad.json:1:.*max_recipients" "$Q" config dump --config "$tmp/bad.json"

# --- policy query -------------------------------------------------------------
L="$QUMAIL_SRC/config/examples/local.json"
expect 0 "rule 'ceo@example.net' (address, .*local.policy:12) action=require level=otp link=local slave_sae=sae-b" \
    "$Q" policy query --config "$L" ceo@example.net
expect 0 "rule '\*.example.net' (suffix, .*:8) action=require level=aes" \
    "$Q" policy query --config "$L" Someone@Sub.Example.Net
expect 0 "rule '\*' (default, .*) action=none" "$Q" policy query --config "$L" x@example.com
expect 0 "sender rule 'example.net' (domain" "$Q" policy query --sender --config "$L" x@example.net
printf 'example.org action=none\n' >"$tmp/p.policy"
expect 1 "no rule matches" "$Q" policy query --policy "$tmp/p.policy" x@example.com
"$Q" policy query --json --config "$L" ceo@example.net | python3 -c '
import json, sys
o = json.loads(sys.stdin.read())
assert o["action"] == "require" and o["level"] == "otp" and o["on_no_key"] == "refuse", o
assert o["line"] == 12 and o["link"] == "local", o' && echo "ok: policy query --json" ||
    { echo "FAIL: policy query --json"; fail=1; }

# --- log targets: journal priorities, auto-detected from JOURNAL_STREAM --------
printf '{"state_dir": "%s/lt", "smtp": {"listeners": [{"name": "x", "port": 0}]},
 "policy_file": "/nonexistent/qumail.policy"}\n' "$tmp" >"$tmp/lt.json"
"$Q" proxy --config "$tmp/lt.json" --log-target journal 2>"$tmp/err"
if grep -q '^<3>error: policy: /nonexistent/qumail.policy' "$tmp/err"; then
    echo "ok: --log-target journal: <3> priority prefix"
else
    echo "FAIL: --log-target journal:"; cat "$tmp/err"; fail=1
fi
: >"$tmp/journal"
JOURNAL_STREAM="$(stat -c %d:%i "$tmp/journal")" "$Q" proxy --config "$tmp/lt.json" 2>>"$tmp/journal"
if grep -q '^<3>error: ' "$tmp/journal"; then
    echo "ok: auto target: stderr connected to the journal gets <N> prefixes"
else
    echo "FAIL: auto journal:"; cat "$tmp/journal"; fail=1
fi
"$Q" proxy --config "$tmp/lt.json" 2>"$tmp/err"
if grep -q '^[0-9-]*T[0-9:.]*Z qumail-proxy error: policy' "$tmp/err"; then
    echo "ok: auto target: plain stderr keeps timestamps"
else
    echo "FAIL: stderr target:"; cat "$tmp/err"; fail=1
fi
expect 2 "\-\-log-target: 'purple'" "$Q" proxy --config "$tmp/lt.json" --log-target purple

# --- check --files: the state folder; "ok" never beside an error --------------
if [ "$(id -u)" -ne 0 ]; then
    echo "skip: check --files permission cases need root"
else
    mkdir -p "$tmp/ro"
    cat >"$tmp/st.json" <<JSON
{"state_dir": "$tmp/ro/state", "policy_file": "p.policy"}
JSON
    chmod 0555 "$tmp/ro"
    # root writes anywhere: run as nobody to see what the daemon's user sees
    chmod 0755 "$tmp"; chmod 0644 "$tmp/st.json" "$tmp/p.policy"
    # the build tree may sit in a folder nobody cannot enter (a 0700 temp
    # checkout): nobody runs a copy
    Qn="$tmp/qumail-nobody"; cp "$Q" "$Qn"; chmod 0755 "$Qn"
    su -s /bin/sh nobody -c "'$Qn' check --files --config '$tmp/st.json'" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ $rc -eq 1 ] && grep -q "key 'state_dir': $tmp/ro/state does not exist and cannot be created" "$tmp/err" &&
        ! grep -q "st.json: ok" "$tmp/out"; then
        echo "ok: check --files reports an uncreatable state_dir, no 'ok'"
    else
        echo "FAIL: check --files state_dir: status $rc"; cat "$tmp/out" "$tmp/err"; fail=1
    fi
    mkdir -p "$tmp/st2"; chmod 0755 "$tmp/st2"
    cat >"$tmp/st2.json" <<JSON
{"state_dir": "$tmp/st2", "policy_file": "p.policy"}
JSON
    chmod 0644 "$tmp/st2.json"
    su -s /bin/sh nobody -c "'$Qn' check --files --config '$tmp/st2.json'" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ $rc -eq 1 ] && grep -q "key 'state_dir': cannot write in $tmp/st2" "$tmp/err" &&
        ! grep -q "st2.json: ok" "$tmp/out"; then
        echo "ok: check --files reports an unwritable state_dir"
    else
        echo "FAIL: check --files unwritable: status $rc"; cat "$tmp/out" "$tmp/err"; fail=1
    fi
    chown nobody "$tmp/st2"
    su -s /bin/sh nobody -c "'$Qn' check --files --config '$tmp/st2.json'" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ $rc -eq 0 ] && grep -q "st2.json: ok" "$tmp/out"; then
        echo "ok: check --files passes on a writable state_dir"
    else
        echo "FAIL: check --files writable: status $rc"; cat "$tmp/out" "$tmp/err"; fail=1
    fi
fi
if [ $fail -eq 0 ]; then echo "cli: all passed"; fi
exit $fail
