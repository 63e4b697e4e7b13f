"""The EventBus port in memory for service tests: keeps every message and lets a test await one."""

from __future__ import annotations

import asyncio
from typing import Any

from serve_app.domain.ports import BusMessage


class RecordingBus:
    """Keeps published messages in order; `wait_for` waits on a condition, never a sleep."""

    def __init__(self) -> None:
        self.messages: list[BusMessage] = []
        self._changed = asyncio.Condition()

    async def publish(self, message: BusMessage) -> None:
        async with self._changed:
            self.messages.append(message)
            self._changed.notify_all()

    def events(self, prefix: str = "") -> list[str]:
        return [message.event for message in self.messages if message.event.startswith(prefix)]

    def of(self, event: str) -> list[dict[str, Any]]:
        return [message.data for message in self.messages if message.event == event]

    async def wait_for(self, event: str, timeout: float = 20.0, **data: Any) -> BusMessage:
        """The first message of `event` whose data includes `data`, waiting up to `timeout` seconds."""

        def found() -> BusMessage | None:
            for message in self.messages:
                if message.event == event and all(message.data.get(key) == value for key, value in data.items()):
                    return message
            return None

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: found() is not None)
        message = found()
        assert message is not None
        return message
