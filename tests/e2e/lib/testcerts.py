"""The test CA and its certificates for the e2e tests (certs/mkcerts.sh):
localhost (servers: Postfix, Dovecot, the proxy, nginx), KME_A/KME_B,
SAE_A/SAE_B.

    certs = make_certs(workdir)
    certs["ca"], certs["localhost"] == (pem, key), certs["SAE_A"], ...
"""

import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("QUMAIL_SRC", os.path.abspath(os.path.join(HERE, "..", "..", "..")))
NAMES = ("localhost", "KME_A", "KME_B", "SAE_A", "SAE_B")


def make_certs(workdir):
    """Makes them in WORKDIR/certs; returns {"dir", "ca", NAME: (pem, key)}.
    The localhost pair and the folders are left readable by Postfix's and
    Dovecot's users."""
    out = os.path.join(workdir, "certs")
    subprocess.run(["sh", os.path.join(SRC, "certs", "mkcerts.sh"), "-o", out,
                    "-k", "KME_A", "-k", "KME_B", "-s", "SAE_A", "-s", "SAE_B"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    files = set(os.listdir(out))

    def pick(base):
        for cand in (base, base.lower(), base.replace("_", "-").lower()):
            if cand + ".pem" in files:
                return os.path.join(out, cand + ".pem"), os.path.join(out, cand + ".key")
        raise RuntimeError("mkcerts made no %s.pem in %s: %s" % (base, out, sorted(files)))

    c = {"dir": out, "ca": os.path.join(out, "ca.pem")}
    for base in NAMES:
        c[base] = pick(base)
    for p in c["localhost"]:
        os.chmod(p, 0o644)
    os.chmod(out, 0o755)
    os.chmod(workdir, 0o755)
    return c
