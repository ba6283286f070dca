"""`python -m sparsehead ARGS` (or `python SCRIPT ARGS`) without paying for the imports each time: a fork
server for the tests.

A CLI process spends about 4 s of its life importing torch, torchvision and scikit-learn before it
does a tiny run's second of work, and the suite starts hundreds of them. The server is one fresh
interpreter that imports them once and forks a child per command: each child is a process of its
own (its pid, its exit status, killed by SIGKILL like any other), starts from the same state as
every other child (the same imports done in the same order, so Python's `random` and every module's
state agree between a reference run and a resumed one), and runs `sparsehead.cli.main` with the
command's arguments, environment, folder and output files. What only a new interpreter reads (the
CPU kernel choice, the allocator, the dynamic loader) cannot change in a fork: conftest.run_cli
starts a new interpreter for an environment that sets such a variable.

Protocol, one connection per command over a Unix socket: the client sends one JSON line (args, env,
cwd, stdout and stderr file paths); an intermediate process forks the child, answers with its pid,
waits for it, then answers with its wait status. The server never waits, so commands may overlap.
"""

from __future__ import annotations

import json
import os
import runpy
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

# Variables read only when an interpreter or a library starts: a command that sets one needs a fresh one.
FRESH_ONLY = ("ATEN_", "ONEDNN_", "DNNL_", "MKL_", "KMP_", "GOMP_", "LD_", "CUDA_", "TORCH_", "PYTHONHASHSEED")


def needs_fresh_interpreter(extra_env: dict) -> bool:
    return any(key.startswith(FRESH_ONLY) for key in extra_env)


# --- the server -------------------------------------------------------------------------------------


def _preload() -> None:
    """Everything a CLI command imports, imported once here, before any fork."""
    import sklearn.datasets  # noqa: F401  (the digits)
    import sklearn.model_selection  # noqa: F401

    import sparsehead.cli  # noqa: F401
    import sparsehead.evaluate.runner  # noqa: F401
    import sparsehead.training.loop  # noqa: F401
    import sparsehead.training.resume  # noqa: F401


def _child(request: dict, fds: list[int]) -> None:
    """In the forked child: become `python -m sparsehead ARGS` (stdin, stdout, stderr the client's `fds`)
    and exit as it would."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    for entry in reversed(request["env"].get("PYTHONPATH", "").split(os.pathsep)):
        if entry and entry not in sys.path:
            sys.path.insert(0, entry)
    if request["cwd"]:
        os.chdir(request["cwd"])
    tempfile.tempdir = None  # found again from this command's TMPDIR
    if "OMP_NUM_THREADS" in os.environ:  # read by torch's thread pool, which no fork has started yet
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    if request["script"]:  # python SCRIPT ARGS: its folder first on the path, run as __main__
        sys.argv = [request["script"], *request["args"]]
        sys.path.insert(0, os.path.dirname(os.path.abspath(request["script"])))
        runpy.run_path(request["script"], run_name="__main__")
        sys.exit(0)
    import sparsehead.cli

    main = os.path.join(os.path.dirname(os.path.dirname(sparsehead.cli.__file__)), "__main__.py")
    sys.argv = [main, *request["args"]]
    sys.exit(sparsehead.cli.main(request["args"]))  # argparse's own exits and any traceback as python -m would


def _serve_one(conn: socket.socket, listener: socket.socket) -> None:
    """In the intermediate process: fork the command, answer its pid, wait for it (killing it if the
    client goes away first: a test that timed out, a torchrun worker killed), answer its status."""
    listener.close()
    _, fds, _, _ = socket.recv_fds(conn, 1, 3)
    request = json.loads(conn.makefile("r").readline())
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        conn.close()
        _child(request, fds)
    for fd in fds:
        os.close(fd)
    ended = os.pidfd_open(pid)
    try:
        conn.sendall(f"{pid}\n".encode())
        while ended not in select.select([conn, ended], [], [])[0]:
            if not conn.recv(1):  # the client is gone
                os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        conn.sendall(f"{status}\n".encode())
    except OSError:
        pass
    os._exit(0)


def serve(path: str) -> None:
    _preload()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:
            _serve_one(conn, listener)
        conn.close()
        while True:  # reap the intermediates that are done
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break


# --- the client -------------------------------------------------------------------------------------


class ForkServer:
    """One server per test process, started at its first command, stopped when the process exits."""

    def __init__(self, folder: str, env: dict):
        self.path = os.path.join(folder, "forkserver.sock")
        self.folder = folder
        self.proc = subprocess.Popen(
            [sys.executable, __file__, self.path], env=env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
        )
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the CLI fork server did not start (exit {self.proc.wait()})")
        self.count = 0

    def start(self, args: list[str], env: dict, cwd=None, script: str | None = None) -> "ForkedCommand":
        """`python -m sparsehead ARGS`, or `python SCRIPT ARGS` with `script`, started; its output to files."""
        self.count += 1
        out, err = (os.path.join(self.folder, f"{self.count}.{name}") for name in ("out", "err"))
        fds = [os.open(os.devnull, os.O_RDONLY)] + [
            os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC) for f in (out, err)
        ]
        try:
            return launch(self.path, args, env, cwd, fds, script, outputs=(out, err))
        finally:
            for fd in fds:
                os.close(fd)

    def run(self, args: list[str], env: dict, cwd, timeout: float, script: str | None = None):
        """The command run to its end: a subprocess.CompletedProcess."""
        command = self.start(args, env, cwd, script)
        stdout, stderr = command.communicate(timeout)
        return subprocess.CompletedProcess(command.args, command.returncode, stdout, stderr)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        shutil.rmtree(self.folder, ignore_errors=True)


if __name__ == "__main__":
    serve(sys.argv[1])


def launch(server: str, args: list[str], env: dict, cwd, fds: list[int], script=None, outputs=None):
    """Start a command under the fork server listening at `server`, its stdin, stdout and stderr `fds`."""
    request = {"args": list(args), "script": script, "env": env, "cwd": str(cwd) if cwd else None}
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(server)
    socket.send_fds(conn, [b"F"], fds)
    conn.sendall((json.dumps(request) + "\n").encode())
    return ForkedCommand(args, script, conn, outputs)


class ForkedCommand:
    """A command running under the fork server, used as a subprocess.Popen is (pid, poll, send_signal,
    kill, communicate, returncode)."""

    def __init__(self, args: list[str], script: str | None, conn: socket.socket, outputs=None):
        self.args = [sys.executable, *([script] if script else ["-m", "sparsehead"]), *args]
        self._conn, self._buffer, self._outputs = conn, b"", outputs
        self.pid = int(self._line(None))
        self.returncode = None

    def _line(self, timeout: float | None):
        """The server's next reply line, or None if none came within `timeout` s (None: wait)."""
        while b"\n" not in self._buffer:
            if not select.select([self._conn], [], [], timeout)[0]:
                return None
            chunk = self._conn.recv(64)
            if not chunk:
                raise RuntimeError("the CLI fork server closed the connection without a status")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def poll(self, timeout: float | None = 0.0):
        if self.returncode is None:
            line = self._line(timeout)
            if line is None:
                return None
            status = int(line)
            self.returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            self._conn.close()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.poll(timeout) is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Wait for the end (SIGKILL and TimeoutExpired after `timeout` s); its stdout and stderr."""
        if self.poll(timeout) is None:
            self.kill()
            self.poll(None)
            raise subprocess.TimeoutExpired(self.args, timeout)
        if self._outputs is None:  # the output went to the caller's own stdout and stderr
            return "", ""
        with open(self._outputs[0]) as o, open(self._outputs[1]) as e:
            return o.read(), e.read()
