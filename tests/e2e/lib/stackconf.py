"""Configuration of a MailStack: the test domains, users and fixed
refusals, and the Postfix (main.cf, master.cf, maps) and Dovecot
(dovecot.conf, passwd-file) files written for one stack. See README.md."""

import grp
import os
import pwd
import re
import subprocess

from procutil import HOST, HarnessError

DOMAINS = ("example.org", "example.net", "sub.example.org")

# Mailbox users (address -> password). Every address is also a valid SASL
# login on the submission port and an IMAP login.
USERS = {
    "alice@example.org": "alice-secret",
    "bob@example.org": "bob-secret",
    "carol@example.net": "carol-secret",
    "dave@example.net": "dave-secret",
    "erin@sub.example.org": "erin-secret",
}

# Recipients Postfix answers at RCPT time with a fixed reply (check_recipient_access).
REJECT_RCPT = "reject@example.org"          # 550 5.1.1
TEMPFAIL_RCPT = "tempfail@example.org"      # 450 4.2.0
# Senders whose message Postfix refuses after the final "." of DATA
# (smtpd_end_of_data_restrictions with check_sender_access).
REJECT_DATA_SENDER = "reject-data@example.net"      # 554 5.7.1
TEMPFAIL_DATA_SENDER = "tempfail-data@example.net"  # 451 4.3.0

REPLY_REJECT_RCPT = "550 5.1.1 Recipient rejected by mailstack test policy"
REPLY_TEMPFAIL_RCPT = "450 4.2.0 Recipient temporarily refused by mailstack test policy"
REPLY_REJECT_DATA = "554 5.7.1 Message rejected by mailstack test policy"
REPLY_TEMPFAIL_DATA = "451 4.3.0 Message temporarily refused by mailstack test policy"

DEFAULT_MESSAGE_SIZE_LIMIT = 100 * 1024 * 1024


def make_selfsigned_cert(directory, cn="localhost"):
    """Write a throwaway self-signed certificate (CA:TRUE, SAN localhost and
    127.0.0.1) and its key into `directory`; returns (cert, key). Clients
    verify against the certificate itself."""
    cert = os.path.join(directory, "selfsigned.crt")
    key = os.path.join(directory, "selfsigned.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
         "-subj", "/CN=%s" % cn,
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", key, "-out", cert],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        timeout=30)
    return cert, key


_MASTER_CF = """\
# service  type  private unpriv chroot wakeup maxproc command
{smtp} inet n - n - - smtpd
{submission} inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=no
  -o smtpd_tls_security_level={submission_tls_level}
  -o smtpd_client_restrictions=
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=check_recipient_access,texthash:{conf}/recipient_access,permit_sasl_authenticated,reject
{submission_options}{smtps_line}{reinject_line}pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
lmtp      unix  - - n - - lmtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
{extra}"""

_SMTPS_LINE = """\
{smtps} inet n - n - - smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
{restrictions}"""

# The reinjection listener of a content-filter deployment
# (deploy/gateway/postfix-content-filter.md): a filter hands mail back here,
# and this smtpd must not apply the main.cf content_filter again.
_REINJECT_LINE = """\
{reinject} inet n - n - - smtpd
  -o syslog_name=postfix/reinject
  -o content_filter=
  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters
  -o mynetworks=127.0.0.0/8
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
"""

_SMTPS_AUTH_ONLY = """\
  -o smtpd_client_restrictions=
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=check_recipient_access,texthash:{conf}/recipient_access,permit_sasl_authenticated,reject
"""

_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = mailstack.localhost
mydomain = localhost
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
relay_domains =
alias_maps =
alias_database =
local_recipient_maps =
local_transport = error:local delivery is disabled
virtual_alias_maps =
virtual_mailbox_domains = {domains}
virtual_mailbox_maps = texthash:{conf}/vmailbox
virtual_transport = lmtp:inet:127.0.0.1:{lmtp}
smtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
maillog_file = /dev/stdout
smtpd_banner = $myhostname ESMTP Postfix (mailstack)
biff = no
local_header_rewrite_clients =
smtputf8_enable = yes
message_size_limit = {size_limit}
mailbox_size_limit = 0
virtual_mailbox_limit = 0
in_flow_delay = 0
default_process_limit = 300
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
queue_run_delay = 2s
minimal_backoff_time = 2s
maximal_backoff_time = 10s
delay_warning_time = 0
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = check_recipient_access texthash:{conf}/recipient_access, permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_end_of_data_restrictions = check_sender_access texthash:{conf}/eod_sender_access
smtpd_sasl_type = dovecot
smtpd_sasl_path = {sasl_socket}
smtpd_sasl_auth_enable = no
smtpd_sasl_security_options = noanonymous
broken_sasl_auth_clients = no
smtp_tls_security_level = none
lmtp_tls_security_level = none
{tls}"""

_MAIN_CF_TLS = """\
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
smtpd_tls_loglevel = 1
"""

_DOVECOT_CONF = """\
protocols = imap lmtp
listen = 127.0.0.1
instance_name = {instance}
base_dir = {run}
state_dir = {state}
log_path = {log}
info_log_path = {log}
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:{mail}/%d/%n
mail_save_crlf = yes
mail_fsync = never
auth_mechanisms = plain login
disable_plaintext_auth = no
auth_failure_delay = {auth_failure_delay}
{ssl}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%Lu {users}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={mail}/%d/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
}}
service auth {{
  unix_listener auth-postfix {{
    mode = 0666
  }}
}}
protocol lmtp {{
  postmaster_address = postmaster@example.org
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Drafts {{
    special_use = \\Drafts
    auto = subscribe
  }}
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = subscribe
  }}
}}
"""


def _override(main_cf, settings):
    """main.cf text with each `name = value` of settings replacing the
    line of that name, or appended."""
    if not settings:
        return main_cf
    out = []
    for line in main_cf.splitlines():
        name = line.split("=", 1)[0].strip()
        if "=" in line and not line.startswith((" ", "\t", "#")) and name in settings:
            continue
        out.append(line)
    for name, value in settings.items():
        if not re.fullmatch(r"[A-Za-z0-9_]+", name) or "\n" in str(value):
            raise HarnessError("bad postfix setting %r" % name)
        out.append("%s = %s" % (name, value))
    return "\n".join(out) + "\n"


def _master_cf_extra(lines):
    """master.cf text of the caller's extra service lines, appended
    verbatim (one entry per line, continuation lines start with blanks)."""
    out = []
    for line in lines or ():
        if "\n" in line or "\r" in line:
            raise HarnessError("bad master.cf line %r" % line)
        out.append(line + "\n")
    return "".join(out)


def _write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)

def write_postfix_conf(st):
    """Write main.cf, master.cf and the texthash maps of MailStack `st`."""
    conf = st.conf_dir
    tls = ""
    smtps_line = ""
    if st.cert:
        tls = _MAIN_CF_TLS.format(cert=st.cert, key=st.key)
        smtps_line = _SMTPS_LINE.format(
            smtps="%s:%d" % (HOST, st.smtps_port),
            restrictions=_SMTPS_AUTH_ONLY.format(conf=conf)
            if st.smtps_auth else "")
    main_cf = _MAIN_CF.format(
        queue=st.queue_dir, data=st.data_dir,
        domains=", ".join(st.domains), conf=conf, lmtp=st.lmtp_port,
        size_limit=st.message_size_limit, sasl_socket=st.sasl_socket,
        tls=tls)
    _write(os.path.join(conf, "main.cf"),
                _override(main_cf, st.postfix_settings))
    _write(os.path.join(conf, "master.cf"), _MASTER_CF.format(
        smtp="%s:%d" % (HOST, st.smtp_port),
        submission="%s:%d" % (HOST, st.submission_port),
        submission_tls_level="may" if st.cert else "none",
        smtps_line=smtps_line, conf=conf,
        submission_options="".join("  -o %s\n" % o for o in st.submission_options),
        reinject_line=_REINJECT_LINE.format(
            reinject="%s:%d" % (HOST, st.reinject_port))
        if st.reinject_port else "",
        extra=_master_cf_extra(st.master_cf_extra)))
    _write(os.path.join(conf, "vmailbox"), "".join(
        "%s OK\n" % u for u in sorted(st.users)))
    _write(os.path.join(conf, "recipient_access"),
                "%s %s\n%s %s\n" % (REJECT_RCPT, REPLY_REJECT_RCPT,
                                    TEMPFAIL_RCPT, REPLY_TEMPFAIL_RCPT))
    _write(os.path.join(conf, "eod_sender_access"),
                "%s %s\n%s %s\n" % (REJECT_DATA_SENDER, REPLY_REJECT_DATA,
                                    TEMPFAIL_DATA_SENDER,
                                    REPLY_TEMPFAIL_DATA))

def write_dovecot_conf(st):
    """Write dovecot.conf and the passwd-file of MailStack `st`."""
    pw = pwd.getpwnam("dovenull")
    users_file = os.path.join(st.dovecot_dir, "users")
    _write(users_file, "".join(
        "%s:{PLAIN}%s\n" % (u.lower(), p)
        for u, p in sorted(st.users.items())), mode=0o640)
    os.chown(users_file, 0, grp.getgrnam("dovecot").gr_gid)
    if st.cert:
        ssl_conf = "ssl = yes\nssl_cert = <%s\nssl_key = <%s\n" % (
            st.cert, st.key)
    else:
        ssl_conf = "ssl = no\n"
    _write(st.dovecot_conf, _DOVECOT_CONF.format(
        instance="mailstack-%s" % os.path.basename(st.dir),
        run=st.run_dir, state=st.state_dir, log=st.dovecot_log,
        mail=st.mail_dir, auth_failure_delay="%ds" % st.auth_failure_delay,
        ssl=ssl_conf, users=users_file, uid=pw.pw_uid, gid=pw.pw_gid,
        imap=st.imap_port, imaps=st.imaps_port or 0,
        lmtp=st.lmtp_port) + getattr(st, "dovecot_extra", ""))
