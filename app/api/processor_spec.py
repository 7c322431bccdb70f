"""The batch body as OpenAPI sees it: one variant per registered processor, each with its own parameters.

A free-string `processor` and a free-form `parameters` object let a client (or a
fuzzer) build requests the service must refuse. Naming the processors and
tying each to its parameters' schema makes every request the description
allows one the service accepts, bar references to profiles that don't exist.
"""

from __future__ import annotations

import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from app import processors

# Either list may choose the profiles, but together they must name at least one.
SOME_PROFILES = {
    "anyOf": [
        {"required": ["profile_ids"], "properties": {"profile_ids": {"minItems": 1}}},
        {"required": ["profile_tags"], "properties": {"profile_tags": {"minItems": 1}}},
    ]
}


def _component_name(processor: str) -> str:
    """A component name OpenAPI allows (letters, digits, `.`, `-`, `_`) for a processor's variant."""
    return "BatchCreate." + re.sub(r"[^A-Za-z0-9._-]", "_", processor)


def _url_pattern(hosts: tuple[str, ...]) -> str:
    """URLs on the allowed hosts only, with a plain path that any URL parser reads the same way."""
    alternatives = "|".join(re.escape(host) for host in hosts)
    return rf"^https?://({alternatives})(:[0-9]{{1,4}})?(/[A-Za-z0-9._~-]+)*/?$"


def _parameters(spec: APISpec, name: str, http_allowed_hosts: tuple[str, ...]) -> dict[str, Any] | None:
    """The JSON schema of a processor's parameters; None when no parameters could be accepted."""
    processor = processors.get(name)
    assert processor is not None
    plugin = next(plugin for plugin in spec.plugins if isinstance(plugin, MarshmallowPlugin))
    assert plugin.converter is not None
    schema: dict[str, Any] = plugin.converter.schema2jsonschema(processor.schema)
    if name == "http":
        # Its schema checks the host against HTTP_PROCESSOR_ALLOWED_HOSTS, which no format can say.
        if not http_allowed_hosts:
            return None
        schema["properties"]["url"] = {"type": "string", "pattern": _url_pattern(http_allowed_hosts)}
    return schema


def describe_callback_url(spec: APISpec, callback_allowed_hosts: tuple[str, ...]) -> None:
    """Narrow BatchCreate's `callback_url` to URLs on CALLBACK_ALLOWED_HOSTS; with none allowed, only null."""
    properties = spec.components.schemas["BatchCreate"]["properties"]
    described = properties["callback_url"]
    if callback_allowed_hosts:
        described["pattern"] = _url_pattern(callback_allowed_hosts)
    else:
        properties["callback_url"] = {"type": "string", "nullable": True, "enum": [None], **_about(described)}


def _about(described: dict[str, Any]) -> dict[str, Any]:
    return {"description": described["description"]} if "description" in described else {}


def describe_processors(spec: APISpec, http_allowed_hosts: tuple[str, ...]) -> None:
    """Add BatchCreateRequest: BatchCreate with `processor` one of the registered names, and its parameters."""
    variants = {}
    for name in processors.names():
        parameters = _parameters(spec, name, http_allowed_hosts)
        if parameters is None:
            continue
        component = _component_name(name)
        processor = {"type": "string", "enum": [name], "description": processors.get(name).description}  # type: ignore[union-attr]
        spec.components.schema(
            component,
            {
                "allOf": [
                    {"$ref": "#/components/schemas/BatchCreate"},
                    {
                        "properties": {"processor": processor, "parameters": parameters},
                        # Parameters are optional only where the processor needs none.
                        **({"required": ["parameters"]} if parameters.get("required") else {}),
                        **SOME_PROFILES,
                    },
                ]
            },
        )
        variants[name] = f"#/components/schemas/{component}"
    base = spec.components.schemas["BatchCreate"]
    base["properties"]["processor"] = {"type": "string", "enum": processors.names()}
    spec.components.schema(
        "BatchCreateRequest",
        {
            "oneOf": [{"$ref": ref} for ref in variants.values()],
            "discriminator": {"propertyName": "processor", "mapping": variants},
        },
    )
