"""Micro-batching: requests waiting at the same time share one forward pass.

Requests enter a bounded queue (full: `Overloaded`, which the app answers with 503). One worker takes
the oldest request, then keeps taking more until it holds `max_batch` or `max_wait` has passed since it
took the first; it splits what it holds by key (the mode: one model per mode) and runs each group as one
call. Under load the queue fills while the model runs, so batches grow by themselves; at low load a
request waits at most `max_wait` for company.

Where the call runs: on the event loop (default), which then waits for one forward pass (a few ms), or
with `in_thread` on one model thread, so the loop keeps parsing requests meanwhile. The thread loses here:
torch releases the GIL around every op and a small model is hundreds of small ops, so each op waits for
the loop thread to hand the GIL back (up to the 5 ms switch interval). At 500 requests/s a forward pass
took about 3x longer in the thread and p99 latency was 375 ms against 181 ms (docs/serving.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Overloaded(Exception):
    """The queue is full; the request was not accepted."""


class MicroBatcher(Generic[Item, Result]):
    """Groups concurrent `submit` calls into calls of `run(items) -> results` (same order, same length)."""

    def __init__(
        self,
        run: Callable[[list[Item]], list[Result]],
        key: Callable[[Item], Hashable],
        max_batch: int = 64,
        max_wait_ms: float = 2.0,
        queue_size: int = 1024,
        observe: Callable[[int, float], None] | None = None,
        in_thread: bool = False,
    ) -> None:
        if max_batch < 1 or queue_size < 1 or max_wait_ms < 0:
            raise ValueError(f"need max_batch >= 1, queue_size >= 1, max_wait_ms >= 0; got {max_batch}, "
                             f"{queue_size}, {max_wait_ms}")
        self.run, self.key = run, key
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.queue_size = queue_size
        self.observe = observe  # called with (batch size, seconds) after every model call
        self.queue: asyncio.Queue[tuple[Item, asyncio.Future]] | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dynrec-model") if in_thread else None
        self.worker: asyncio.Task | None = None

    def start(self) -> None:
        """Create the queue and the worker on the running event loop."""
        self.queue = asyncio.Queue(self.queue_size)
        self.worker = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            await asyncio.gather(self.worker, return_exceptions=True)
        if self.executor is not None:
            self.executor.shutdown(wait=True)

    def depth(self) -> int:
        """Requests waiting for the model (not counting the batch it is computing)."""
        return self.queue.qsize() if self.queue is not None else 0

    async def submit(self, item: Item) -> Result:
        """Queue one item and wait for its result; raises Overloaded at once when the queue is full."""
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((item, future))
        except asyncio.QueueFull:
            raise Overloaded(f"{self.queue_size} requests already waiting") from None
        return await future

    async def _collect(self) -> list[tuple[Item, asyncio.Future]]:
        batch = [await self.queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while len(batch) < self.max_batch:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            groups: dict[Hashable, list[tuple[Item, asyncio.Future]]] = {}
            for item, future in batch:
                groups.setdefault(self.key(item), []).append((item, future))
            for group in groups.values():
                tic = time.perf_counter()
                items = [item for item, _ in group]
                try:
                    if self.executor is None:
                        results = self.run(items)
                    else:
                        results = await loop.run_in_executor(self.executor, self.run, items)
                except Exception as error:  # the model failed: every waiting request gets the error
                    for _, future in group:
                        if not future.done():
                            future.set_exception(error)
                    continue
                if self.observe is not None:
                    self.observe(len(group), time.perf_counter() - tic)
                for (_, future), result in zip(group, results, strict=True):
                    if not future.done():  # the client may have gone away
                        future.set_result(result)
