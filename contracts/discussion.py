"""Comments and attachments of any record (``kit.discussion``): one request body, one
page query, and the two record shapes, named after the record they belong to."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from contracts.common import CURSOR_PATTERN, PageQuery

MAX_COMMENT = 5000
TRIMMED = {"multiline": True, "strips": True}


class CommentRequest(Schema):
    body = fields.String(
        required=True, validate=validate.Length(min=1, max=MAX_COMMENT), metadata=TRIMMED
    )


class OldestFirstPage(PageQuery):
    """A page of a record's comments or attachments, oldest first."""


class SnapshotPage(Schema):
    """A page of a service's snapshot for the gateway's views (system callers only)."""

    limit = fields.Integer(load_default=500, validate=validate.Range(min=1, max=1000))
    cursor = fields.String(validate=validate.Regexp(CURSOR_PATTERN, error="not a cursor"))


def comment_schema(record_key: str, name: str = "CommentSchema") -> type[Schema]:
    """A comment as clients see it; ``record_key`` names its record (``quote_request_id``)."""
    return Schema.from_dict(
        {
            "id": fields.UUID(required=True),
            record_key: fields.UUID(required=True),
            "author_kind": fields.String(required=True),
            "author_id": fields.UUID(required=True),
            "author_name": fields.String(),
            "body": fields.String(required=True),
            "created_at": fields.DateTime(required=True),
        },
        name=name,
    )


def attachment_schema(
    record_key: str, kinds: tuple[str, ...], name: str = "AttachmentSchema"
) -> type[Schema]:
    """A file's metadata as clients see it (its bytes are downloaded on their own)."""
    return Schema.from_dict(
        {
            "id": fields.UUID(required=True),
            record_key: fields.UUID(required=True),
            "kind": fields.String(required=True, validate=validate.OneOf(list(kinds))),
            "filename": fields.String(required=True),
            "content_type": fields.String(required=True),
            "size": fields.Integer(required=True),
            "sha256": fields.String(required=True),
            "uploaded_by_name": fields.String(),
            "created_at": fields.DateTime(required=True),
        },
        name=name,
    )
