"""Progress of a run: a tqdm bar on a terminal, plain lines elsewhere, nothing with --noprogress."""

import sys
import time

from tqdm import tqdm


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


_SHORT = {"accuracy": "acc"}


class RunProgress:
    def __init__(self, enabled: bool, description: str, start: int, total: int, stream=None):
        self.enabled, self.description, self.total = enabled, description, total
        self.stream = stream or sys.stderr
        self.start_iteration, self.started = start, time.time()
        self.bar = None
        if enabled and hasattr(self.stream, "isatty") and self.stream.isatty():
            self.bar = tqdm(total=total, initial=start, desc=description, unit="it", file=self.stream,
                            dynamic_ncols=True, leave=False)

    def update(self, iteration: int, metrics: dict, evaluated: bool):
        """Shows the running training metrics ({'loss', 'accuracy'}, or a task's own, e.g. 'return')."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(iteration - self.bar.n)
            self.bar.set_postfix({_SHORT.get(k, k): f"{v:.4f}" for k, v in metrics.items()}, refresh=False)
        elif evaluated:
            done = iteration - self.start_iteration
            rate = done / max(time.time() - self.started, 1e-9)
            eta = (self.total - iteration) / rate if rate > 0 else 0
            shown = " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            print(f"{self.description} iteration {iteration}/{self.total} {shown} ETA {_duration(eta)}",
                  file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def announce(enabled: bool, text: str, stream=None):
    if enabled:
        print(text, file=stream or sys.stdout, flush=True)
