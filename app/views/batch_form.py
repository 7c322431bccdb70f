"""The creation form: parameter fields generated from each processor's marshmallow schema.

The form posts plain strings; this module turns them into the shapes the
schema expects (a list from a textarea, JSON for a dict, nothing for an empty
optional field) and lets BatchCreate do all the validation, so the form and
the API refuse exactly the same input. Errors are mapped back to the inputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from marshmallow import ValidationError, fields, validate
from werkzeug.datastructures import MultiDict

from app import processors
from app.errors import InvalidInput
from app.schemas.batches import BatchCreate


@dataclass(frozen=True)
class ParamField:
    """One generated input for one parameter of one processor."""

    processor: str
    name: str
    label: str
    kind: str  # number, integer, text, url, list, checkbox, json
    required: bool
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    hint: str = ""

    @property
    def input_name(self) -> str:
        return f"param-{self.processor}-{self.name}"

    @property
    def input_id(self) -> str:
        return f"field-{self.processor}-{self.name}"


@dataclass
class FormState:
    """What the page shows: entered values and errors by input name."""

    name: str = ""
    processor: str = ""
    profile_ids: set[int] = field(default_factory=set)
    profile_tags: set[str] = field(default_factory=set)
    item_timeout: str = ""  # as typed; empty for the processor's or the service's default
    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)

    def add_error(self, key: str, messages: Any) -> None:
        self.errors.setdefault(key, []).extend(_flatten(messages))


def _kind(schema_field: fields.Field) -> str:
    if isinstance(schema_field, fields.Boolean):
        return "checkbox"
    if isinstance(schema_field, fields.Integer):
        return "integer"
    if isinstance(schema_field, (fields.Float, fields.Decimal, fields.Number)):
        return "number"
    if isinstance(schema_field, fields.Url):
        return "url"
    if isinstance(schema_field, fields.List):
        return "list"
    if isinstance(schema_field, fields.Dict):
        return "json"
    return "text"


def _bounds(schema_field: fields.Field) -> tuple[float | None, float | None]:
    for validator in schema_field.validators:
        if isinstance(validator, validate.Range):
            return validator.min, validator.max
    return None, None


def _hint(kind: str, minimum: float | None, maximum: float | None, description: str) -> str:
    parts = [description] if description else []
    if kind == "list":
        parts.append("one per line")
    if kind == "json":
        parts.append("a JSON object")
    if minimum is not None and maximum is not None:
        parts.append(f"{minimum:g} to {maximum:g}")
    return "; ".join(parts)


def parameter_fields(processor_name: str) -> list[ParamField]:
    """The inputs for a processor's parameters, in the schema's order."""
    processor = processors.get(processor_name)
    if processor is None:
        return []
    result = []
    for name, schema_field in processor.schema().fields.items():
        if schema_field.dump_only:
            continue
        kind = _kind(schema_field)
        minimum, maximum = _bounds(schema_field)
        default = schema_field.load_default
        description = str(schema_field.metadata.get("description", ""))
        result.append(
            ParamField(
                processor=processor_name,
                name=name,
                label=name.replace("_", " ").capitalize(),
                kind=kind,
                required=schema_field.required,
                default=None if callable(default) or default is fields.missing_ else default,
                minimum=minimum,
                maximum=maximum,
                hint=_hint(kind, minimum, maximum, description),
            )
        )
    return result


def state_from_batch(batch: Any) -> FormState:
    """The creation form filled in as `batch` was made ("run again"): its inputs as text, as if typed."""
    state = FormState(
        name=batch.name,
        processor=batch.processor,
        profile_ids=set(batch.profile_ids),
        item_timeout=f"{batch.item_timeout:g}",
    )
    for param in parameter_fields(batch.processor):
        if param.name not in (batch.parameters or {}):
            continue
        value = batch.parameters[param.name]
        if param.kind == "checkbox":
            text = "on" if value else ""
        elif param.kind == "list":
            text = "\n".join(str(entry) for entry in value)
        elif param.kind == "json":
            text = json.dumps(value)
        elif isinstance(value, float):
            text = f"{value:g}"
        else:
            text = str(value)
        state.values[param.input_name] = text
    return state


def all_parameter_fields() -> dict[str, list[ParamField]]:
    """Every registered processor's inputs, by processor name."""
    return {name: parameter_fields(name) for name in processors.names()}


def _value(param: ParamField, raw: str, state: FormState) -> tuple[bool, Any]:
    """Turn one input into what the schema loads; (False, None) leaves the parameter out."""
    if param.kind == "checkbox":
        return True, raw in ("on", "true", "1")
    raw = raw.strip()
    if not raw:
        return False, None
    if param.kind == "list":
        return True, [line.strip() for line in raw.replace(",", "\n").splitlines() if line.strip()]
    if param.kind in ("number", "integer"):
        return True, _number(raw, integer=param.kind == "integer")
    if param.kind == "json":
        try:
            return True, json.loads(raw)
        except ValueError:
            state.add_error(param.input_name, "Not valid JSON.")
            return False, None
    return True, raw


def _number(raw: str, integer: bool = False) -> Any:
    """The number typed, for a schema that takes JSON numbers only.

    Text that isn't one goes through as is, so the schema refuses it with its own message.
    """
    try:
        return int(raw) if integer else float(raw)
    except ValueError:
        return raw


def read_form(form: MultiDict[str, str]) -> tuple[FormState, dict[str, Any] | None]:
    """Read and validate a submitted creation form; the data is None when it has errors."""
    state = FormState(name=form.get("name", ""), processor=form.get("processor", ""))
    profile_ids: list[int] = []
    for raw in form.getlist("profile_ids"):
        if raw.isdigit():
            profile_ids.append(int(raw))
    state.profile_ids = set(profile_ids)
    profile_tags = [tag for tag in form.getlist("profile_tags") if tag]
    state.profile_tags = set(profile_tags)
    params = parameter_fields(state.processor)
    parameters: dict[str, Any] = {}
    for param in params:
        raw = form.get(param.input_name, "")
        state.values[param.input_name] = raw
        present, value = _value(param, raw, state)
        if present:
            parameters[param.name] = value
    body = {"name": state.name, "profile_ids": profile_ids, "processor": state.processor, "parameters": parameters}
    if profile_tags:
        body["profile_tags"] = profile_tags
    state.item_timeout = form.get("item_timeout", "")
    if state.item_timeout.strip():
        body["item_timeout"] = _number(state.item_timeout.strip())
    try:
        data = BatchCreate().load(body)
    except ValidationError as exc:
        apply_errors(state, exc.normalized_messages())
        return state, None
    if state.errors:
        return state, None
    return state, data


def apply_errors(state: FormState, messages: dict[str, Any]) -> None:
    """Put validation messages beside their inputs."""
    for key, value in messages.items():
        if key == "parameters" and isinstance(value, dict):
            for param_name, param_messages in value.items():
                target = f"param-{state.processor}-{param_name}"
                if param_name == "_schema" or target not in state.values:
                    target = "parameters"
                    param_messages = (
                        [f"{param_name}: {m}" for m in _flatten(param_messages)]
                        if param_name != "_schema"
                        else param_messages
                    )
                state.add_error(target, param_messages)
        elif key in ("name", "profile_ids", "profile_tags", "processor", "item_timeout"):
            state.add_error(key, value)
        else:
            state.add_error("form", value)


def apply_service_error(state: FormState, error: InvalidInput) -> None:
    """Put a service's validation error (unknown profiles or tags) beside its input."""
    apply_errors(state, dict(error.fields or {"form": [error.message]}))


def _flatten(messages: Any) -> list[str]:
    if isinstance(messages, str):
        return [messages]
    if isinstance(messages, dict):
        return [m for value in messages.values() for m in _flatten(value)]
    if isinstance(messages, (list, tuple)):
        return [m for value in messages for m in _flatten(value)]
    return [str(messages)]
