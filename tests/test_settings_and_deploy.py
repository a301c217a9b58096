"""Settings come from the environment, fail loudly, and pass Django's deploy checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = {
    "PARLEY_HTTPS": "true",
    "PARLEY_SECRET_KEY": "k3Jq9-zV_0pL2mX8rT4wY6uB1nC5eH7aS0dF2gH4jK6lZ8xC0vB2nM4qW6eR8tY0",
    "PARLEY_ALLOWED_HOSTS": "chat.example.com",
    "DATABASE_URL": "postgresql://root@127.0.0.1:5432/postgres",
}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PARLEY_", "INFERENCE_", "DATABASE_"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True
    )


def test_check_deploy_is_clean_with_production_settings() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_the_development_secret_key() -> None:
    result = manage("check", **{**PRODUCTION, "PARLEY_SECRET_KEY": "parley-dev-only-insecure-key"})
    assert result.returncode != 0
    assert "Set PARLEY_SECRET_KEY" in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("INFERENCE_DEFAULT_MAX_TOKENS", "lots", "INFERENCE_DEFAULT_MAX_TOKENS must be a whole number, not 'lots'"),
        ("INFERENCE_DEFAULT_TEMPERATURE", "9", "INFERENCE_DEFAULT_TEMPERATURE must be between 0.0 and 2.0"),
        ("INFERENCE_DEFAULT_TOP_P", "0", "INFERENCE_DEFAULT_TOP_P must be between 0.01 and 1.0"),
        ("PARLEY_DEBUG", "maybe", "PARLEY_DEBUG must be true or false"),
        ("INFERENCE_MODE", "cloud", "INFERENCE_MODE must be one of local, remote"),
        ("INFERENCE_WEIGHTS", "int4", "INFERENCE_WEIGHTS must be one of auto, fp32, int8-head, int8, not 'int4'"),
        ("INFERENCE_DEVICE", "gpu", "INFERENCE_DEVICE must be one of auto, cpu, cuda, not 'gpu'"),
        ("INFERENCE_MODE", "remote", "INFERENCE_MODE=remote needs REDIS_URL"),
    ],
)
def test_a_malformed_setting_stops_start_up_with_its_name(name: str, value: str, message: str) -> None:
    result = manage("check", **{name: value})
    assert result.returncode != 0
    assert message in result.stderr


def setting(name: str, **env: str) -> str:
    code = f"from django.conf import settings; print(settings.{name})"
    return manage("shell", "--verbosity", "0", "-c", code, **env).stdout.strip()


def test_the_inference_device_is_auto_unless_set() -> None:
    assert setting("INFERENCE_DEVICE") == "auto"
    assert setting("INFERENCE_DEVICE", INFERENCE_DEVICE="cpu") == "cpu"


def test_only_sampling_defaults_set_in_the_environment_override_a_models_own() -> None:
    assert setting("INFERENCE_SAMPLING_OVERRIDES") == "{}"
    overrides = setting("INFERENCE_SAMPLING_OVERRIDES", INFERENCE_DEFAULT_TEMPERATURE="0.5")
    assert overrides == "{'temperature': 0.5}"
