"""Named checks for the end-to-end scripts (one process, one list each).

    from checks import check, failures
    check(reply == 250, "message accepted", detail=log_tail)
    ...
    return summary("imap oracle")      # the exit status: 1 if any failed

check() prints `ok   WHAT` or `FAIL WHAT` (and the last 4000 characters of
`detail` when it failed), remembers the outcome and returns it as a bool.
"""

failures = []   # what failed, in order
passes = []     # what held


def check(cond, what, detail=""):
    ok = bool(cond)
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    (passes if ok else failures).append(what)
    if not ok and detail:
        print(str(detail)[-4000:], flush=True)
    return ok


def counts():
    """`N passed, M failed` (test_package.py reads it back from its inner run)."""
    return "%d passed, %d failed" % (len(passes), len(failures))


def summary(name):
    """Prints `NAME: every check passed` or `NAME: FAILED: what; what` and
    returns the exit status."""
    print("%s: %s" % (name, "FAILED: " + "; ".join(failures) if failures
                      else "every check passed"), flush=True)
    return 1 if failures else 0
