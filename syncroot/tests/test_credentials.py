"""Credentials at rest: ciphertext only, readable under every configured key, rotated to the newest."""

import pytest
from cryptography.fernet import Fernet

from syncroot.credentials import CredentialsError, credentials_decrypt, credentials_encrypt, credentials_rotate

TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"


def test_a_stored_token_is_ciphertext_that_reads_back(settings):
    settings.CREDENTIALS_KEYS = [Fernet.generate_key().decode()]

    stored = credentials_encrypt(TOKEN)

    assert TOKEN not in stored
    assert stored != credentials_encrypt(TOKEN)  # a fresh IV each time: equal tokens do not show
    assert credentials_decrypt(stored) == TOKEN


def test_a_new_key_first_still_reads_the_old_and_rotation_moves_values_to_it(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CREDENTIALS_KEYS = [old]
    stored = credentials_encrypt(TOKEN)

    settings.CREDENTIALS_KEYS = [new, old]
    readable = credentials_decrypt(stored)
    rotated = credentials_rotate(stored)
    settings.CREDENTIALS_KEYS = [new]  # the old key dropped once everything was rotated

    assert readable == TOKEN
    assert credentials_decrypt(rotated) == TOKEN
    with pytest.raises(CredentialsError):
        credentials_decrypt(stored)


def test_without_keys_one_is_derived_from_the_secret_key(settings):
    settings.CREDENTIALS_KEYS = []
    stored = credentials_encrypt(TOKEN)

    settings.SECRET_KEY = "another-secret-key-for-another-deployment-0123456789"

    with pytest.raises(CredentialsError):
        credentials_decrypt(stored)


def test_tampered_values_and_bad_keys_are_refused(settings):
    settings.CREDENTIALS_KEYS = [Fernet.generate_key().decode()]
    stored = credentials_encrypt(TOKEN)
    tampered = stored[:-6] + ("A" if stored[-6] != "A" else "B") + stored[-5:]

    with pytest.raises(CredentialsError):
        credentials_decrypt(tampered)
    settings.CREDENTIALS_KEYS = ["not-a-fernet-key"]
    with pytest.raises(CredentialsError, match="invalid Fernet key"):
        credentials_encrypt(TOKEN)
