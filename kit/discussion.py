"""Comments and files on a record ("a discussion"): the rules every service shares.

A service declares one :class:`Discussion` per kind of record that carries a thread of
comments and attached files (a quote request; an estimate and each of its lines), and
gets the rest by declaration: the tables and commands (:mod:`kit.discussion_store`),
the RPC entrypoints (:mod:`kit.discussion_rpc`) and the gateway's routes
(its ``discussion`` module). The same rules hold everywhere:

- whoever may see the record may read its comments and files, and nobody else: every
  operation first loads the record through the service's own visibility rule, so a
  comment or a download is authorised exactly like the record itself;
- staff (the declared roles) and portal users who see the record comment and upload;
  read-only sessions never write; some kinds of file are for staff only (a quote
  document);
- only managers and admins delete a comment (a soft delete: the thread keeps its place);
- files are checked (size, type by their bytes, safe name; :mod:`kit.uploads`) and stored
  once by content hash (:mod:`kit.blobs`); the record keeps their metadata.

Pure: the standard library and the kit's pure parts only.
"""

from __future__ import annotations

from dataclasses import dataclass

from kit import access
from kit.access import ActorLike
from kit.context import STAFF_ROLES
from kit.errors import Forbidden, ValidationFailed
from kit.text import field_text

MAX_COMMENT = 5000
ATTACHMENT = "attachment"
MANAGERS: frozenset[str] = frozenset({"admin", "manager"})


@dataclass(frozen=True)
class Discussion:
    """The comments and files of one kind of record.

    ``record`` names the record in events and messages (``quote_request``: events
    ``quote_request.comment_added``, ...); ``record_key`` is the column and field that
    point at it (``quote_request_id``); ``name`` prefixes RPC methods when a service has
    more than one discussion (``""``: ``add_comment``; ``"line_"``: ``line_add_comment``).
    """

    record: str
    record_key: str
    label: str
    kinds: tuple[str, ...] = (ATTACHMENT,)
    staff_only_kinds: frozenset[str] = frozenset()
    staff_roles: frozenset[str] = frozenset(STAFF_ROLES)
    delete_roles: frozenset[str] = MANAGERS
    # Other caller kinds that take part besides staff and portal users (a work-order
    # token holder joins the work order's thread).
    guest_kinds: frozenset[str] = frozenset()
    max_comment: int = MAX_COMMENT
    name: str = ""
    comments_table: str = "comments"
    attachments_table: str = "attachments"

    def __post_init__(self) -> None:
        assert self.kinds and set(self.staff_only_kinds) <= set(self.kinds), self

    # --- events -----------------------------------------------------------------------
    @property
    def comment_added(self) -> str:
        return f"{self.record}.comment_added"

    @property
    def comment_deleted(self) -> str:
        return f"{self.record}.comment_deleted"

    @property
    def attachment_added(self) -> str:
        return f"{self.record}.attachment_added"

    @property
    def events(self) -> tuple[str, ...]:
        return (self.comment_added, self.comment_deleted, self.attachment_added)

    # --- rules (the record is already known to be visible to the actor) ---------------
    def _participates(self, actor: ActorLike) -> bool:
        if access.is_tenant_wide(actor.kind):
            return access.has_role(actor.kind, actor.roles, self.staff_roles)
        return actor.kind == "portal" or actor.kind in self.guest_kinds

    def _writer(self, actor: ActorLike, what: str) -> None:
        if actor.read_only:
            raise Forbidden("this session is read-only")
        if not self._participates(actor):
            raise Forbidden(f"this caller may not {what} on a {self.label}")

    def validate_comment(self, actor: ActorLike, body: object) -> str:
        """The comment's text as stored, or the reason it is refused."""
        self._writer(actor, "comment")
        errors: dict[str, list[str]] = {}
        text = field_text(errors, "body", body, self.max_comment, required=True)
        if errors or text is None:
            raise ValidationFailed(detail="the comment is not valid", errors=errors)
        return text

    def authorize_delete(self, actor: ActorLike) -> None:
        """Only managers and admins delete comments."""
        if actor.read_only:
            raise Forbidden("this session is read-only")
        if not access.has_role(actor.kind, actor.roles, self.delete_roles):
            raise Forbidden("only a manager or admin may delete comments")

    def authorize_attachment(self, actor: ActorLike, kind: object) -> str:
        """The kind of file ``actor`` may attach, checked before any byte is stored."""
        if actor.read_only:
            raise Forbidden("this session is read-only")
        if not isinstance(kind, str) or kind not in self.kinds:
            raise ValidationFailed(
                detail="unknown attachment kind",
                errors={"kind": [f"must be one of {', '.join(self.kinds)}"]},
            )
        self._writer(actor, "upload files")
        if kind in self.staff_only_kinds and not access.is_tenant_wide(actor.kind):
            raise Forbidden(f"only shop staff may attach a {kind.replace('_', ' ')}")
        return kind
