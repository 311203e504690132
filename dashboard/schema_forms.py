"""A tool's JSON Schema (its zod input schema, as the manifest holds it) as people read it, and as a Django
form whose fields follow the schema's top-level properties; the sandbox still validates the whole input."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django import forms

# The form's prefix: property names become `input-<name>`, so they never clash with the page's own fields.
INPUT_PREFIX = "input"
# A schema that is not an object with properties is entered as one JSON value in this field.
RAW_FIELD = "__json__"
RAW_LABEL = "Input (JSON)"


@dataclass(frozen=True)
class SchemaField:
    """One property of an object schema, described in words (`children`: an object's own properties)."""

    name: str
    kind: str
    required: bool
    description: str = ""
    constraints: tuple[str, ...] = ()
    default: str | None = None
    children: tuple[SchemaField, ...] = field(default_factory=tuple)


def _types(schema: dict[str, Any]) -> tuple[str | None, bool]:
    """The schema's one non-null type (None: several or none) and whether null is allowed."""
    declared = schema.get("type")
    types = declared if isinstance(declared, list) else [declared] if isinstance(declared, str) else []
    nullable = "null" in types
    rest = [t for t in types if t != "null"]
    for option in schema.get("anyOf") or schema.get("oneOf") or []:
        if isinstance(option, dict) and option.get("type") == "null":
            nullable = True
    return (rest[0] if len(rest) == 1 else None), nullable


def _enum(schema: dict[str, Any]) -> list[Any] | None:
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return list(schema["enum"])
    if "const" in schema:
        return [schema["const"]]
    return None


def _label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _kind(schema: dict[str, Any]) -> str:
    """What a value of this schema is, in words."""
    choices = _enum(schema)
    if choices is not None:
        return "one of " + ", ".join(_label(choice) for choice in choices)
    kind, _ = _types(schema)
    if kind == "array":
        items = schema.get("items")
        return "list of " + (_kind(items) if isinstance(items, dict) else "values")
    return {
        "string": "text",
        "integer": "whole number",
        "number": "number",
        "boolean": "true or false",
        "object": "object",
    }.get(kind or "", "any JSON value")


def _constraints(schema: dict[str, Any]) -> tuple[str, ...]:
    words = {
        "minLength": "at least {} character{s}",
        "maxLength": "at most {} character{s}",
        "minimum": "at least {}",
        "maximum": "at most {}",
        "exclusiveMinimum": "more than {}",
        "exclusiveMaximum": "less than {}",
        "minItems": "at least {} item{s}",
        "maxItems": "at most {} item{s}",
        "pattern": "matching {}",
        "format": "format {}",
    }
    found = []
    for key, text in words.items():
        value = schema.get(key)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            found.append(text.format(value, s="" if value == 1 else "s"))
    return tuple(found)


def schema_fields(schema: Any) -> list[SchemaField]:
    """The properties of an object schema, readable (nested objects two levels deep)."""
    return _fields(schema, depth=0)


def _fields(schema: Any, *, depth: int) -> list[SchemaField]:
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        return []
    required = set(schema.get("required") or [])
    result = []
    for name, spec in schema["properties"].items():
        spec = spec if isinstance(spec, dict) else {}
        result.append(
            SchemaField(
                name=str(name),
                kind=_kind(spec),
                required=name in required,
                description=str(spec.get("description") or ""),
                constraints=_constraints(spec),
                default=json.dumps(spec["default"]) if "default" in spec else None,
                children=tuple(_fields(spec, depth=depth + 1)) if depth < 2 else (),
            )
        )
    return result


def _form_field(spec: dict[str, Any], *, required: bool) -> forms.Field:
    """The Django form field entering one property's value."""
    help_text = str(spec.get("description") or "")
    kind, nullable = _types(spec)
    required = required and not nullable
    common: dict[str, Any] = {"required": required, "help_text": help_text}
    if "default" in spec:
        common["initial"] = spec["default"]
    choices = _enum(spec)
    if choices is not None:
        options = [(json.dumps(choice), _label(choice)) for choice in choices]
        if "initial" in common:
            common["initial"] = json.dumps(common["initial"])
        return forms.TypedChoiceField(
            choices=options if required else [("", "(not set)"), *options],
            coerce=json.loads,
            empty_value=None,
            **common,
        )
    if kind == "string":
        return forms.CharField(
            min_length=spec.get("minLength"), max_length=spec.get("maxLength"), strip=False, **common
        )
    if kind == "integer":
        return forms.IntegerField(min_value=spec.get("minimum"), max_value=spec.get("maximum"), **common)
    if kind == "number":
        return forms.FloatField(min_value=spec.get("minimum"), max_value=spec.get("maximum"), **common)
    if kind == "boolean":
        # Unticked is false: a boolean is always sent.
        return forms.BooleanField(**{**common, "required": False})
    if "initial" in common:
        common["initial"] = json.dumps(common["initial"])
    help_text = " ".join(part for part in (help_text, f"JSON: {_kind(spec)}.") if part)
    return forms.JSONField(widget=forms.Textarea(attrs={"rows": 3}), **{**common, "help_text": help_text})


class ToolInputForm(forms.Form):
    """A tool's input: one field per top-level property of its schema, or one JSON field."""

    prefix = INPUT_PREFIX

    def __init__(self, *args: Any, schema: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.schema = schema if isinstance(schema, dict) else {}
        properties = self.schema.get("properties")
        self.raw = not (self.schema.get("type") in (None, "object") and isinstance(properties, dict))
        # Properties the input must have that may be null: left empty, they are sent as null.
        self.null_when_empty: set[str] = set()
        if self.raw:
            self.fields[RAW_FIELD] = forms.JSONField(
                label=RAW_LABEL, initial={}, widget=forms.Textarea(attrs={"rows": 6})
            )
            return
        required = set(self.schema.get("required") or [])
        assert isinstance(properties, dict)
        for name, spec in properties.items():
            spec = spec if isinstance(spec, dict) else {}
            form_field = _form_field(spec, required=name in required)
            form_field.label = str(name)
            self.fields[str(name)] = form_field
            if name in required and _types(spec)[1]:
                self.null_when_empty.add(str(name))

    def described_fields(self) -> list[tuple[forms.BoundField, SchemaField | None]]:
        """Each input with its property described in words (None: the raw JSON input)."""
        described = {item.name: item for item in schema_fields(self.schema)}
        return [(self[name], described.get(name)) for name in self.fields]

    def tool_input(self) -> Any:
        """The cleaned values as the tool's input; optional fields left empty are omitted (the
        schema's defaults apply), required ones that may be null are null."""
        if self.raw:
            return self.cleaned_data[RAW_FIELD]
        values: dict[str, Any] = {}
        for name, form_field in self.fields.items():
            value = self.cleaned_data.get(name)
            empty = value in (None, "") and not isinstance(form_field, forms.BooleanField)
            if empty and name in self.null_when_empty:
                value = None
            elif empty and not form_field.required:
                continue
            values[name] = value
        return values

    def add_issues(self, issues: Any) -> bool:
        """Put the sandbox's validation issues (zod: `{path, message}`) next to their fields; True if any."""
        if not isinstance(issues, list):
            return False
        for issue in issues:
            if not isinstance(issue, dict):
                continue
            raw_path = issue.get("path")
            path: list[Any] = raw_path if isinstance(raw_path, list) else []
            message = str(issue.get("message") or "Invalid value.")
            name = str(path[0]) if path else None
            if name is not None and name in self.fields:
                rest = "".join(f"[{json.dumps(step)}]" for step in path[1:])
                self.add_error(name, f"{rest}: {message}" if rest else message)
            else:
                self.add_error(None, message)
        return bool(issues)
