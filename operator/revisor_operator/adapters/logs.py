"""JSON logs through structlog, for ours and for kopf's (stdlib) loggers alike.

kopf logs through the standard library; a structlog ``ProcessorFormatter`` on
the root handler renders those records with the same processors as our own,
so every line is one JSON object with a timestamp, level, logger and (for
kopf's per-object loggers) the object's reference. A last processor passes
every string value through :func:`.redaction.redact`: nothing the operator
logs can carry a database password, whoever wrote the message.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from ..decisions.redaction import redact


def _redact_values(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = redact(value)
    return event


def configure(*, json_format: bool = True, level: int = logging.INFO) -> None:
    """Route structlog and stdlib logging to stdout in one format."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_format else structlog.dev.ConsoleRenderer()
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(allow=("k8s_ref",))],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redact_values,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # kopf's per-object loggers also post Events; its debug chatter stays out of INFO logs.
    logging.getLogger("kopf").setLevel(max(level, logging.INFO))
