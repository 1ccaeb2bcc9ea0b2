"""Nothing the operator writes can carry a database password."""

from __future__ import annotations

import pytest
from revisor_operator.decisions.redaction import redact, shorten

CANARY = "Canary-s3cr3t-7f1e"


@pytest.mark.parametrize(
    "text",
    [
        f"could not connect to postgresql+psycopg://app:{CANARY}@db:5432/shop",
        f"mysql://root:{CANARY}@10.0.0.1/app?charset=utf8 refused",
        f"FATAL: password authentication failed; password={CANARY} user=app",
        f'{{"password": "{CANARY}", "user": "app"}}',
        f"PGPASSWORD={CANARY} psql",
        f"url postgresql://app:{CANARY}@@weird@db/shop",
    ],
)
def test_passwords_are_masked_wherever_they_appear(text: str) -> None:
    """URL passwords and password=... values are replaced by ***, the rest is kept."""
    masked = redact(text)
    assert CANARY not in masked
    assert "***" in masked


def test_text_without_secrets_is_unchanged() -> None:
    """Revision ids, hosts and users are what a reader needs: they stay."""
    text = "Migrated from 9d2e7a11c0f3 to 3c9a1f0b2e44 on postgresql://app@db:5432/shop"
    assert redact(text) == text


def test_long_messages_keep_both_ends() -> None:
    """A long message keeps its start and its end, where the cause usually is."""
    text = "start " + "x" * 5000 + " the cause"
    short = shorten(text, limit=100)
    assert len(short) <= 100
    assert short.startswith("start")
    assert short.endswith("the cause")


def test_logs_are_json_and_never_carry_a_password(capsys: pytest.CaptureFixture[str]) -> None:
    """Our structlog lines and kopf's stdlib lines alike: one JSON object, password masked."""
    import json
    import logging

    import structlog
    from revisor_operator.adapters import logs

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logs.configure(json_format=True)
        logging.getLogger("kopf.objects").warning("failed on postgresql://u:%s@db/x", CANARY)
        structlog.get_logger("revisor_operator").info("status", message=f"password={CANARY}")
    finally:
        root.handlers, _ = saved
        root.setLevel(saved[1])
        structlog.reset_defaults()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2
    assert CANARY not in json.dumps(lines)
    assert lines[0]["level"] == "warning" and lines[0]["logger"] == "kopf.objects"
