"""Progress on long work (tqdm bars, shown only once a run has taken DELAY seconds), what stops a
run early (a divergence, an interrupt) and the exception Ctrl-C raises with the partial result."""
from tqdm import tqdm

#: seconds of work before a bar appears: short runs stay silent
DELAY = 2.0
#: a run (integrate) or a seed (simulate) has diverged once its error passes
#: DIVERGED x max(eps_PCA(0), its initial error)
DIVERGED = 10.0


def bar(total, desc, enabled=True, **options):
    """A tqdm bar on stderr for `total` units of work, off when not `enabled`."""
    return tqdm(total=total, desc=desc, disable=not enabled, delay=DELAY, leave=False, dynamic_ncols=True,
                **options)


def divergence_limit(initial_error, pca0):
    """The error past which a run has diverged: DIVERGED x max(eps_PCA(0) = pca0, initial_error)."""
    return DIVERGED * max(float(initial_error), float(pca0))


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C; `.result` holds what it computed until then (status -2)."""

    def __init__(self, message, result):
        super().__init__(message)
        self.result = result
