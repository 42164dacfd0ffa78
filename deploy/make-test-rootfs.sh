#!/bin/sh
# A minimal Debian 12 root for the package test (tests/e2e/install):
# debootstrap with what the qumail package needs, so the test installs it
# with dpkg -i, offline. About 280 MB and a few minutes; kept and reused.
#   sh deploy/make-test-rootfs.sh [DIR]     (default /var/tmp/qumail-rootfs-bookworm)
set -eu
dir=${1:-/var/tmp/qumail-rootfs-bookworm}
if [ -x "$dir/usr/bin/dpkg" ] && [ -f "$dir/.qumail-rootfs-ok" ]; then
    echo "$dir"
    exit 0
fi
rm -rf "$dir.tmp"
debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,openssl,adduser,libuv1,libssl3,libjansson4,libgmime-3.0-0,libsqlite3-0,ca-certificates \
    bookworm "$dir.tmp" http://deb.debian.org/debian >&2
touch "$dir.tmp/.qumail-rootfs-ok"
rm -rf "$dir"
mv "$dir.tmp" "$dir"
echo "$dir"
