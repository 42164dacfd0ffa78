#!/bin/sh
# First-time setup after `cmake --install` (the Debian package's postinst
# runs it too): the qumail user, the state folder, and certificates for the
# embedded KME simulator and the local STARTTLS listener in CONFDIR/tls.
# Idempotent: existing users, folders and certificates are kept. Starts
# nothing.
set -eu
confdir=${QUMAIL_CONFDIR:-@QUMAIL_CONFDIR@}
statedir=${QUMAIL_STATEDIR:-@QUMAIL_STATEDIR@}
datadir=${QUMAIL_DATADIR:-@QUMAIL_DATADIR@}
sysusers=${QUMAIL_SYSUSERS:-@QUMAIL_SYSUSERSDIR@/qumail.conf}

if [ "$(id -u)" -ne 0 ]; then
    echo "qumail setup: run as root" >&2
    exit 1
fi

# 1. the user: the sysusers.d file, or adduser without systemd-sysusers
if ! getent passwd qumail >/dev/null 2>&1; then
    if command -v systemd-sysusers >/dev/null 2>&1; then
        systemd-sysusers "$sysusers"
    else
        adduser --system --group --home "$statedir" --no-create-home \
            --gecos "QuMail Gateway" qumail >/dev/null
    fi
fi

# 2. the state folder: 0700, the daemon's own
install -d -m 0700 -o qumail -g qumail "$statedir"

# 3. certificates: a local CA, the localhost server certificate, the two
# simulated KMEs (kme-a, kme-b) and two SAEs (sae-a, sae-b). Private keys
# readable by the qumail group; the CA key by root only (it signs nothing
# after setup; re-running adds missing certificates with it).
tls=$confdir/tls
if [ ! -f "$tls/ca.pem" ]; then
    sh "$datadir/mkcerts.sh" -o "$tls" >/dev/null
    rm -f "$tls/ca.srl"
fi
chown root:qumail "$tls"
chmod 0750 "$tls"
for k in "$tls"/*.key; do
    [ "$k" = "$tls/ca.key" ] && continue
    chown root:qumail "$k"
    chmod 0640 "$k"
done
chown root:root "$tls/ca.key" && chmod 0600 "$tls/ca.key"
echo "qumail setup: user qumail, $statedir, certificates in $tls"
