"""How Revisor's sessions reach a server: connect timeout and TCP keepalives.

Stdlib only, so that the quick answer of a run with nothing to do
(:mod:`revisor.at_target`, psycopg without SQLAlchemy) opens its session as
every other run does (:mod:`revisor.connection`).
"""

from __future__ import annotations

from typing import Any

CONNECT_TIMEOUT_SECONDS = 10
#: TCP keepalives, both ends: a dead peer is noticed after about a minute
#: (30 s idle, then 3 probes 10 s apart) instead of the kernel's two hours.
#: The server side (set per session in :mod:`revisor.dialects`) is what frees
#: the advisory lock of a runner whose node vanished: until the server gives
#: up on the connection, the session and its lock live on.
KEEPALIVE_IDLE_SECONDS = 30
KEEPALIVE_INTERVAL_SECONDS = 10
KEEPALIVE_COUNT = 3
#: The name sessions give themselves (``pg_stat_activity.application_name``).
APPLICATION_NAME = "revisor"


def libpq_options() -> dict[str, Any]:
    """psycopg's (libpq's) connection parameters, sync and async alike.

    libpq's own keepalives notice a vanished server.
    """
    return {
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "keepalives": 1,
        "keepalives_idle": KEEPALIVE_IDLE_SECONDS,
        "keepalives_interval": KEEPALIVE_INTERVAL_SECONDS,
        "keepalives_count": KEEPALIVE_COUNT,
        "application_name": APPLICATION_NAME,
    }
