"""Credentials at rest: encrypted with Fernet (AES-128-CBC + HMAC-SHA256), keys rotated with MultiFernet.

`CREDENTIALS_KEYS` lists Fernet keys, newest first: the first encrypts, every one decrypts, so a
new key is rolled in by putting it first (old ciphertexts still read) and `credentials_rotate`
re-encrypts a value under it; the old key is dropped once nothing uses it. Without keys (a
development machine) one is derived from `SECRET_KEY`, so `make run` needs no set-up; production
sets its own (`python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`).

Core: imports no app. What stores credentials (a connection's tokens) calls these on the way in
and out, so a database dump shows ciphertext, never a token.
"""

from __future__ import annotations

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

__all__ = ["CredentialsError", "credentials_decrypt", "credentials_encrypt", "credentials_rotate"]


class CredentialsError(Exception):
    """A stored value no configured key can read (a key was dropped too early, or it was altered)."""


def _derived_key(secret: str) -> bytes:
    return base64.urlsafe_b64encode(hashlib.sha256(b"syncroot-credentials:" + secret.encode()).digest())


@cache
def _fernet(keys: tuple[str, ...], secret: str) -> MultiFernet:
    material = [key.encode() for key in keys if key] or [_derived_key(secret)]
    try:
        return MultiFernet([Fernet(key) for key in material])
    except ValueError as exc:  # a key that is not 32 url-safe base64-encoded bytes
        raise CredentialsError(f"CREDENTIALS_KEYS holds an invalid Fernet key: {exc}") from None


def _current() -> MultiFernet:
    return _fernet(tuple(settings.CREDENTIALS_KEYS), settings.SECRET_KEY)


def credentials_encrypt(plaintext: str) -> str:
    """Ciphertext (text, url-safe) of `plaintext` under the newest key."""
    return _current().encrypt(plaintext.encode()).decode()


def credentials_decrypt(ciphertext: str) -> str:
    """The plaintext, whichever configured key encrypted it. Raises CredentialsError."""
    try:
        return _current().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise CredentialsError("stored credentials cannot be decrypted with the configured keys") from None


def credentials_rotate(ciphertext: str) -> str:
    """The same plaintext encrypted under the newest key (for a re-encryption pass after a key change)."""
    try:
        return _current().rotate(ciphertext.encode()).decode()
    except InvalidToken:
        raise CredentialsError("stored credentials cannot be decrypted with the configured keys") from None
