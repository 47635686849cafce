"""A dependency-free progress bar on stderr, shown only for work that takes a few seconds."""
import sys
import time


class Progress:
    """progress = Progress(total, label); progress.update(done); progress.close()."""

    def __init__(self, total, label="", enabled=True, delay=2.0, width=30, stream=None, unit=""):
        self.total, self.label, self.enabled, self.unit = float(total), label, enabled, unit
        self.delay, self.width, self.stream = delay, width, stream or sys.stderr
        self.start = time.perf_counter()
        self.last = 0.0
        self.shown = False

    def update(self, done):
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.start < self.delay or now - self.last < 0.2:
            return
        self.last, self.shown = now, True
        frac = min(max(done / self.total, 0.0), 1.0) if self.total > 0 else 1.0
        bar = "#" * int(frac * self.width)
        elapsed = now - self.start
        rate = f"  {done / elapsed:,.0f} {self.unit}/s" if self.unit else ""
        eta = f"  eta {elapsed * (1 - frac) / frac:.0f} s" if 0 < frac < 1 else ""
        self.stream.write(f"\r{self.label} [{bar:<{self.width}}] {100 * frac:5.1f}%{rate}  {elapsed:.1f} s{eta} ")
        self.stream.flush()

    def close(self):
        if self.shown:
            self.update(self.total)
            self.last = 0.0
            self.stream.write("\n")
            self.stream.flush()
