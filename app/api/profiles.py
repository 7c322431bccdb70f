"""Profiles: create, list, read, edit, delete, and the bulk import."""

from __future__ import annotations

from typing import Any

from flask import request, url_for

from app.access import requires
from app.api import bp
from app.api.bodies import MalformedBody, load_args, load_body, page_body
from app.models import Role
from app.schemas.profiles import ProfileCreate, ProfileListArgs, ProfileOut, ProfilePatch
from app.services import profile_import, profiles

profile_out = ProfileOut()

# The media types POST /profiles/import reads, by format.
IMPORT_TYPES = {
    "text/csv": "csv",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/x-jsonlines": "jsonl",
}


@bp.post("/profiles")
@requires(Role.OPERATOR)
def create_profile() -> tuple[dict[str, Any], int, dict[str, str]]:
    data = load_body(ProfileCreate())
    profile = profiles.create_profile(data["name"], data["attributes"], data["tags"])
    return profile_out.dump(profile), 201, {"Location": url_for("api.get_profile", profile_id=profile.id)}


@bp.get("/profiles")
@requires(Role.VIEWER)
def list_profiles() -> dict[str, Any]:
    args = load_args(ProfileListArgs())
    listing = profiles.list_profiles(args["page"], args["per_page"], args.get("q"), args.get("tag"))
    return page_body(listing, profile_out)


@bp.get("/profiles/<int:profile_id>")
@requires(Role.VIEWER)
def get_profile(profile_id: int) -> dict[str, Any]:
    return profile_out.dump(profiles.get_profile(profile_id))


@bp.patch("/profiles/<int:profile_id>")
@requires(Role.OPERATOR)
def update_profile(profile_id: int) -> dict[str, Any]:
    changes = load_body(ProfilePatch())
    return profile_out.dump(profiles.update_profile(profile_id, changes))


@bp.delete("/profiles/<int:profile_id>")
@requires(Role.OPERATOR)
def delete_profile(profile_id: int) -> tuple[str, int]:
    profiles.delete_profile(profile_id)
    return "", 204


@bp.post("/profiles/import")
@requires(Role.OPERATOR)
def import_profiles() -> dict[str, int]:
    kind = IMPORT_TYPES.get(request.mimetype)
    if kind is None:
        raise MalformedBody(
            "send the file as text/csv or application/x-ndjson",
            {"Content-Type": [f"expected one of {', '.join(IMPORT_TYPES)}"]},
        )
    created, updated = profile_import.import_file(request.get_data(cache=False), kind)
    return {"created": created, "updated": updated}
