"""torchrun's worker command in the tests: `python forked_sparsehead.py SERVER ARGS` is
`python -m sparsehead ARGS` run as a child of the tests' fork server at SERVER (tests/cli_forkserver.py),
without a new interpreter's seconds of imports. This process stands in for it: torchrun watches it and
signals it (what it receives is passed on), and it ends as the command ended, by the same signal or
with the same exit status."""

from __future__ import annotations

import os
import signal
import sys

from cli_forkserver import launch  # this file's folder is first on the path

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)

if __name__ == "__main__":
    server, args = sys.argv[1], sys.argv[2:]
    command = launch(server, args, dict(os.environ), os.getcwd(), [0, 1, 2])
    for sig in FORWARDED:
        signal.signal(sig, lambda received, _: command.send_signal(received))
    code = command.wait()
    if code < 0:  # killed by a signal: so is this process
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)
