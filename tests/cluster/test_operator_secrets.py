"""A database password never leaves its Secret: not into status, Events, logs or Job specs.

A PostgreSQL role is created with a recognisable password (the canary) and
its URL put in a Secret; three resources use it: one that succeeds, one whose
target is unknown (a failed Job) and one pointed at a closed port
(DatabaseUnreachable, where drivers like to echo connection strings). Then
everything the operator wrote is searched for the canary: each resource's
status, every Event in the namespace, the Jobs and pods, the pods' logs, and
the operator's own output (kopf's lines and our structlog JSON).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import structlog
from kubernetes import client
from revisor_operator.adapters import logs

from tests.cluster.conftest import Kube
from tests.support.operator_kit import (
    HEAD,
    REVS,
    create,
    create_config_map,
    create_secret,
    listed,
    migration,
    read,
    ready,
    running_operator,
    settled,
)
from tests.support.postgres import PostgresServer, free_port

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]


@pytest.fixture
def canary_url(postgres_server: PostgresServer) -> Iterator[tuple[str, str]]:
    """(password, URL) of a fresh role owning a fresh database."""
    suffix = uuid.uuid4().hex[:10]
    role, database, password = f"canary_{suffix}", f"canary_{suffix}", f"Canary-Pw-{suffix}"
    with psycopg.connect(postgres_server.libpq(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute(f'CREATE DATABASE "{database}" OWNER {role}')
    host, port = postgres_server.host, postgres_server.port
    yield password, f"postgresql+psycopg://{role}:{password}@{host}:{port}/{database}"
    with psycopg.connect(postgres_server.libpq(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f"DROP ROLE IF EXISTS {role}")


#: The ``ns`` fixture (tests/cluster/conftest.py) names namespaces after it.
PREFIX = "canary"


@contextlib.contextmanager
def json_logs() -> Iterator[io.StringIO]:
    """The operator's logs as production writes them (:func:`revisor_operator.adapters.logs.configure`)."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buffer = io.StringIO()
    try:
        logs.configure(json_format=True)
        for handler in root.handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(buffer)
        yield buffer
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        structlog.reset_defaults()


def _pod_logs(kube: Kube, namespace: str) -> str:
    core = client.CoreV1Api(kube.api)
    return "\n".join(
        core.read_namespaced_pod_log(pod["metadata"]["name"], namespace, container="revisor")
        for pod in listed(kube, "pods", namespace)
    )


def test_password_appears_in_no_status_event_log_or_job(
    kube: Kube, ns: str, canary_url: tuple[str, str]
) -> None:
    """Success, an unknown target and an unreachable database: the canary is nowhere."""
    password, url = canary_url
    closed = url.replace(f":{url.split('@')[1].split('/')[0].split(':')[1]}/", f":{free_port()}/")
    assert password in closed and closed != url
    create_secret(kube, ns, url)
    create_secret(kube, ns, closed, name="closed-db")
    create_config_map(kube, ns, REVS)
    names = ("good", "bad-target", "unreachable")
    with json_logs() as structured, running_operator(kube, ns) as operator:
        create(kube, ns, migration("good"))
        create(kube, ns, migration("bad-target", target="ffffffff"))
        create(kube, ns, migration(
            "unreachable",
            database={"urlSecretRef": {"name": "closed-db", "key": "url"}},
            runner={"backoffLimit": 0},
        ))  # fmt: skip
        results = {name: settled(kube, ns, name) for name in names}
    kopf_output = operator.output

    assert results["good"]["status"]["currentRevision"] == HEAD
    assert ready(results["good"])["reason"] == "Migrated"
    assert ready(results["bad-target"])["reason"] == "InvalidTarget"
    assert ready(results["unreachable"])["reason"] == "DatabaseUnreachable"

    lines = [json.loads(line) for line in structured.getvalue().splitlines() if line.strip()]
    assert any(
        line.get("event") == "job created" and line.get("migration") == "good" for line in lines
    ), "the structlog JSON output was not captured"
    assert kopf_output.strip(), "kopf's output was not captured"

    jobs = listed(kube, "jobs", ns)
    assert len(jobs) == 3
    for job in jobs:
        [container] = job["spec"]["template"]["spec"]["containers"]
        url_env = [e for e in container["env"] if e["name"] == "REVISOR_DATABASE_URL"]
        assert url_env == [
            {
                "name": "REVISOR_DATABASE_URL",
                "valueFrom": {
                    "secretKeyRef": {"name": url_env[0]["valueFrom"]["secretKeyRef"]["name"],
                                     "key": "url"},
                },
            }
        ]  # fmt: skip

    searched: dict[str, Any] = {
        "status": {name: read(kube, ns, name) for name in names},
        "events": listed(kube, "events", ns),
        "jobs": jobs,
        "pods": listed(kube, "pods", ns),
        "pod logs": _pod_logs(kube, ns),
        "structlog": structured.getvalue(),
        "kopf": kopf_output,
    }
    leaks = [where for where, what in searched.items() if password in json.dumps(what)]
    assert leaks == []
    assert len(searched["events"]) >= 3


def test_secret_keys_pointed_at_other_values_show_none_of_them(kube: Kube, ns: str) -> None:
    """secretRef's hostKey at an API token and userKey at the password, the attack a user who
    may create DatabaseMigrations but not read Secrets has: neither value shows anywhere, and
    the unreachable database is named by its Secret."""
    token, password = f"TOKEN-CANARY-{uuid.uuid4().hex}", f"PW-CANARY-{uuid.uuid4().hex[:12]}"
    client.CoreV1Api(kube.api).create_namespaced_secret(
        ns,
        client.V1Secret.model_validate(
            {"metadata": {"name": "db"}, "stringData": {
                "host": "127.0.0.1", "port": "5432", "database": "app", "user": "app",
                "password": password, "apiToken": token}}
        ),
    )  # fmt: skip
    create_config_map(kube, ns, REVS)
    parts = {"name": "db", "hostKey": "apiToken", "userKey": "password"}
    with json_logs() as structured, running_operator(kube, ns) as operator:
        create(kube, ns, migration(
            "app",
            database={"secretRef": parts, "driver": "postgresql+psycopg"},
            runner={"backoffLimit": 0},
        ))  # fmt: skip
        done = settled(kube, ns, "app")
    assert ready(done)["reason"] == "DatabaseUnreachable", done["status"]
    assert f"Secret {ns}/db" in ready(done)["message"], "the database is named by its Secret"
    searched = {
        "status": done,
        "events": listed(kube, "events", ns),
        "pods": listed(kube, "pods", ns),
        "pod logs": _pod_logs(kube, ns),
        "structlog": structured.getvalue(),
        "kopf": operator.output,
    }
    assert structured.getvalue().strip() and operator.output.strip(), "the logs were captured"
    for value in (token, password):
        assert [where for where, what in searched.items() if value in json.dumps(what)] == []
