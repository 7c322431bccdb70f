"""Profiles: POST/GET /profiles, GET /profiles/<id>."""

from __future__ import annotations

from typing import Any

from flask import url_for

from app.api import bp
from app.api.bodies import load_args, load_body, page_body
from app.schemas.common import PageArgs
from app.schemas.profiles import ProfileCreate, ProfileOut
from app.services import profiles

profile_out = ProfileOut()


@bp.post("/profiles")
def create_profile() -> tuple[dict[str, Any], int, dict[str, str]]:
    data = load_body(ProfileCreate())
    profile = profiles.create_profile(data["name"], data["attributes"])
    return profile_out.dump(profile), 201, {"Location": url_for("api.get_profile", profile_id=profile.id)}


@bp.get("/profiles")
def list_profiles() -> dict[str, Any]:
    args = load_args(PageArgs())
    return page_body(profiles.list_profiles(args["page"], args["per_page"]), profile_out)


@bp.get("/profiles/<int:profile_id>")
def get_profile(profile_id: int) -> dict[str, Any]:
    return profile_out.dump(profiles.get_profile(profile_id))
