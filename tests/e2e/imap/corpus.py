"""The IMAP test corpus: tests/unit/mime/corpus/*.eml (real clients' shapes,
also used by the mime engine's tests) and tests/e2e/imap/corpus/*.eml (the
shapes IMAP's BODYSTRUCTURE, ENVELOPE and section numbers are sensitive to;
make_corpus.py there regenerates them)."""

import glob
import os

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("QUMAIL_SRC", os.path.abspath(os.path.join(HERE, "..", "..", "..")))
DIRS = (os.path.join(SRC, "tests", "unit", "mime", "corpus"),
        os.path.join(SRC, "tests", "e2e", "imap", "corpus"))


def messages(max_size=None):
    """[(name, bytes)] in a fixed order. A zero-octet message is left out:
    IMAP cannot store one (Dovecot refuses an empty APPEND), so a mailbox
    can never hold it. max_size leaves out larger ones."""
    out = []
    for d in DIRS:
        for p in sorted(glob.glob(os.path.join(d, "*.eml"))):
            with open(p, "rb") as f:
                data = f.read()
            if not data or (max_size and len(data) > max_size):
                continue
            out.append((os.path.basename(p), data))
    return out
