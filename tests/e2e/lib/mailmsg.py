"""Messages for the e2e harness: build test messages, send them with
smtplib, and strip the header fields Postfix and Dovecot add on delivery.

Python 3 standard library only."""

import os
import re
import smtplib
import time


_DELIVERY_FIELDS = (b"return-path", b"delivered-to")
_DELIVERY_RECEIVED = re.compile(rb"\(Postfix\)\s+with\s|\swith\s+LMTP\s")


def _split_first_field(data):
    """Split the first header field (with its folded continuation lines)
    off `data`; returns (name_lower, field_bytes, rest) or None at the end
    of the header."""
    if not data or data.startswith(b"\r\n") or data.startswith(b"\n"):
        return None
    end = 0
    while True:
        nl = data.find(b"\n", end)
        if nl < 0:
            end = len(data)
            break
        end = nl + 1
        if end >= len(data) or data[end:end + 1] not in (b" ", b"\t"):
            break
    field = data[:end]
    colon = field.find(b":")
    if colon <= 0:
        return None
    return field[:colon].strip().lower(), field, data[end:]


def strip_delivery_headers(raw):
    """Remove the header fields the delivery path prepended to a stored
    message, returning the message as it was submitted.

    Postfix's smtpd prepends one "Received: ... by <host> (Postfix) with
    ESMTP id ..." field; Dovecot's LMTP prepends "Return-Path:",
    "Delivered-To:" and "Received: ... by <host> with LMTP id ...". Only
    leading fields of exactly these kinds are removed, so a submitted
    message that starts with its own Received fields keeps them."""
    data = raw
    while True:
        parts = _split_first_field(data)
        if parts is None:
            return data
        name, field, rest = parts
        if name in _DELIVERY_FIELDS:
            data = rest
        elif name == b"received" and _DELIVERY_RECEIVED.search(field):
            data = rest
        else:
            return data


def delivery_headers(raw):
    """The header fields the delivery path prepended (see
    strip_delivery_headers), as bytes."""
    stripped = strip_delivery_headers(raw)
    return raw[:len(raw) - len(stripped)]


def make_message(sender, rcpts, subject="mailstack test", body=None,
                 size=None, msgid=None, extra_headers=()):
    """A simple RFC 5322 message with CRLF line ends as bytes. `size` pads
    the body with 76-character lines until the message is about that many
    bytes."""
    if msgid is None:
        msgid = "<%d.%d.%d@mailstack.test>" % (time.time_ns(), os.getpid(),
                                               id(object()))
    head = [
        "From: <%s>" % sender,
        "To: " + ", ".join("<%s>" % r for r in rcpts),
        "Subject: %s" % subject,
        "Date: %s" % time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
        "Message-ID: %s" % msgid,
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
    ]
    head.extend(extra_headers)
    text = "\r\n".join(head) + "\r\n\r\n"
    text += body if body is not None else "Hello from the mailstack harness.\r\n"
    if size is not None:
        line = ("0123456789abcdefghijklmnopqrstuvwxyz" * 3)[:76] + "\r\n"
        n = 0
        parts = [text]
        total = len(text)
        while total + len(line) <= size:
            parts.append("%08d" % n + line[8:])
            total += len(line)
            n += 1
        text = "".join(parts)
    return text.encode("ascii")


def smtp_send(host, port, mail_from, rcpts, msg, starttls=False,
              implicit_tls=False, login=None, ssl_context=None, timeout=30,
              mail_options=(), rcpt_options=(), helo="mailstack-client.localhost"):
    """Send one message over SMTP with smtplib and QUIT.

    Returns the dict of refused recipients; raises as smtplib.sendmail does
    (SMTPRecipientsRefused when every recipient is refused, SMTPDataError
    for a DATA refusal, SMTPSenderRefused, SMTPAuthenticationError...).
    login: (user, password) for AUTH. msg: bytes with CRLF line ends."""
    if isinstance(rcpts, str):
        rcpts = [rcpts]
    if implicit_tls:
        s = smtplib.SMTP_SSL(host, port, timeout=timeout, context=ssl_context)
    else:
        s = smtplib.SMTP(host, port, timeout=timeout)
    try:
        s.ehlo(helo)
        if starttls:
            s.starttls(context=ssl_context)
            s.ehlo(helo)
        if login:
            s.login(*login)
        return s.sendmail(mail_from, rcpts, msg, list(mail_options),
                          list(rcpt_options))
    finally:
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            s.close()
