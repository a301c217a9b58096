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


LOCAL_KEY = "a-local-key-for-these-checks-only-0123456789abcdefghijklmnopqrstuvwxyz"


def torch_sees_a_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``manage.py ARGS`` with the real settings, a secret key (an empty one is unset) and ``env``."""
    prefixes = ("PARLEY_", "INFERENCE_", "DATABASE_", "DJANGO_SETTINGS_MODULE")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, "PARLEY_SECRET_KEY": LOCAL_KEY, **env},
        capture_output=True,
        text=True,
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
        (
            "INFERENCE_WEIGHTS",
            "int3",
            "INFERENCE_WEIGHTS must be one of auto, fp32, bf16, int4, int8-head, int8, not 'int3'",
        ),
        ("INFERENCE_DEVICE", "gpu", "INFERENCE_DEVICE must be one of auto, cpu, cuda, not 'gpu'"),
        ("INFERENCE_MODE", "remote", "INFERENCE_MODE=remote needs REDIS_URL"),
    ],
)
def test_a_malformed_setting_stops_start_up_with_its_name(name: str, value: str, message: str) -> None:
    result = manage("check", **{name: value})
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.skipif(torch_sees_a_gpu(), reason="this machine has a GPU")
def test_a_device_or_form_this_machine_cannot_run_stops_start_up_with_the_reason() -> None:
    result = manage("check", INFERENCE_DEVICE="cuda")
    assert result.returncode != 0
    assert "INFERENCE_DEVICE=cuda, but torch sees no CUDA device" in result.stderr
    result = manage("check", INFERENCE_DEVICE="cuda", INFERENCE_WEIGHTS="fp32", INFERENCE_BACKEND="synthetic")
    assert result.returncode == 0, "a model-free engine needs no device"


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


def test_a_missing_secret_key_stops_start_up_unless_debugging() -> None:
    result = manage("check", PARLEY_SECRET_KEY="")
    assert result.returncode != 0
    assert "PARLEY_SECRET_KEY is not set. Set it to a long random value" in result.stderr
    assert manage("check", PARLEY_SECRET_KEY="", PARLEY_DEBUG="true").returncode == 0


def test_the_secret_key_can_come_from_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "secret_key"
    key_file.write_text("from-a-file-" + "k" * 50 + "\n")
    assert (
        setting("SECRET_KEY", PARLEY_SECRET_KEY="", PARLEY_SECRET_KEY_FILE=str(key_file)) == "from-a-file-" + "k" * 50
    )
    missing = manage("check", PARLEY_SECRET_KEY="", PARLEY_SECRET_KEY_FILE=str(tmp_path / "nothing"))
    assert missing.returncode != 0 and f"PARLEY_SECRET_KEY_FILE names {tmp_path / 'nothing'}" in missing.stderr


def test_make_run_makes_a_local_key_once_and_every_step_uses_it(tmp_path: Path) -> None:
    """``make run`` with each ``manage.py`` step recorded instead of run (the key step runs)."""
    log, key_file, stamp = tmp_path / "steps.log", tmp_path / "cache" / "secret_key", tmp_path / "installed"
    stamp.touch()
    python = tmp_path / "python"
    python.write_text(
        f'#!/bin/sh\necho "$PARLEY_SECRET_KEY_FILE|$*" >> {log}\ncase "$1" in -c) exec {sys.executable} "$@";; esac\n'
    )
    python.chmod(0o755)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PARLEY_", "DJANGO_SETTINGS_MODULE"))}
    make = ["make", "-s", "run", f"PY={python}", f"STAMP={stamp}", f"SECRET_KEY_FILE={key_file}"]
    for _ in range(2):
        subprocess.run(make, cwd=ROOT, env=clean, check=True, capture_output=True)
    steps = [line.split("|", 1) for line in log.read_text().splitlines()]
    assert sum(args.startswith("-c") for _, args in steps) == 1, "the key is made on the first run only"
    manage_steps = [args.split()[1] for _, args in steps if args.startswith("manage.py")]
    assert manage_steps[:5] == ["migrate", "collectstatic", "prepare_model", "recover_streams", "serve"]
    assert {path for path, _ in steps} == {str(key_file)}
    assert key_file.stat().st_mode & 0o077 == 0, "only its owner may read it"
    key = key_file.read_text()
    assert len(key) >= 50
    assert setting("SECRET_KEY", PARLEY_SECRET_KEY="", PARLEY_SECRET_KEY_FILE=str(key_file)) == key
    subprocess.run([*make[:2], "model", *make[3:]], cwd=ROOT, env=clean, check=True, capture_output=True)
    assert log.read_text().splitlines()[-1] == f"{key_file}|manage.py prepare_model", "make model (and make test) too"


def test_testserver_is_not_an_allowed_host_outside_tests() -> None:
    assert setting("ALLOWED_HOSTS") == "['127.0.0.1', 'localhost', '[::1]']"
