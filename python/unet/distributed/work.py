"""A collective in flight: polled against a deadline so a dead or stuck rank cannot hang the others."""
from __future__ import annotations

import time


class DistributedError(RuntimeError):
    """A collective failed, or could not finish because another rank failed."""


class DistributedTimeoutError(DistributedError, TimeoutError):
    """A collective did not complete within the process group's timeout."""


class Work:
    """Handle of a non-blocking collective (torch's ``Work``): ``wait()`` / ``is_completed()``.

    ``test()`` asks the backend whether the operation finished; the functions added with
    ``then`` run once it has (copy a staging buffer back, divide a sum into an average).
    """

    def __init__(self, backend, name: str, test, seq: int | None = None):
        self.backend, self.name, self._test = backend, name, test
        self.seq = backend.next_sequence_number() if seq is None else seq
        self._started = time.monotonic()
        self._finishers = []
        self._done = False
        self._log = getattr(backend, "collective_log", None)
        self._note("waiting in")

    def then(self, finisher):
        self._finishers.append(finisher)
        return self

    def is_completed(self) -> bool:
        if not self._done and self._test():
            self._done = True
            self._note("past")
            for finish in self._finishers:
                finish()
        return self._done

    def _note(self, where):
        if self._log is not None:
            self._log.note(f"{where} {self.name} (collective #{self.seq})")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until done; past the deadline raise DistributedTimeoutError naming the ranks that
        do not answer (the backend finds them)."""
        limit = self.backend.timeout if timeout is None else timeout
        polls = 0
        while not self.is_completed():
            if time.monotonic() - self._started > limit:
                raise DistributedTimeoutError(self.backend.diagnose(self, limit))
            self.backend.serve_while_waiting(self)
            polls += 1
            if polls > 100:  # spin briefly for latency, then yield the core to the other ranks
                time.sleep(min(2e-4, 1e-6 * (polls - 100)))
        return True
