#!/bin/sh
# Builds imaptest (Dovecot's IMAP compliance and stress tester, MIT licensed,
# see upstream/COPYING and upstream/COPYING.MIT) from the source snapshot in
# upstream/ beside this script: release-2.3.21 of dovecot/imaptest, commit
# 0de0dbfb8293a71866d284bc1e4ddf9dfbcb6985. Adapted from the team's
# shared/tools/build-imaptest.sh so that a clean checkout builds it.
#
#   sh build-imaptest.sh OUTDIR   -> OUTDIR/imaptest (binary), OUTDIR/tests (scripts)
#
# Needs the Debian packages dovecot-dev autoconf automake libtool (see
# deploy/install-deps.sh). Debian 12's libdovecot takes a fourth argument in
# imap_parser_create(); the build adds it (", NULL") at the three call sites
# of a scratch copy (the snapshot itself stays as released). Run the binary
# with LD_LIBRARY_PATH=/usr/lib/dovecot. Rebuilds when the snapshot or this
# script is newer than OUTDIR/imaptest. Exit 0 and the binary's path on
# stdout; exit 1 with the build log's tail on stderr.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build-imaptest.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ -x "$out/imaptest" ] && [ -d "$out/tests" ] &&
   [ -z "$(find "$here/upstream" "$0" -newer "$out/imaptest" 2>/dev/null | head -n 1)" ]; then
    echo "$out/imaptest"
    exit 0
fi
if [ ! -f /usr/lib/dovecot/dovecot-config ]; then
    echo "build-imaptest: /usr/lib/dovecot/dovecot-config missing (install dovecot-dev)" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -R "$here/upstream/." "$work/"
cd "$work"
for f in src/commands.c src/imap-client.c src/test-parser.c; do
    sed -i 's/imap_parser_create(\(.*\), (size_t)-1);/imap_parser_create(\1, (size_t)-1, NULL);/' "$f"
done
jobs=${IMAPTEST_JOBS:-$(nproc)}
{
    ./autogen.sh
    ./configure --with-dovecot=/usr/lib/dovecot
    make -j"$jobs"
} >"$out/build.log" 2>&1 || { tail -n 20 "$out/build.log" >&2; exit 1; }
rm -rf "$out/tests"
cp -R src/tests "$out/tests"
cp src/imaptest "$out/imaptest.new"
mv "$out/imaptest.new" "$out/imaptest"
echo "$out/imaptest"
