"""A blocking face of the async client, for code that is not async (the builder, eval).

:class:`SyncLLM` runs one event loop on a daemon thread for its whole life, so the
backend's connection pool (bound to a loop) is reused by every call; ``*_many`` calls
keep at most ``concurrency`` requests in flight and return results in input order.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel

from cultureclip.core.llm.ask import Outcome, ask
from cultureclip.core.llm.base import LLMBackend, LLMError, Message, create_llm
from cultureclip.core.llm.settings import LLMSettings

T = TypeVar("T")


class SyncLLM:
    """One chat model, called from ordinary (threaded) code."""

    def __init__(self, settings: LLMSettings) -> None:
        self.settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.backend: LLMBackend = self.run(self._create())

    async def _create(self) -> LLMBackend:
        return create_llm(self.settings)

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    @property
    def concurrency(self) -> int:
        return self.settings.concurrency

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def complete(self, messages: Sequence[Message], **params: Any) -> str:
        """One reply; raises :class:`LLMError` when the backend gives up."""
        return self.run(self.backend.complete(list(messages), **params))

    def complete_many(
        self, conversations: Sequence[Sequence[Message]], **params: Any
    ) -> list[str | LLMError]:
        """Replies in input order; a request that failed for good is its LLMError."""

        async def one(messages: Sequence[Message]) -> str | LLMError:
            try:
                return await self.backend.complete(list(messages), **params)
            except LLMError as exc:
                return exc

        return self.run(self._bounded([one(c) for c in conversations]))

    def ask_many(
        self, conversations: Sequence[Sequence[Message]], schema: type[BaseModel], **params: Any
    ) -> list[Outcome[Any]]:
        """:func:`ask` for each conversation (parsed, checked, re-asked with the error)."""
        return self.run(
            self._bounded(
                [
                    ask(self.backend, None, {}, schema, messages=list(c), **params)
                    for c in conversations
                ]
            )
        )

    async def _bounded(self, coroutines: list[Coroutine[Any, Any, T]]) -> list[T]:
        slots = asyncio.Semaphore(self.settings.concurrency)

        async def limited(coroutine: Coroutine[Any, Any, T]) -> T:
            async with slots:
                return await coroutine

        return list(await asyncio.gather(*(limited(c) for c in coroutines)))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self.run(self.backend.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncLLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
