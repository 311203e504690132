"""A tool's JSON Schema as words and as a form (dashboard/schema_forms.py): each property's field, the input
the cleaned form makes, the sandbox's validation issues put next to their field."""

from __future__ import annotations

from typing import Any

from django import forms

from dashboard.schema_forms import RAW_FIELD, ToolInputForm, schema_fields

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "description": "City name"},
        "days": {"type": "integer", "minimum": 1, "maximum": 14, "default": 3},
        "ratio": {"type": "number"},
        "metric": {"type": "boolean"},
        "level": {"enum": [1, 2, 3]},
        "note": {"type": ["string", "null"]},
        "where": {
            "type": "object",
            "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
            "required": ["lat"],
        },
    },
    "required": ["city", "days", "level", "note"],
}


def form(data: dict[str, str] | None = None) -> ToolInputForm:
    return ToolInputForm(
        {f"input-{key}": value for key, value in data.items()} if data else None, schema=SCHEMA
    )


def test_each_property_is_described_in_words() -> None:
    described = {field.name: field for field in schema_fields(SCHEMA)}
    assert (described["city"].kind, described["city"].required) == ("text", True)
    assert (
        described["city"].constraints == ("at least 1 character",)
        and described["city"].description == "City name"
    )
    assert described["days"].kind == "whole number" and described["days"].constraints == (
        "at least 1",
        "at most 14",
    )
    assert described["days"].default == "3"
    assert described["level"].kind == "one of 1, 2, 3" and described["metric"].kind == "true or false"
    assert described["where"].kind == "object" and not described["where"].required
    assert [(child.name, child.required) for child in described["where"].children] == [
        ("lat", True),
        ("lon", False),
    ]
    assert schema_fields({"type": "string"}) == []


def test_each_property_gets_the_field_of_its_type() -> None:
    fields = form().fields
    assert isinstance(fields["city"], forms.CharField) and fields["city"].required
    assert isinstance(fields["days"], forms.IntegerField) and fields["days"].initial == 3
    assert isinstance(fields["ratio"], forms.FloatField) and not fields["ratio"].required
    assert isinstance(fields["metric"], forms.BooleanField) and not fields["metric"].required
    assert isinstance(fields["level"], forms.TypedChoiceField)
    assert [value for value, _ in fields["level"].choices] == ["1", "2", "3"]  # type: ignore[attr-defined]
    assert isinstance(fields["note"], forms.CharField) and not fields["note"].required  # null is allowed
    assert isinstance(fields["where"], forms.JSONField)
    assert [field.label for field in fields.values()] == list(SCHEMA["properties"])


def test_the_cleaned_form_is_the_tool_input() -> None:
    filled = form({"city": "Paris", "days": "5", "level": "2", "metric": "on", "where": '{"lat": 48.9}'})
    assert filled.is_valid(), filled.errors
    # Empty optional fields are left out (the schema's defaults apply), an empty required one that may be
    # null is null; a boolean is always sent.
    assert filled.tool_input() == {
        "city": "Paris",
        "days": 5,
        "metric": True,
        "level": 2,
        "note": None,
        "where": {"lat": 48.9},
    }


def test_the_server_refuses_what_the_schema_refuses_next_to_the_field() -> None:
    refused = form({"city": "", "days": "40", "level": "7", "where": "{not json"})
    assert not refused.is_valid()
    assert set(refused.errors) == {"city", "days", "level", "where"}
    assert "less than or equal to 14" in refused.errors["days"][0]


def test_the_sandbox_issues_go_next_to_their_field() -> None:
    filled = form({"city": "Paris", "days": "5", "level": "2"})
    assert filled.is_valid()
    issues = [
        {"path": ["city"], "message": "Unknown city"},
        {"path": ["where", "lat"], "message": "Required"},
        {"path": [], "message": "Too many calls"},
    ]
    assert filled.add_issues(issues)
    assert filled.errors["city"] == ["Unknown city"]
    assert filled.errors["where"] == ['["lat"]: Required']
    assert filled.non_field_errors() == ["Too many calls"]
    assert not form().add_issues("not a list")


def test_a_schema_that_is_not_an_object_is_one_json_input() -> None:
    raw = ToolInputForm(
        {f"input-{RAW_FIELD}": "[1, 2]"}, schema={"type": "array", "items": {"type": "number"}}
    )
    assert list(raw.fields) == [RAW_FIELD] and raw.fields[RAW_FIELD].label == "Input (JSON)"
    assert raw.is_valid() and raw.tool_input() == [1, 2]
