"""Encryption at rest for organization secrets: Fernet keys derived from SECRET_KEY (and its fallbacks)."""

from __future__ import annotations

import base64
import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

# Domain separation: the same SECRET_KEY also signs sessions; this key serves only secrets at rest.
_HKDF_INFO = b"lightfast-cloud organization secrets v1"


class SecretUnreadable(Exception):
    """A stored secret cannot be decrypted (SECRET_KEY changed without a fallback, or the row was altered)."""


def _fernet_for(secret_key: str) -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
        secret_key.encode()
    )
    return Fernet(base64.urlsafe_b64encode(derived))


@functools.cache
def _box(secret_key: str, fallbacks: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([_fernet_for(secret_key), *(_fernet_for(key) for key in fallbacks)])


def _current_box() -> MultiFernet:
    return _box(settings.SECRET_KEY, tuple(getattr(settings, "SECRET_KEY_FALLBACKS", ()) or ()))


def secret_encrypt(value: str) -> str:
    """The Fernet token (authenticated AES) of `value`, as text for a database column."""
    return _current_box().encrypt(value.encode()).decode("ascii")


def secret_decrypt(token: str) -> str:
    """The value of a token made by `secret_encrypt`; raises SecretUnreadable."""
    try:
        return _current_box().decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeError) as exc:
        raise SecretUnreadable("stored secret cannot be decrypted with SECRET_KEY or its fallbacks") from exc
