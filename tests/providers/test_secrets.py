"""The one secret redactor (`saexplain.secrets`), used by the run directory, logs and errors."""

from __future__ import annotations

import pytest

from saexplain.secrets import (
    REDACTED,
    is_secret_name,
    redact,
    redact_secrets,
    register_secret,
    register_secrets_in,
)

KEYS = [
    "sk-abcdefghijklmnop1234",
    "sk-ant-api03-abcdefghijklmnop",
    "sk-proj-abcdefghijklmnop_1234",
    "hf_abcdefghijklmnopqrstuv",
    "AIzaSyA1234567890abcdefghijklmn",
    "gsk_abcdefghijklmnopqrstuvwx",
    "xai-abcdefghijklmnopqrstuvwx",
]


@pytest.mark.parametrize("key", KEYS)
def test_key_shaped_strings_are_masked_in_text(key):
    text = f"request failed (key {key}) at 12:00"
    assert redact(text) == f"request failed (key {REDACTED}) at 12:00"


def test_bearer_tokens_keep_the_scheme_and_lose_the_token():
    assert redact("Authorization: Bearer abc.def-ghi_jkl") == f"Authorization: Bearer {REDACTED}"


@pytest.mark.parametrize(
    "name",
    [
        "api_key",
        "apikey",
        "apiKey",
        "OPENAI_API_KEY",
        "x-api-key",
        "secret",
        "client_secret",
        "password",
        "passwd",
        "auth",
        "authorization",
        "Authorization",
        "token",
        "access_token",
        "hf_token",
        "HF_TOKEN",
        "bearer",
    ],
)
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name", ["model", "max_tokens", "bos_token", "pad_token", "author", "tokenizer", "n_tokens"]
)
def test_ordinary_names(name):
    assert not is_secret_name(name)


def test_settings_named_token_and_nested_keys_are_masked():
    config = {
        "model": "gpt-4o-mini",
        "explainer_model": {
            "provider": "thirdparty",
            "settings": {
                "token": "plain-looking-value",
                "api_key": "k",
                "headers": {"Authorization": "Basic dXNlcjpwYXNz"},
                "api_base": "http://host/?key=gsk_abcdefghijklmnopqrstuvwx",
                "max_tokens": 64,
                "empty_secret": "",
            },
        },
        "notes": ["uses xai-abcdefghijklmnopqrstuvwx"],
    }
    out = redact_secrets(config)
    settings = out["explainer_model"]["settings"]
    assert settings["token"] == settings["api_key"] == REDACTED
    assert settings["headers"]["Authorization"] == REDACTED
    assert settings["api_base"] == f"http://host/?key={REDACTED}"
    assert settings["max_tokens"] == 64 and settings["empty_secret"] == ""
    assert out["notes"] == [f"uses {REDACTED}"] and out["model"] == "gpt-4o-mini"
    assert config["explainer_model"]["settings"]["token"] == "plain-looking-value"  # a copy


def test_environment_credentials_and_registered_secrets_are_masked(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "opaque-value-123")
    monkeypatch.setenv("SHORT_TOKEN", "abc")  # too short to mask safely in free text
    register_secret("registered-secret-value")
    text = "saw opaque-value-123 and registered-secret-value and abc"
    assert redact(text) == f"saw {REDACTED} and {REDACTED} and abc"


@pytest.mark.parametrize("name", ["Cookie", "set-cookie", "Proxy-Authorization", "X-Auth-Token"])
def test_header_names_holding_credentials(name):
    assert is_secret_name(name)


def test_secret_values_nested_in_settings_are_registered():
    settings = {
        "params": {
            "extra_headers": {
                "X-Api-Key": "nested-header-value-1",
                "Cookie": "sid=cookie-value-2; theme=dark",
                "Authorization": "Basic basic-credential-3",
                "X-Request-Id": "not-a-secret-value",
            }
        }
    }
    register_secrets_in(settings)
    text = "echo nested-header-value-1 cookie-value-2 basic-credential-3 not-a-secret-value"
    assert redact(text) == f"echo {REDACTED} {REDACTED} {REDACTED} not-a-secret-value"
