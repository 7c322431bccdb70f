"""Streamed file downloads, shared by the API and the pages."""

from __future__ import annotations

from flask import Response

from app.services.logs import Export


def attachment(export: Export) -> Response:
    """Send an export as a file to save, chunk by chunk as it is read (never whole in memory)."""
    return Response(
        export.chunks,
        mimetype=export.mimetype,
        headers={"Content-Disposition": f'attachment; filename="{export.filename}"'},
    )
