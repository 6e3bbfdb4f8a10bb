"""A feed's tasks end when cancelled, even around Python 3.11's `asyncio.wait_for`, which drops a
cancellation arriving as its future completes (CPython gh-86296). alpaca-py's receive loop awaits one:
a full test run once hung there with the collector waiting for the feed to stop."""

from __future__ import annotations

import asyncio
import contextlib
import sys

from workbench.data.feeds.base import surely_cancelled


async def _receive_loop(messages: asyncio.Queue[int], received: list[int]) -> None:
    """alpaca-py's `_consume`, in short: wait for a message with a timeout, dispatch it, again."""
    while True:
        with contextlib.suppress(TimeoutError):
            received.append(await asyncio.wait_for(messages.get(), 5))


async def _cancel_as_a_message_lands(wrap: bool) -> tuple[bool, list[int]]:
    """Cancel the loop's task in the same turn of the event loop as a message reaches it; return
    whether the task ended within 2 s, and what it received."""
    messages: asyncio.Queue[int] = asyncio.Queue()
    received: list[int] = []
    loop = _receive_loop(messages, received)
    task = asyncio.ensure_future(surely_cancelled(loop) if wrap else loop)
    await asyncio.sleep(0.01)
    messages.put_nowait(1)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2.0)
    ended = bool(done)
    if not ended:  # the dropped cancellation: cancel again (the queue is empty now), so the test ends
        task.cancel()
        await asyncio.wait({task})
    return ended, received


def test_a_cancellation_that_wait_for_drops_still_ends_the_task() -> None:
    ended, received = asyncio.run(_cancel_as_a_message_lands(wrap=True))
    assert ended and received == [1]  # the message was taken, and the loop still stopped


def test_without_it_the_receive_loop_runs_on() -> None:
    # the defect the wrapper exists for: on 3.11 the plain task swallows the cancellation
    ended, received = asyncio.run(_cancel_as_a_message_lands(wrap=False))
    assert received == [1]
    assert ended is (sys.version_info >= (3, 12))
