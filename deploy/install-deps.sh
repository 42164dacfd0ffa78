#!/bin/sh
# Installs every build, test and benchmark dependency of QuMail Gateway on a
# fresh Debian 12 machine. Run as root; non-interactive; safe to re-run.
set -eu

export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: must run as root (apt-get)" >&2
    exit 1
fi

# Postfix asks how to configure itself on install; the tests bring their own
# config directories, so tell it to write none.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections

stamp=/var/lib/apt/periodic/qumail-update-stamp
if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +360 2>/dev/null)" ]; then
    apt-get update -q
    mkdir -p "$(dirname "$stamp")" && touch "$stamp"
fi

apt-get install -y -q --no-install-recommends \
    build-essential cmake pkg-config ca-certificates clang \
    libuv1-dev libssl-dev libjansson-dev libgmime-3.0-dev libcmocka-dev \
    libsqlite3-dev sqlite3 node-llhttp openssl \
    python3 python3-cryptography curl swaks procps psmisc neomutt \
    postfix dovecot-imapd dovecot-lmtpd \
    libclang-rt-14-dev

# Debian starts packaged daemons on install; the tests run their own
# instances on their own ports, so stop any the package started.
if command -v postfix >/dev/null 2>&1; then postfix stop >/dev/null 2>&1 || true; fi
if command -v doveadm >/dev/null 2>&1; then doveadm stop >/dev/null 2>&1 || true; fi
exit 0
