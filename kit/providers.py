"""nameko dependency providers: the request context, the database (with its outbox
relay) and timed RPC."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import amqp.exceptions
import eventlet
from kombu.exceptions import OperationalError
from nameko.amqp.publish import Publisher
from nameko.constants import (
    AMQP_SSL_CONFIG_KEY,
    AMQP_URI_CONFIG_KEY,
    DEFAULT_SERIALIZER,
    LOGIN_METHOD_CONFIG_KEY,
    SERIALIZER_CONFIG_KEY,
)
from nameko.exceptions import UnknownService
from nameko.extensions import DependencyProvider
from nameko.rpc import ReplyListener, Responder, RpcConsumer, RpcProxy, get_rpc_exchange
from nameko.rpc import Rpc as NamekoRpc
from sqlalchemy import MetaData

from kit.config import Settings, read_settings
from kit.context import REQUEST_ID_KEY, Context, current_request_id, current_tenant_id
from kit.db import DatabaseCore, unavailable
from kit.errors import DomainError, ServiceUnavailable, status_for
from kit.messaging import (
    BROKER_ERRORS,
    EventPublisher,
    SafeQueueConsumer,
    publish_committed,
    relay_once,
)
from kit.rpcerrors import for_the_wire

log = logging.getLogger(__name__)

# RPC requests are published without confirms (see ``RpcClient``), so nameko cannot detect an
# unroutable request and warns on every process's first call. That is by design: a
# request to a service that is not running ends as the call's timeout (503).
warnings.filterwarnings(
    "ignore", message="Mandatory delivery was requested", module=r"nameko\.amqp\.publish"
)


def broker_unavailable(exc: BaseException) -> bool:
    """True for "the message broker is unreachable right now": kombu wraps the socket's
    errors as ``OperationalError``; amqp raises its own ``ConnectionError`` (connection
    forced closed, e.g. the broker stopping). The broker's twin of ``kit.db.unavailable``."""
    return isinstance(exc, OperationalError | amqp.exceptions.ConnectionError)


class RequestContext(DependencyProvider):
    """Injects :class:`kit.context.Context`; also primes the log fields for the worker."""

    def get_dependency(self, worker_ctx: Any) -> Context:
        ctx = Context(worker_ctx)
        current_request_id.set(worker_ctx.data.get(REQUEST_ID_KEY))
        actor = ctx.actor
        current_tenant_id.set(actor.tenant_id if actor else None)
        return ctx


class WorkerDb:
    """What a worker sees as ``self.db``: units of work bound to its request context."""

    def __init__(self, core: DatabaseCore, ctx: Context) -> None:
        self.core = core
        self._ctx = ctx

    def unit_of_work(
        self, *, tenant_id: str | None = None, system: bool = False, causation_id: str | None = None
    ) -> Any:
        actor = self._ctx.actor
        return self.core.unit_of_work(
            actor,
            tenant_id=tenant_id,
            request_id=self._ctx.request_id,
            causation_id=causation_id or self._ctx.causation_id,
            system=system,
        )


class Database(DependencyProvider):
    """A service's own schema, with the transactional outbox published after commit
    and relayed on a timer for anything that missed (crash, broker outage)."""

    def __init__(self, service: str, metadata: MetaData) -> None:
        self.service = service
        self.metadata = metadata
        self.core: DatabaseCore | None = None
        self.settings: Settings | None = None

    def setup(self) -> None:
        self.settings = read_settings()
        # One connection per concurrent worker (+ the relay): fewer means overflow
        # connections opened and closed per request, the costliest thing a call can do.
        workers = int(self.container.config.get("max_workers", 10))
        self.core = DatabaseCore(
            self.settings.service_database_url(self.service),
            self.metadata,
            pool_size=workers + 2,
            worker_url=self.settings.worker_database_url(self.service),
        )
        if self.core.outbox is not None:
            self.publisher = EventPublisher(self.settings.amqp_uri)
            core = self.core
            self.core.after_commit.append(
                lambda envelopes: publish_committed(core, self.publisher, envelopes)
            )

    def start(self) -> None:
        if self.core is not None and self.core.outbox is not None:
            self.container.spawn_managed_thread(self._relay_forever)

    def _relay_forever(self) -> None:
        assert self.core is not None and self.settings is not None
        interval = self.settings.outbox_relay_interval
        while True:
            eventlet.sleep(interval)
            try:
                while relay_once(self.core, self.publisher) >= 500:
                    pass
            except Exception as exc:  # noqa: BLE001 - broker/db down: try again next tick
                log.warning("outbox relay round failed: %s", exc)

    def stop(self) -> None:
        if self.core is not None:
            self.core.dispose()

    def get_dependency(self, worker_ctx: Any) -> WorkerDb:
        assert self.core is not None
        return WorkerDb(self.core, Context(worker_ctx))


class _TimedService:
    def __init__(self, proxy: Any, timeout: float, service: str) -> None:
        self._proxy = proxy
        self._timeout = timeout
        self._service = service

    def __getattr__(self, method: str) -> Any:
        method_proxy = getattr(self._proxy, method)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                reply = method_proxy.call_async(*args, **kwargs)
            except UnknownService as exc:
                raise ServiceUnavailable(f"the {self._service} service is not running") from exc
            except (OSError, OperationalError) as exc:  # kombu wraps the socket's errors
                raise ServiceUnavailable("the message broker is unreachable") from exc
            with eventlet.Timeout(self._timeout, False):
                return reply.result()
            raise ServiceUnavailable(f"the {self._service} service did not answer in time")

        return call


class _ReplyListener(ReplyListener):
    queue_consumer = SafeQueueConsumer()


class RpcClient(RpcProxy):
    """RPC with a timeout. The request also expires in the broker after the timeout, so a
    service that comes back late never acts on a call whose caller already gave up."""

    rpc_reply_listener = _ReplyListener()

    def __init__(self, target_service: str, timeout: float | None = None, **options: Any) -> None:
        self._timeout = timeout if timeout is not None else read_settings().rpc_timeout
        options.setdefault("expiration", self._timeout)
        options.setdefault("delivery_mode", TransientPublisher.delivery_mode)
        # No confirm round trip either: a request the broker loses ends as this call's
        # timeout (503), the same answer confirms would have given, only later.
        options.setdefault("use_confirms", False)
        super().__init__(target_service, **options)

    def get_dependency(self, worker_ctx: Any) -> _TimedService:
        return _TimedService(super().get_dependency(worker_ctx), self._timeout, self.target_service)


class TransientPublisher(Publisher):
    """RPC messages are not worth a disk write: a request expires with its caller's
    timeout and a reply is useless once the caller has gone. nameko's default
    (persistent, to durable queues, with confirms) makes RabbitMQ fsync every request
    and every reply before confirming: several milliseconds per hop."""

    delivery_mode = 1


class ReplyPublisher(TransientPublisher):
    """Replies skip publisher confirms too: a lost reply already ends as the caller's
    timeout (503), and waiting for the broker's ack doubled each call's latency."""

    use_confirms = False


class TransientResponder(Responder):
    publisher_cls = ReplyPublisher


class _RpcConsumer(RpcConsumer):
    """Runs each RPC call at most once, and survives the broker going away mid-call.

    A request the broker redelivers was delivered before and never acked: the
    connection died while (or before) a worker ran it, so it may already be applied,
    typically with its reply lost. Running it again would apply a command twice (a
    second comment, a second quote) or answer a first approval with ``409``; instead the
    caller is told ``service_unavailable`` (503), the same answer as for a timeout, and
    decides whether to retry. A reply that cannot be sent because the broker is gone is
    logged, not raised: raised, it killed the whole service.
    """

    queue_consumer = SafeQueueConsumer()

    def handle_message(self, body: Any, message: Any) -> None:
        if message.delivery_info.get("redelivered"):
            log.warning(
                "refusing redelivered RPC %s: it may already have been applied",
                message.delivery_info.get("routing_key"),
            )
            error = DomainError(
                "service_unavailable",
                "The call was interrupted by a broker failure and may or may not have been "
                "applied; read the resource before retrying.",
            )
            self.handle_result(message, None, (DomainError, error, None))
            return
        super().handle_message(body, message)

    def handle_result(self, message: Any, result: Any, exc_info: Any) -> Any:
        try:
            config = self.container.config
            responder = TransientResponder(
                config[AMQP_URI_CONFIG_KEY],
                get_rpc_exchange(config),
                config.get(SERIALIZER_CONFIG_KEY, DEFAULT_SERIALIZER),
                message,
                ssl=config.get(AMQP_SSL_CONFIG_KEY),
                login_method=config.get(LOGIN_METHOD_CONFIG_KEY),
            )
            result, exc_info = responder.send_response(result, exc_info)
            self.queue_consumer.ack_message(message)
            return result, exc_info
        except BROKER_ERRORS as exc:
            log.warning("could not send an RPC reply (broker unreachable): %s", exc)
            self.queue_consumer.ack_message(message)
            return result, exc_info


class _ClientErrorType(type):
    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, DomainError) and status_for(instance.code) < 500


class ClientError(metaclass=_ClientErrorType):
    """``isinstance(exc, ClientError)``: a :class:`DomainError` the caller caused (a 4xx:
    bad input, not found, forbidden...). Not an error of the system: nameko logs the
    entrypoint's ``expected_exceptions`` at warning level instead of "error handling
    worker" at ERROR. ``service_unavailable`` (503) and everything else stay errors."""


class DomainRpc(NamekoRpc):
    """``@rpc`` whose domain errors reach the caller as ``DomainError(code, detail, errors)``.

    nameko rebuilds only exception classes the caller has imported; the gateway must not
    import every service's domain, so every rule broken crosses the wire as the base
    class carrying its stable code. Client errors are expected (see :class:`ClientError`).
    """

    rpc_consumer = _RpcConsumer()

    def __init__(self, expected_exceptions: Any = (), **kwargs: Any) -> None:
        if not isinstance(expected_exceptions, tuple):
            expected_exceptions = (expected_exceptions,)
        super().__init__(expected_exceptions=(ClientError, *expected_exceptions), **kwargs)

    def handle_result(self, message: Any, worker_ctx: Any, result: Any, exc_info: Any) -> Any:
        if exc_info is not None and unavailable(exc_info[1]):
            error = ServiceUnavailable("The database is unreachable; retry shortly.")
            exc_info = (ServiceUnavailable, error, exc_info[2])
        elif exc_info is not None and broker_unavailable(exc_info[1]):
            error = ServiceUnavailable("The message broker is unreachable; retry shortly.")
            exc_info = (ServiceUnavailable, error, exc_info[2])
        if exc_info is not None and isinstance(exc_info[1], DomainError):
            exc_info = (DomainError, for_the_wire(exc_info[1]), exc_info[2])
        return super().handle_result(message, worker_ctx, result, exc_info)


rpc = DomainRpc.decorator
