"""The decoded-bytes gate of one batch: room for decodes, in row order, never over budget.

A row reserves room for its worst case (its decoded-output cap) before its decode
starts, and settles to what it really holds once decoded; the room comes back when the
row is handed back to the caller. Rows are handed back in order, so room could be held
by later rows while an earlier one waits for it. The gate keeps that from deadlocking:

- the row whose turn it is (the lowest one not yet admitted) is admitted as soon as its
  cap fits;
- a later row is admitted early only if, after it, the room left still fits the largest
  cap any earlier waiting row may need.

So the rows admitted out of turn never hold more than the budget less that cap: once
the rows before the turn are decoded and handed back, the turn row's cap fits.

Pure accounting on one event loop; no I/O.
"""

from __future__ import annotations

import asyncio

__all__ = ["DecodeGate"]


class DecodeGate:
    """Admission of rows ``0..n-1`` to decoding under ``limit`` bytes (see the module)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: Bytes reserved by decodes running, plus bytes held by rows not handed back.
        self.used = 0
        #: The most ``used`` has been.
        self.peak = 0
        self._turn = 0
        self._passed: set[int] = set()
        #: The largest cap each row not yet passed may need (known before its fetch).
        self._upper: dict[int, int] = {}
        self._changed = asyncio.Condition()
        #: Rows waiting for room (not for their turn).
        self.starved = 0

    def expect(self, index: int, upper: int) -> None:
        """Say that row ``index`` may need up to ``upper`` bytes."""
        self._upper[index] = min(upper, self.limit)

    def _earlier_need(self, index: int) -> int:
        return max(
            (need for row, need in self._upper.items() if row < index and row not in self._passed),
            default=0,
        )

    def _fits(self, index: int, cap: int) -> bool:
        room = self.limit - self.used
        if index == self._turn:
            return cap <= room
        return cap + self._earlier_need(index) <= room

    def _pass(self, index: int) -> None:
        self._passed.add(index)
        self._upper.pop(index, None)
        while self._turn in self._passed:
            self._passed.discard(self._turn)
            self._turn += 1

    async def admit(self, index: int, cap: int) -> None:
        """Wait until row ``index`` may decode with up to ``cap`` bytes, and reserve them."""
        cap = min(cap, self.limit)
        async with self._changed:
            waiting = False
            try:
                while not self._fits(index, cap):
                    if not waiting:
                        waiting = True
                        self.starved += 1
                        self._changed.notify_all()
                    await self._changed.wait()
            finally:
                if waiting:
                    self.starved -= 1
            self.used += cap
            self.peak = max(self.peak, self.used)
            self._pass(index)
            self._changed.notify_all()

    async def admit_again(self, cap: int, timeout: float) -> bool:
        """Reserve ``cap`` more bytes for a row already admitted (its first reservation
        was too small), waiting at most ``timeout`` seconds for the room; whether it got
        it. Out of turn and bounded in time, so it can delay other rows but not stall them.
        """
        cap = min(cap, self.limit)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        async with self._changed:
            while self.used + cap > self.limit:
                left = end - loop.time()
                if left <= 0:
                    return False
                self.starved += 1
                self._changed.notify_all()
                try:
                    await asyncio.wait_for(self._changed.wait(), left)
                except asyncio.TimeoutError:
                    return False
                finally:
                    self.starved -= 1
            self.used += cap
            self.peak = max(self.peak, self.used)
            self._changed.notify_all()
            return True

    async def skip(self, index: int) -> None:
        """Row ``index`` needs no decode (it failed before one, or its index is done)."""
        async with self._changed:
            self._pass(index)
            self._changed.notify_all()

    async def settle(self, reserved: int, held: int) -> None:
        """A decode that reserved ``reserved`` now holds ``held`` bytes (0: it failed)."""
        async with self._changed:
            self.used -= max(0, reserved - held)
            self._changed.notify_all()

    async def hand_back(self, held: int) -> None:
        """Rows holding ``held`` bytes went to the caller."""
        async with self._changed:
            self.used -= held
            self._changed.notify_all()

    async def wait_for_change(self) -> None:
        """Wait until anything above happens."""
        async with self._changed:
            await self._changed.wait()
