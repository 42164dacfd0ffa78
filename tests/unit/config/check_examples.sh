#!/bin/sh
# qumail check passes on every example configuration (with its policy) and
# fails with the right FILE:LINE[:COL] lines on broken files.
set -u
: "${QUMAIL_BIN:?}" "${QUMAIL_SRC:?}"

fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

for ex in local gateway sidecar qumail; do
    if ! "$QUMAIL_BIN" check --config "$QUMAIL_SRC/config/examples/$ex.json" >"$tmp/out" 2>"$tmp/err"; then
        echo "FAIL: qumail check on $ex.json:"; cat "$tmp/err"; fail=1
    elif ! grep -q "$ex.policy: ok" "$tmp/out"; then
        echo "FAIL: $ex.policy was not checked:"; cat "$tmp/out"; fail=1
    else
        echo "ok: $ex.json and $ex.policy"
    fi
done

# A broken configuration and its broken policy: every problem, with position.
cat >"$tmp/broken.json" <<'JSON'
{
  "smtp": {
    "listeners": [{"name": "x", "port": 99999}]
  },
  "kme_links": {"a": {"url": "https://k", "cert_file": "c", "key_file": "k"}},
  "policy_file": "broken.policy",
  "colour": 1
}
JSON
cat >"$tmp/broken.policy" <<'POLICY'
# broken on purpose
example.org   action=require link=nowhere slave_sae=B
*.example.org action=sometimes
example.org   action=none
POLICY
cat >"$tmp/want" <<WANT
$tmp/broken.json:3:41: key 'smtp.listeners[0].port': port 99999 is out of range (0..65535)
$tmp/broken.json:7:3: key 'colour': unknown key
$tmp/broken.policy:2: link: 'nowhere' is not a configured KME link (configured: a)
$tmp/broken.policy:3: action: 'sometimes' is not one of: require, prefer, none, refuse
$tmp/broken.policy:4: duplicate pattern 'example.org' (first at line 2)
WANT
"$QUMAIL_BIN" check --config "$tmp/broken.json" >"$tmp/out" 2>"$tmp/err"
rc=$?
if [ $rc -ne 1 ]; then
    echo "FAIL: broken files: exit status $rc, want 1"; fail=1
fi
if ! diff -u "$tmp/want" "$tmp/err"; then
    echo "FAIL: broken files: unexpected messages"; fail=1
else
    echo "ok: broken files reported with FILE:LINE"
fi

# A JSON syntax error names the file, line and column.
printf '{\n  "log_level": "info",\n  "smtp": {,}\n}\n' >"$tmp/syntax.json"
"$QUMAIL_BIN" check --config "$tmp/syntax.json" >/dev/null 2>"$tmp/err"
rc=$?
if [ $rc -ne 1 ] || ! grep -q "^$tmp/syntax.json:3:12: " "$tmp/err"; then
    echo "FAIL: syntax error: status $rc:"; cat "$tmp/err"; fail=1
else
    echo "ok: syntax error at $(cut -d' ' -f1 "$tmp/err")"
fi

# --files: missing certificate files are reported.
"$QUMAIL_BIN" check --files --config "$QUMAIL_SRC/config/examples/sidecar.json" >/dev/null 2>"$tmp/err"
rc=$?
if [ $rc -ne 1 ] || ! grep -q "key 'kme_links.site.cert_file': cannot read /run/secrets/qkd/sae.pem" "$tmp/err"; then
    echo "FAIL: --files: status $rc:"; cat "$tmp/err"; fail=1
else
    echo "ok: --files reports unreadable files"
fi

# Usage errors exit 2.
"$QUMAIL_BIN" check >/dev/null 2>&1
rc=$?
if [ $rc -ne 2 ]; then
    echo "FAIL: no arguments: status $rc, want 2"; fail=1
fi
exit $fail
