"""The fault-injection points the tests use to kill a run where pre-emption or the OOM killer would."""

from __future__ import annotations

import os
import signal

KILL_ENV = "SPARSEHEAD_TEST_SIGKILL"  # "step:K" or "checkpoint:K", for tests only


def sigkill_point(where: str, step: int) -> None:
    """Tests only: SIGKILL this process at a named point, as pre-emption or the OOM killer would.

    "step:K" fires after step K (and its checkpoint, if any); "checkpoint:K" fires halfway through
    writing checkpoint K, after its bytes are written and before it is renamed into place.
    """
    if os.environ.get(KILL_ENV) == f"{where}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)
