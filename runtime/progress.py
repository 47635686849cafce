"""A dependency-free progress bar on stderr, shown only for work that takes a few seconds."""
import sys
import time


class Progress:
    """progress = Progress(total, label); progress.update(done); progress.close()."""

    def __init__(self, total, label="", enabled=True, delay=2.0, width=30, stream=None):
        self.total, self.label, self.enabled = float(total), label, enabled
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
        self.stream.write(f"\r{self.label} [{bar:<{self.width}}] {100 * frac:5.1f}%  {now - self.start:6.1f}s")
        self.stream.flush()

    def close(self):
        if self.shown:
            self.update(self.total)
            self.last = 0.0
            self.stream.write("\n")
            self.stream.flush()
