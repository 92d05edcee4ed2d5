"""The HTTP face of a discussion (``kit.discussion``): comments and files of a record,
declared in one call per record::

    quote_discussion = discussion_routes(
        "/quote-requests/{id}", rpc="quotes", record="quote_request",
        record_key="quote_request_id", load_record=views.visible_quote,
        label="quote request", tag=TAG,
        comment_schema=c.CommentSchema, attachment_schema=c.AttachmentSchema,
        kinds=c.ATTACHMENT_KINDS,
    )

registers ``GET|POST {base}/comments``, ``DELETE {base}/comments/{cid}``,
``GET|POST {base}/attachments`` and ``GET {base}/attachments/{aid}`` (the download).
Reads come from the gateway's views, after the record itself is found visible to the
caller (the kit's one access rule), so comments and downloads are authorised exactly
like their record. Commands go to the owning service, which loads the record through
its own visibility rule first; their replies are applied to the views before the
answer. The bytes of a file are stored here by content hash (``kit.blobs``) only after
the service has said the caller may attach that kind, so a refused upload leaves
nothing behind.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote as percent_encode

from marshmallow import Schema
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import wrap_file

from contracts.discussion import CommentRequest, OldestFirstPage
from kit.uploads import ALLOWED_TYPES, MAX_UPLOAD_BYTES, check_upload, sanitize_filename
from services.gateway import views
from services.gateway.web import (
    ANY_CALLER,
    STAFF,
    ApiError,
    Call,
    json_safe,
    refuse_chunked,
    revive,
    route,
)

STAFF_OR_PORTAL = ("staff", "portal")
MULTIPART_OVERHEAD = 64 * 1024
MAX_UPLOAD_REQUEST_BYTES = MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD
DOWNLOAD_CHUNK = 64 * 1024
# A download is served as the type its bytes were accepted as (octet-stream if unknown).
DOWNLOAD_TYPES = (*sorted(ALLOWED_TYPES), "application/octet-stream")


# --- pure helpers ---------------------------------------------------------------------


def ascii_filename(name: str) -> str:
    """A plain-ASCII stand-in for ``name`` for clients that ignore ``filename*``."""
    decomposed = unicodedata.normalize("NFKD", name)
    out = []
    for ch in decomposed:
        if unicodedata.combining(ch):
            continue
        if " " <= ch <= "~" and ch not in '"\\%':
            out.append(ch)
        else:
            out.append("_")
    text = "".join(out).strip()
    return text or "file"


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback and the exact UTF-8 name (RFC 6266/8187)."""
    safe = sanitize_filename(filename)
    encoded = percent_encode(safe.encode("utf-8"), safe="!#$&+-.^_`|~")
    return f"attachment; filename=\"{ascii_filename(safe)}\"; filename*=UTF-8''{encoded}"


def too_large() -> ApiError:
    return ApiError(
        "payload_too_large", f"Files are limited to {MAX_UPLOAD_BYTES // (1024 * 1024)} MB."
    )


def upload_form(request: Request) -> tuple[Any, Any]:
    """(files, form) of a multipart upload, size-capped before a byte of the body is
    read. Parsed once per request (werkzeug keeps them): the idempotency fingerprint
    reads the same parts the handler does."""
    refuse_chunked(request)
    length = request.content_length
    if length is not None and length > MAX_UPLOAD_REQUEST_BYTES:
        raise too_large()
    if request.mimetype != "multipart/form-data":
        raise ApiError("unsupported_media_type", "Send the file as multipart/form-data.")
    request.max_content_length = MAX_UPLOAD_REQUEST_BYTES
    try:
        files = request.files
        form = request.form
    except RequestEntityTooLarge as exc:
        raise too_large() from exc
    except ClientDisconnected as exc:
        raise ApiError("malformed_request", "The upload ended early.") from exc
    return files, form


def read_upload(request: Request, kinds: tuple[str, ...]) -> tuple[bytes, str | None, str, str]:
    """(bytes, declared type, file name, kind) of a multipart upload."""
    files, form = upload_form(request)
    uploads = files.getlist("file")
    errors: dict[str, list[str]] = {}
    if not uploads:
        errors["file"] = ["a file is required (a multipart part named file, with a filename)"]
    elif len(uploads) > 1:
        errors["file"] = ["send one file per request"]
    sent_kinds = form.getlist("kind")
    kind = sent_kinds[0] if sent_kinds else kinds[0]
    if len(sent_kinds) > 1 or kind not in kinds:
        errors["kind"] = [f"must be one of {', '.join(kinds)}"]
    # As in JSON bodies, a part the upload does not have is refused, not ignored.
    for name in sorted((set(files) | set(form)) - {"file", "kind"}):
        errors[name] = ["Unknown field."]
    if errors:
        raise ApiError("validation_failed", "The upload is not valid.", errors)
    storage = uploads[0]
    try:
        data = storage.stream.read(MAX_UPLOAD_BYTES + 1)
    finally:
        storage.close()
    return data, storage.content_type, storage.filename or "", kind


def download(call: Call, meta: dict[str, Any]) -> Response:
    """The stored bytes of a file whose metadata the owning service handed out."""
    fh = call.gw.blobs.open(meta["sha256"])
    try:
        size = os.fstat(fh.fileno()).st_size
        body = wrap_file(call.request.environ, fh, DOWNLOAD_CHUNK)
    except BaseException:
        fh.close()
        raise
    response = Response(body, status=200, direct_passthrough=True)
    response.headers["Content-Type"] = meta.get("content_type") or "application/octet-stream"
    response.headers["Content-Length"] = str(size)
    response.headers["Content-Disposition"] = content_disposition(meta.get("filename") or "")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "sandbox"
    response.headers["Cache-Control"] = "private, no-store"
    return response


# --- the routes -----------------------------------------------------------------------


@dataclass(frozen=True)
class DiscussionRoutes:
    """The handlers :func:`discussion_routes` registered (tests call them directly)."""

    list_comments: Callable[[Call], Any]
    add_comment: Callable[[Call], Any]
    delete_comment: Callable[[Call], Any]
    add_attachment: Callable[[Call], Any]
    list_attachments: Callable[[Call], Any]
    download_attachment: Callable[[Call], Any]


def discussion_routes(
    base: str,
    *,
    rpc: str,
    record: str,
    record_key: str,
    load_record: Callable[[Any, Any, str], Any],
    label: str,
    tag: str,
    comment_schema: type[Schema],
    attachment_schema: type[Schema],
    kinds: tuple[str, ...],
    name: str = "",
    readers: tuple[str, ...] = ANY_CALLER,
    writers: tuple[str, ...] = STAFF_OR_PORTAL,
) -> DiscussionRoutes:
    """Register the comment and file routes under ``base`` (see the module's doc):
    ``rpc`` is the owning service, ``name`` the discussion's RPC prefix, ``kinds`` the
    kinds of file it takes (the first is the default). Reads come from the views
    (``record`` names the kind of record there, ``load_record(uow, actor, id)`` is the
    record's view row if the caller may see it, else ``not_found``); the replies of
    commands are applied to the views before the answer."""

    def method(call: Call, operation: str) -> Any:
        return getattr(getattr(call.gw, rpc), f"{name}{operation}")

    def list_comments(call: Call) -> Any:
        with call.gw.db.unit_of_work() as uow:
            parent = load_record(uow, call.require_actor(), call.path["id"])
            limit, cursor = call.query.get("limit"), call.query.get("cursor")
            rows, next_cursor = views.comments_page(uow, record, parent.id, limit, cursor)
            items = [views.comment_dict(r, record_key) for r in rows]
        return {"items": items, "next_cursor": next_cursor}

    def add_comment(call: Call) -> Any:
        added = method(call, "add_comment")(call.path["id"], json_safe(call.body))
        with call.gw.db.unit_of_work() as uow:
            views.add_comment(uow, record, call.path["id"], added)
        return revive(comment_schema, added)

    def delete_comment(call: Call) -> Any:
        deleted = method(call, "delete_comment")(call.path["id"], call.path["cid"])
        with call.gw.db.unit_of_work() as uow:
            views.delete_comment(uow, record, call.path["id"], deleted["id"], deleted["deleted_at"])
        return None

    def add_attachment(call: Call) -> Any:
        record_id = call.path["id"]
        data, declared_type, raw_name, kind = read_upload(call.request, kinds)
        # Refused callers (scope, role, read-only preview) leave no bytes behind.
        kind = method(call, "authorize_upload")(record_id, kind)
        filename = sanitize_filename(raw_name)
        content_type = check_upload(data, declared_type, filename)
        sha256 = call.gw.blobs.put(data)
        meta = {
            "kind": kind,
            "filename": filename,
            "content_type": content_type,
            "size": len(data),
            "sha256": sha256,
        }
        added = method(call, "add_attachment")(record_id, meta)
        with call.gw.db.unit_of_work() as uow:
            views.add_attachment(uow, record, record_id, added)
        return revive(attachment_schema, added)

    def list_attachments(call: Call) -> Any:
        with call.gw.db.unit_of_work() as uow:
            parent = load_record(uow, call.require_actor(), call.path["id"])
            limit, cursor = call.query.get("limit"), call.query.get("cursor")
            rows, next_cursor = views.attachments_page(uow, record, parent.id, limit, cursor)
            items = [views.attachment_dict(r, record_key) for r in rows]
        return {"items": items, "next_cursor": next_cursor}

    def download_attachment(call: Call) -> Any:
        """The file, authorised exactly like its record (whoever may see the record)."""
        with call.gw.db.unit_of_work() as uow:
            parent = load_record(uow, call.require_actor(), call.path["id"])
            row = views.attachment_of(uow, record, parent.id, call.path["aid"])
            meta = views.attachment_dict(row, record_key)
        return download(call, meta)

    kinds_text = " or ".join(kinds)
    route(
        "GET",
        f"{base}/comments",
        callers=readers,
        summary=f"Comments on a {label}, oldest first",
        tag=tag,
        query=OldestFirstPage,
        response=comment_schema,
        many=True,
    )(list_comments)
    route(
        "POST",
        f"{base}/comments",
        callers=writers,
        summary=f"Comment on a {label}",
        tag=tag,
        body=CommentRequest,
        response=comment_schema,
        status=201,
        errors=(403,),
        idempotency="optional",
    )(add_comment)
    route(
        "DELETE",
        f"{base}/comments/{{cid}}",
        callers=STAFF,
        summary="Delete a comment (manager)",
        tag=tag,
        status=204,
        errors=(403,),
    )(delete_comment)
    route(
        "POST",
        f"{base}/attachments",
        callers=writers,
        summary=f"Attach a file (kind {kinds_text})",
        tag=tag,
        multipart=True,
        response=attachment_schema,
        status=201,
        errors=(403, 413, 415),
        idempotency="optional",
    )(add_attachment)
    route(
        "GET",
        f"{base}/attachments",
        callers=readers,
        summary=f"Files attached to a {label}, oldest first",
        tag=tag,
        query=OldestFirstPage,
        response=attachment_schema,
        many=True,
    )(list_attachments)
    route(
        "GET",
        f"{base}/attachments/{{aid}}",
        callers=readers,
        summary="Download an attached file",
        tag=tag,
        content=DOWNLOAD_TYPES,
    )(download_attachment)
    return DiscussionRoutes(
        list_comments,
        add_comment,
        delete_comment,
        add_attachment,
        list_attachments,
        download_attachment,
    )
