"""The bundle pages' forms: uploading a bundle file, and the refusals of the upload service put next to the
field they concern."""

from __future__ import annotations

from typing import Any

from django import forms

from agents.models import BUNDLE_SLUG_PATTERN
from lightfast_cloud.errors import LightfastError

# The field names the upload reader expects (agents/uploads.py reads the file from `file`).
FILE_FIELD = "file"
SLUG_FIELD = "slug"


class BundleUploadForm(forms.Form):
    """`Bundle file` and `Slug`: a new bundle, or a new version of the bundle with that slug."""

    file = forms.FileField(
        label="Bundle file",
        help_text="The built bundle: one ES module (.mjs or .js), the Lightfast config its default export.",
        widget=forms.ClearableFileInput(attrs={"accept": ".mjs,.js,.cjs,text/javascript"}),
    )
    slug = forms.RegexField(
        label="Slug",
        regex=BUNDLE_SLUG_PATTERN,
        max_length=64,
        help_text="Lowercase letters, digits and inner hyphens. An existing slug gets a new version.",
        error_messages={"invalid": "Use lowercase letters, digits and inner hyphens, at most 64 characters."},
        widget=forms.TextInput(
            attrs={"autocomplete": "off", "spellcheck": "false", "autocapitalize": "none"}
        ),
    )

    def __init__(self, *args: Any, refused: LightfastError | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The body was refused while it streamed in (too large, a second file): nothing else was read.
        self.refused = refused
        if refused is not None:
            self.fields[SLUG_FIELD].required = False
            self.fields[FILE_FIELD].required = False

    def clean_file(self) -> Any:
        if self.refused is not None:
            raise forms.ValidationError(self.refused.message)
        return self.cleaned_data.get(FILE_FIELD)


def upload_error_field(exc: LightfastError) -> str:
    """The upload form's field a refusal of `bundle_upload` concerns: the slug, else the file."""
    detail = exc.detail if isinstance(exc.detail, dict) else {}
    return SLUG_FIELD if detail.get("field") == SLUG_FIELD else FILE_FIELD


def upload_error_text(exc: LightfastError) -> str:
    """The refusal in words, with the line and column of a syntax error when the message lacks them."""
    detail = exc.detail if isinstance(exc.detail, dict) else {}
    line, column = detail.get("line"), detail.get("column")
    if isinstance(line, int) and "line" not in exc.message:
        where = f"line {line}" + (f", column {column}" if isinstance(column, int) else "")
        return f"{exc.message} ({where})"
    return exc.message
