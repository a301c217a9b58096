"""API keys: users create, name and revoke the keys that programs use for /v1/."""
