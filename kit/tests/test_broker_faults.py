"""What the RPC and event consumers do when the broker goes away mid-message."""

from __future__ import annotations

from typing import Any

import pytest

from kit.errors import DomainError
from kit.messaging import SafeQueueConsumer
from kit.providers import _RpcConsumer


class _DeadChannel:
    connection = object()  # still looks alive: the loss is not noticed yet

    def basic_ack(self, *args: Any, **kwargs: Any) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    def basic_reject(self, *args: Any, **kwargs: Any) -> None:
        raise BrokenPipeError(32, "Broken pipe")


class _Message:
    def __init__(self, redelivered: bool = False) -> None:
        self.channel = _DeadChannel()
        self.delivery_info = {"redelivered": redelivered, "routing_key": "quotes.approve"}

    def ack(self) -> None:
        self.channel.basic_ack(1)

    def requeue(self) -> None:
        self.channel.basic_reject(1, requeue=True)


def test_ack_and_requeue_on_a_lost_connection_do_not_raise() -> None:
    consumer = SafeQueueConsumer()
    consumer.ack_message(_Message())
    consumer.requeue_message(_Message())


def test_other_errors_still_raise() -> None:
    class Broken(_Message):
        def ack(self) -> None:
            raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        SafeQueueConsumer().ack_message(Broken())


def test_a_redelivered_call_is_refused_not_run_again() -> None:
    answered: list[Any] = []

    class Probe(_RpcConsumer):
        def handle_result(self, message: Any, result: Any, exc_info: Any) -> Any:
            answered.append(exc_info[1])
            return result, exc_info

        def get_provider_for_method(self, routing_key: str) -> Any:
            raise AssertionError("a redelivered call must not reach its method")

    Probe().handle_message({"args": [], "kwargs": {}}, _Message(redelivered=True))
    [error] = answered
    assert isinstance(error, DomainError) and error.code == "service_unavailable"
