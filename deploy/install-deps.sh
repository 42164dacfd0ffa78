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

# Installing postfix or dovecot for the first time would start the system's
# own instances (Debian starts packaged daemons). The tests run their own
# instances on their own ports and never need those, and a host's running
# mail system must not be touched: forbid service starts and restarts for
# the duration of this install with a policy-rc.d (honoured by invoke-rc.d
# and deb-systemd-invoke), unless the host already has one. Nothing is ever
# stopped; packages already installed are left exactly as they are.
policy_rc=/usr/sbin/policy-rc.d
if [ ! -e "$policy_rc" ]; then
    printf '#!/bin/sh\n# qumail install-deps.sh: no service starts during install\nexit 101\n' >"$policy_rc"
    chmod 0755 "$policy_rc"
    trap 'rm -f "$policy_rc"' EXIT
    trap 'exit 130' INT TERM
fi

apt-get install -y -q --no-install-recommends \
    build-essential cmake pkg-config ca-certificates clang \
    libuv1-dev libssl-dev libjansson-dev libgmime-3.0-dev libcmocka-dev \
    libsqlite3-dev sqlite3 node-llhttp openssl \
    python3 python3-cryptography curl swaks procps psmisc neomutt \
    python3-prometheus-client python3-yaml systemd dpkg-dev debootstrap \
    postfix dovecot-imapd dovecot-lmtpd \
    libclang-rt-14-dev

# IMAP rig (tests/e2e/imap, tests/bench/imap): imaptest is built from the
# snapshot in tests/tools/imaptest against libdovecot (dovecot-dev, with
# autoconf automake libtool); real clients mbsync (isync) and msmtp (neomutt
# is above); nginx's mail proxy (libnginx-mod-mail) as the benchmark's
# reference proxy.
apt-get install -y -q --no-install-recommends \
    dovecot-dev autoconf automake libtool \
    isync msmtp nginx libnginx-mod-mail

exit 0
