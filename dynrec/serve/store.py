"""The event store: each user's interactions in SQLite, durable once acknowledged.

WAL mode with `synchronous=FULL`: a commit returns only after the log is synced to disk, and `append`
returns only after its commit, so an event the server has acknowledged survives `kill -9` (and a power
cut). Raw item ids are stored as given, known to the bundle or not, so a later bundle with a larger
catalogue can use them. All SQLite work runs in one dedicated thread (one connection), off the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order, which is each user's history order
    user_id TEXT NOT NULL,
    item TEXT NOT NULL,
    ts REAL NOT NULL  -- server time of arrival, seconds since the epoch
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, id);
"""


class EventStore:
    """Appends and reads per-user histories; every method is a coroutine run on the store's own thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dynrec-store")
        self.connection: sqlite3.Connection | None = None

    async def _call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def open(self) -> None:
        await self._call(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.executescript(SCHEMA)
        self.connection = connection

    async def append(self, user_id: str, items: list[str]) -> int:
        """Store the items (oldest first) for user_id in one transaction; returns once committed to disk."""
        return await self._call(self._append, user_id, items)

    def _append(self, user_id: str, items: list[str]) -> int:
        now = time.time()
        with self.connection:  # one transaction: all of the request's events or none
            self.connection.execute("BEGIN")
            self.connection.executemany("INSERT INTO events (user_id, item, ts) VALUES (?, ?, ?)",
                                        [(user_id, item, now) for item in items])
        return len(items)

    async def history(self, user_id: str, limit: int) -> list[str]:
        """The user's most recent `limit` items, oldest first."""
        return await self._call(self._history, user_id, limit)

    def _history(self, user_id: str, limit: int) -> list[str]:
        rows = self.connection.execute("SELECT item FROM events WHERE user_id = ? ORDER BY id DESC LIMIT ?",
                                       (user_id, limit)).fetchall()
        return [item for (item,) in reversed(rows)]

    async def close(self) -> None:
        if self.connection is not None:
            await self._call(self.connection.close)
        self.executor.shutdown(wait=True)
