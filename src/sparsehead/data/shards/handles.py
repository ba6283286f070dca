"""Open shard files kept per process: a record is read through a handle opened once, never by an
open per record. A DataLoader worker (a forked child) opens its own: the handles are tied to the
process that opened them, and at most LIMIT stay open (the least recently used closed first)."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Callable, Generic, TypeVar

T = TypeVar("T")
LIMIT = 256  # open shard files a process keeps (far below the usual 1024 open files a process may hold)


class OpenFiles(Generic[T]):
    def __init__(self, open_file: Callable[[int], T], close: Callable[[T], None], limit: int = LIMIT):
        self.open_file, self.close, self.limit = open_file, close, limit
        self.pid, self.held = os.getpid(), OrderedDict()
        self.lock = threading.Lock()  # the decoding threads of a memory load share the handles

    def get(self, shard: int) -> T:
        with self.lock:
            if self.pid != os.getpid():  # a forked worker: its parent's handles are not its own to share
                self.pid, self.held = os.getpid(), OrderedDict()
            handle = self.held.get(shard)
            if handle is None:
                handle = self.held[shard] = self.open_file(shard)
                if len(self.held) > self.limit:
                    self.close(self.held.popitem(last=False)[1])
            self.held.move_to_end(shard)
            return handle
