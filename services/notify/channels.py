"""Notification adapters: template rendering, SMTP email and SMS senders.

Everything that touches templates, sockets or files for the notify service lives
here; the delivery rules themselves are in :mod:`services.notify.domain`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import smtplib
import ssl
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path
from typing import Any, Protocol

import jinja2
import requests

from services.notify.attachments import AttachmentRef, check_size
from services.notify.domain import Recipient, record_link
from services.notify.sandbox import SandboxProcess, TemplateLimitError, shared_sandbox

log = logging.getLogger(__name__)

EVENT_ID_HEADER = "X-Portico-Event-Id"
DELIVERY_KEY_HEADER = "X-Portico-Delivery-Key"

PARTS: tuple[str, ...] = ("subject", "text", "html", "sms")
"""Parts of a message a tenant may override."""
PART_SUFFIXES: Mapping[str, str] = {
    "subject": "email.subject.j2",
    "text": "email.txt.j2",
    "html": "email.html.j2",
    "sms": "sms.j2",
    "in_app": "in_app.j2",  # the body of an in-app item (its title is the subject)
}
PARTS_BY_CHANNEL: Mapping[str, tuple[str, ...]] = {
    "email": ("subject", "text", "html"),
    "sms": ("sms",),
    "in_app": ("subject", "in_app"),
}
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
IN_APP_MAX_CHARS = 500
DEFAULT_TEMPLATE = "default"
SMS_MAX_CHARS = 320
SUBJECT_MAX_CHARS = 200

OverrideLookup = Callable[[str, str, str], str | None]
"""``(tenant_id, event_type, part) -> template source | None``."""


# --------------------------------------------------------------------------- errors


class DeliveryError(Exception):
    """A message could not be handed over. ``transient`` errors are worth retrying."""

    def __init__(self, transient: bool, detail: str, *, code: int | None = None) -> None:
        super().__init__(detail)
        self.transient = transient
        self.detail = detail
        self.code = code

    def __repr__(self) -> str:
        return f"DeliveryError(transient={self.transient!r}, detail={self.detail!r})"


# ------------------------------------------------------------------------ rendering


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    subject: str
    text: str
    html: str
    sms: str
    in_app: str = ""
    # What went wrong with the tenant's overrides (each replaced by the built-in template).
    problems: tuple[str, ...] = ()


_WHITESPACE = re.compile(r"\s+")


def _one_line(value: str, limit: int) -> str:
    flat = _WHITESPACE.sub(" ", value).strip()
    if len(flat) > limit:
        flat = flat[: limit - 1].rstrip() + "…"
    return flat


def _tidy_text(value: str) -> str:
    lines = [line.rstrip() for line in value.strip("\n").splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    return text + "\n"


def portal_url_for(portal_base: str, data: Mapping[str, Any], event_type: str = "") -> str:
    """Link to the record the event is about (or the sign-in link it carries)."""
    return record_link(portal_base, event_type, data)


def _readable_time(value: Any) -> str:
    """An ISO timestamp as ``2026-01-02 03:04 UTC`` for people; anything else as is."""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value or "")
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


class Renderer:
    """Renders the parts of a message for an event and recipient.

    Lookup order for each part: the tenant's override for the event type, the
    ``<event_type>.<part>`` file, the tenant's ``default`` override, the
    ``default.<part>`` file. Tenant overrides run in a sandboxed worker process with
    limits on time, memory and output size (:mod:`services.notify.sandbox`); one that
    fails or breaks a limit is logged, reported in ``RenderedMessage.problems`` and
    skipped, so a broken override never stops delivery. ``strict=True`` makes file
    templates fail on undefined variables (used by tests).
    """

    def __init__(
        self,
        template_dir: str | os.PathLike[str] = TEMPLATE_DIR,
        overrides: OverrideLookup | None = None,
        *,
        strict: bool = False,
        sandbox: SandboxProcess | None = None,
    ) -> None:
        self.template_dir = Path(template_dir)
        self._overrides = overrides
        self._sandbox = sandbox
        self._files = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(self.template_dir)),
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html.j2",), default_for_string=False, default=False
            ),
            undefined=jinja2.StrictUndefined if strict else jinja2.Undefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def with_overrides(self, overrides: OverrideLookup | None) -> Renderer:
        """A renderer that looks tenant overrides up in ``overrides`` instead.

        It shares this renderer's file templates and sandbox, so binding the
        overrides loaded for one tenant is cheap.
        """
        bound = copy.copy(self)
        bound._overrides = overrides
        return bound

    @property
    def sandbox(self) -> SandboxProcess:
        if self._sandbox is None:
            self._sandbox = shared_sandbox()
        return self._sandbox

    # -- context ---------------------------------------------------------------------

    @staticmethod
    def context(
        event: Mapping[str, Any],
        recipient: Recipient | Mapping[str, Any],
        *,
        tenant_name: str,
        portal_base: str,
    ) -> dict[str, Any]:
        """Everything a template sees; plain JSON, so it can be stored and rendered later."""
        data = dict(event.get("data") or {})
        if isinstance(recipient, Recipient):
            who: dict[str, Any] = {
                "name": recipient.name,
                "kind": recipient.kind,
                "id": recipient.id,
            }
        else:
            who = {
                "name": recipient.get("name", ""),
                "kind": recipient.get("kind", "contact"),
                "id": str(recipient.get("id", "")),
            }
        return {
            "event": dict(event),
            "data": data,
            "recipient": who,
            "tenant_name": tenant_name,
            "portal_url": portal_url_for(portal_base, data, str(event.get("type") or "")),
            "expires_at": _readable_time(data.get("expires_at")),
        }

    # -- rendering -------------------------------------------------------------------

    def render(
        self,
        event: Mapping[str, Any],
        recipient: Recipient | Mapping[str, Any],
        *,
        tenant_name: str,
        portal_base: str,
        parts: Iterable[str] = PARTS,
    ) -> RenderedMessage:
        ctx = self.context(event, recipient, tenant_name=tenant_name, portal_base=portal_base)
        return self.render_context(ctx, parts)

    def render_context(
        self, ctx: Mapping[str, Any], parts: Iterable[str] = PARTS
    ) -> RenderedMessage:
        """Render ``parts`` (others stay empty) from a context made by :meth:`context`."""
        problems: list[str] = []
        event = ctx.get("event") or {}
        raw = {part: self.render_part(part, event, ctx, problems) for part in parts}
        return RenderedMessage(
            subject=_one_line(raw.get("subject", ""), SUBJECT_MAX_CHARS),
            text=_tidy_text(raw["text"]) if "text" in raw else "",
            html=raw["html"].strip() + "\n" if "html" in raw else "",
            sms=_one_line(raw.get("sms", ""), SMS_MAX_CHARS),
            in_app=_one_line(raw.get("in_app", ""), IN_APP_MAX_CHARS),
            problems=tuple(problems),
        )

    def render_part(
        self,
        part: str,
        event: Mapping[str, Any],
        ctx: Mapping[str, Any],
        problems: list[str] | None = None,
    ) -> str:
        """Render one part without post-processing; override failures go to ``problems``."""
        if part not in PART_SUFFIXES:
            raise ValueError(f"unknown part {part!r}")
        event_type = str(event.get("type") or DEFAULT_TEMPLATE)
        tenant_id = str(event.get("tenant_id") or "")
        for name in (event_type, DEFAULT_TEMPLATE):
            rendered = self._render_override(tenant_id, name, part, ctx, problems)
            if rendered is not None:
                return rendered
            template = self._file_template(name, part)
            if template is not None:
                return template.render(ctx)
        raise jinja2.TemplateNotFound(f"{DEFAULT_TEMPLATE}.{PART_SUFFIXES[part]}")

    def _file_template(self, name: str, part: str) -> jinja2.Template | None:
        try:
            return self._files.get_template(f"{name}.{PART_SUFFIXES[part]}")
        except jinja2.TemplateNotFound:
            return None

    def _render_override(
        self,
        tenant_id: str,
        name: str,
        part: str,
        ctx: Mapping[str, Any],
        problems: list[str] | None,
    ) -> str | None:
        if self._overrides is None or not tenant_id or part not in PARTS:
            return None
        source = self._overrides(tenant_id, name, part)
        if not source or not source.strip():
            return None
        try:
            rendered = self.sandbox.render(source, part == "html", dict(ctx))
        except TemplateLimitError as exc:  # tenant-authored: never let it break delivery
            problem = f"template override {name}/{part} failed ({exc}); built-in template used"
            log.warning("tenant %s: %s", tenant_id, problem)
            if problems is not None:
                problems.append(problem)
            return None
        if not rendered.strip():
            return None
        return rendered


# ---------------------------------------------------------------------------- email

_RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    }
)
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # printable ASCII except ':' and space


def _no_newlines(value: str, what: str) -> None:
    if "\r" in value or "\n" in value:
        raise ValueError(f"{what} must not contain line breaks")


@dataclass(frozen=True, slots=True)
class MailAttachment:
    """A file sent as a MIME part: its reference (name, type) and its bytes."""

    ref: AttachmentRef
    data: bytes


@dataclass(frozen=True, slots=True)
class EmailMessageSpec:
    """What to send: envelope recipients, content, extra headers and files."""

    to: list[str]
    subject: str
    text: str
    html: str
    headers: dict[str, str] = field(default_factory=dict)
    attachments: tuple[MailAttachment, ...] = ()

    def __post_init__(self) -> None:
        if not self.to:
            raise ValueError("an email needs at least one recipient")
        for address in self.to:
            _no_newlines(address, "recipient address")
            if "@" not in parseaddr(address)[1]:
                raise ValueError(f"invalid recipient address {address!r}")
        for name, value in self.headers.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"invalid header name {name!r}")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by the sender")
            _no_newlines(str(value), f"header {name}")
        check_size(len(item.data) for item in self.attachments)


class SmtpSender:
    """Sends multipart/alternative (text + html) email over SMTP, inside multipart/mixed
    when files are attached."""

    def __init__(
        self,
        host: str,
        port: int,
        from_addr: str,
        timeout: float = 10,
        starttls: bool = False,
        username: str | None = None,
        password: str | None = None,
        *,
        local_hostname: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        _no_newlines(from_addr, "from address")
        envelope_from = parseaddr(from_addr)[1]
        if "@" not in envelope_from:
            raise ValueError(f"invalid from address {from_addr!r}")
        self.host = host
        self.port = port
        self.from_addr = from_addr
        self.envelope_from = envelope_from
        self.timeout = timeout
        self.starttls = starttls
        self.username = username
        self.password = password
        self.local_hostname = local_hostname
        self._ssl_context = ssl_context
        self._msgid_domain = envelope_from.rsplit("@", 1)[1]

    def build_message(self, spec: EmailMessageSpec) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.from_addr
        msg["To"] = ", ".join(spec.to)
        msg["Subject"] = _one_line(spec.subject, 998)
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = make_msgid(domain=self._msgid_domain)
        for name, value in spec.headers.items():
            msg[name] = str(value)
        msg.set_content(spec.text)
        msg.add_alternative(spec.html, subtype="html")
        # The first attachment turns the message into multipart/mixed with the
        # text/html alternative as its first part.
        for item in spec.attachments:
            msg.add_attachment(
                item.data,
                maintype=item.ref.maintype,
                subtype=item.ref.subtype,
                filename=item.ref.filename,
            )
        return msg

    def send(
        self,
        to: Sequence[str],
        subject: str,
        text: str,
        html: str,
        headers: Mapping[str, str] | None = None,
        attachments: Sequence[MailAttachment] = (),
    ) -> str:
        """Send and return the Message-ID set on the message."""
        spec = EmailMessageSpec(
            to=list(to),
            subject=subject,
            text=text,
            html=html,
            headers=dict(headers or {}),
            attachments=tuple(attachments),
        )
        return self.send_spec(spec)

    def send_spec(self, spec: EmailMessageSpec) -> str:
        msg = self.build_message(spec)
        message_id = str(msg["Message-ID"])
        try:
            with smtplib.SMTP(
                self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout
            ) as smtp:
                smtp.ehlo()
                if self.starttls:
                    smtp.starttls(context=self._ssl_context or ssl.create_default_context())
                    smtp.ehlo()
                if self.username:
                    smtp.login(self.username, self.password or "")
                refused = smtp.send_message(msg, from_addr=self.envelope_from, to_addrs=spec.to)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = {addr: code for addr, (code, _reply) in exc.recipients.items()}
            transient = any(400 <= code < 500 for code in codes.values())
            detail = "recipients refused: " + ", ".join(
                f"{addr} ({code})" for addr, code in sorted(codes.items())
            )
            raise DeliveryError(transient, detail, code=max(codes.values(), default=None)) from exc
        except smtplib.SMTPResponseException as exc:
            raw_reply = exc.smtp_error
            reply = (
                raw_reply.decode("utf-8", "replace")
                if isinstance(raw_reply, bytes)
                else str(raw_reply or "")
            )
            transient = not 500 <= exc.smtp_code < 600
            raise DeliveryError(
                transient, f"SMTP {exc.smtp_code} {reply}".strip(), code=exc.smtp_code
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryError(False, f"SMTP server does not support: {exc}") from exc
        except OSError as exc:  # connection refused/reset, timeouts, TLS, disconnects
            raise DeliveryError(
                True, f"SMTP {self.host}:{self.port} unavailable: {type(exc).__name__}: {exc}"
            ) from exc
        if refused:
            log.warning("%s: some recipients refused: %s", message_id, ", ".join(sorted(refused)))
        return message_id


# ------------------------------------------------------------------------------ sms


class SmsSender(Protocol):
    def send(self, to: str, body: str, headers: Mapping[str, str] | None = None) -> str:
        """Hand the message over; return the provider's (or a generated) message id."""
        ...


def _reference(headers: Mapping[str, str]) -> str:
    return headers.get(DELIVERY_KEY_HEADER) or headers.get(EVENT_ID_HEADER) or uuid.uuid4().hex


def _check_sms(to: str, body: str) -> None:
    if not to.strip():
        raise ValueError("an SMS needs a phone number")
    if not body.strip():
        raise ValueError("an SMS needs a body")


class HttpSmsSender:
    """Posts ``{"to", "body", "reference"}`` as JSON to an SMS gateway with a bearer token."""

    _TRANSIENT_4XX = frozenset({408, 425, 429})

    def __init__(
        self,
        url: str,
        token: str,
        timeout: float = 10,
        session: requests.Session | None = None,
    ) -> None:
        if not url:
            raise ValueError("SMS gateway url is required")
        self.url = url
        self.token = token
        self.timeout = timeout
        self.session = session or requests.Session()

    def send(self, to: str, body: str, headers: Mapping[str, str] | None = None) -> str:
        _check_sms(to, body)
        extra = dict(headers or {})
        reference = _reference(extra)
        http_headers = {
            name: str(value) for name, value in extra.items() if name.startswith("X-Portico-")
        }
        http_headers.update(
            {
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/json",
                "Idempotency-Key": reference,
            }
        )
        try:
            response = self.session.post(
                self.url,
                json={"to": to, "body": body, "reference": reference},
                headers=http_headers,
                timeout=self.timeout,
            )
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema,
        ) as exc:
            raise DeliveryError(False, f"SMS gateway url is invalid: {exc}") from exc
        except requests.RequestException as exc:  # timeouts, connection errors
            raise DeliveryError(True, f"SMS gateway unavailable: {type(exc).__name__}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return self._message_id(response, reference)
        detail = f"SMS gateway answered {status}: {response.text[:200]}".strip()
        transient = status >= 500 or status in self._TRANSIENT_4XX
        raise DeliveryError(transient, detail, code=status)

    @staticmethod
    def _message_id(response: requests.Response, reference: str) -> str:
        try:
            payload = response.json()
        except ValueError:
            return reference
        if isinstance(payload, dict):
            for key in ("id", "message_id", "sid"):
                if payload.get(key):
                    return str(payload[key])
        return reference


class FileSmsSender:
    """Development sender: appends one JSON line per message to ``<directory>/sms.log``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.path = self.directory / "sms.log"
        self._lock = threading.Lock()

    def send(self, to: str, body: str, headers: Mapping[str, str] | None = None) -> str:
        _check_sms(to, body)
        extra = {name: str(value) for name, value in (headers or {}).items()}
        message_id = f"file-{uuid.uuid4().hex}"
        record = {
            "id": message_id,
            "to": to,
            "body": body,
            "reference": _reference(extra),
            "headers": extra,
            "sent_at": datetime.now(UTC).isoformat(),
        }
        line = json.dumps(record, ensure_ascii=False) + "\n"
        try:
            with self._lock:
                self.directory.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as fh:
                    fh.write(line)
        except OSError as exc:
            raise DeliveryError(True, f"cannot write {self.path}: {exc}") from exc
        return message_id


def sms_sender_from_config(
    url: str | None, token: str | None, directory: str | os.PathLike[str]
) -> SmsSender:
    """HTTP gateway when ``url`` is set, else the development file sender."""
    if url:
        if not token:
            raise ValueError("an SMS gateway url needs a token")
        return HttpSmsSender(url, token)
    return FileSmsSender(directory)
