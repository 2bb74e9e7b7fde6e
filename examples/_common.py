"""What every example shares: timestamped status lines and the claims it checks.

Each example states a claim in its docstring and checks it at the end of its run: every
check prints ``claim holds:`` or ``CLAIM FAILED:`` with the figures, and the script exits
with status 1 when one fails (``tests/test_examples.py`` runs a quick version of each).
"""

import sys
import time


class Report:
    """Status lines with the seconds since the start, and the checked claims."""

    def __init__(self):
        self.start = time.perf_counter()
        self.failed = []

    def say(self, message):
        print(f"[{time.perf_counter() - self.start:5.1f} s] {message}", flush=True)

    def check(self, ok, claim, figures):
        """Prints ``claim`` with ``figures`` as holding or failed; records a failure."""
        ok = bool(ok)
        print(f"{'claim holds' if ok else 'CLAIM FAILED'}: {claim} ({figures})", flush=True)
        if not ok:
            self.failed.append(claim)
        return ok

    def finish(self, results):
        """``results`` with the failed claims added; exits with status 1 from the command
        line when a claim failed."""
        results = dict(results, failed=list(self.failed))
        self.say("all claims hold" if not self.failed else f"{len(self.failed)} claim(s) FAILED")
        return results


def exit_status(results):
    """Exit status for ``if __name__ == "__main__"``: 1 when a claim failed."""
    sys.exit(1 if results["failed"] else 0)
