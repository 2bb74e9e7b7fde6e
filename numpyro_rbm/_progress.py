"""fit's progress report: a tqdm bar on a terminal, sparse plain lines in logs.

tqdm redraws its bar with a carriage return at every refresh; written to a file, each redraw
is a line of its own (a 100-epoch ``numpyro-rbm train`` left 30 KB of them). On a terminal the
bar is shown as usual; when stderr is a file or a pipe the report is a plain line at the
first evaluation, then at most every :data:`LOG_EVERY_S` seconds, then at the end.
"""

from __future__ import annotations

import sys
import time

from .diagnostics import MONITOR_SWEEPS

#: Seconds between two plain progress lines when stderr is not a terminal.
LOG_EVERY_S = 10.0

# Labels of the metrics in fit's progress report (the history keeps the metric names).
_PROGRESS_LABELS = {
    "reconstruction_error": "recon",
    "pseudo_log_likelihood": "pseudo-LL",
    "train_log_likelihood": "train LL",
    "test_log_likelihood": "test LL",
    "chain_rhat": f"R-hat({MONITOR_SWEEPS} sweeps)",
}


class Progress:
    """A progress report on stderr: a tqdm bar with the latest metrics on a terminal.
    Elsewhere (a log file, a pipe, CI) a bar would write a whole line at every refresh, so
    instead plain lines: at the first evaluation, then at most one every ``log_every_s``
    seconds, and at the end."""

    def __init__(self, name, total, initial=0, log_every_s=LOG_EVERY_S, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.name, self.total, self.done = name, total, initial
        self.log_every_s, self.postfix, self.bar = log_every_s, {}, None
        self.started = self.last_line = None
        self.logged = initial  # the epoch the last plain line reported
        isatty = getattr(self.stream, "isatty", None)
        self.terminal = bool(isatty is not None and isatty())

    def say(self, text):
        """A line of its own (above the bar on a terminal)."""
        if self.bar is not None:
            self.bar.write(f"{self.name}: {text}", file=self.stream)
        else:
            print(f"{self.name}: {text}", file=self.stream, flush=True)

    def resume_at(self, done):
        """Counts from ``done`` finished steps (a resumed run), before :meth:`start`."""
        self.done = self.logged = done

    def start(self, note=""):
        """Starts the bar (or the plain lines), after a line that says what comes."""
        self.say(f"epochs {self.done + 1}-{self.total}{note}")
        self.started = time.perf_counter()
        if self.terminal:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=self.total, initial=self.done, desc=self.name, unit="epoch",
                file=self.stream,
            )  # fmt: skip

    def metrics(self, metrics):
        self.postfix = {
            _PROGRESS_LABELS.get(name, name): f"{value:.4g}"
            for name, value in metrics.items()
            if name != "epoch" and isinstance(value, float)
        }
        if self.bar is not None:
            self.bar.set_postfix(self.postfix, refresh=False)

    def update(self, n):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        first = self.last_line is None and self.postfix
        if first or now - (self.last_line or self.started) >= self.log_every_s:
            self._line(now)

    def _line(self, now):
        metrics = ", ".join(f"{k} {v}" for k, v in self.postfix.items())
        head = f"epoch {self.done}/{self.total} ({now - self.started:.0f} s)"
        self.say(head + (f": {metrics}" if metrics else ""))
        self.last_line, self.logged = now, self.done

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.started is not None and self.done != self.logged:
            self._line(time.perf_counter())
