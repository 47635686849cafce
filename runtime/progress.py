"""Progress on long work (tqdm bars, shown only once a run has taken DELAY seconds) and the
exception an interrupt (Ctrl-C) raises with the partial result."""
from tqdm import tqdm

#: seconds of work before a bar appears: short runs stay silent
DELAY = 2.0


def bar(total, desc, enabled=True, **options):
    """A tqdm bar on stderr for `total` units of work, off when not `enabled`."""
    return tqdm(total=total, desc=desc, disable=not enabled, delay=DELAY, leave=False, dynamic_ncols=True,
                **options)


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C; `.result` holds what it computed until then (status -2)."""

    def __init__(self, message, result):
        super().__init__(message)
        self.result = result
