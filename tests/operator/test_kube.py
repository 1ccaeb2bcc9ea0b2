"""The API layer creating a Job: a 409 AlreadyExists is adoption, never a second Job.

The operator can decide to create a Job whose creation already happened: it
died between creating the Job and writing the status, or a Job event and a
timer tick reconciled at once, the second from a listing taken before the
first's Job existed. The Job's name is deterministic, so the API answers
409 AlreadyExists; :meth:`Kube.create_job` reports that as "adopted", and the
reconcile goes on to write the status as if it had created it.

The client here is the real ``kubernetes`` ApiClient, talking to a small
HTTP server that answers as the API server would.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import kopf
import pytest
from kubernetes import client
from revisor_operator.adapters import metrics
from revisor_operator.adapters.kube import Conflict, Kube, KubeError
from revisor_operator.handlers import reconcile

from .factories import job_for, migration
from .fake_kube import FakeKube, runtime
from .test_metrics import sample


class FakeApiServer(ThreadingHTTPServer):
    """Answers every POST with ``answer`` (status, body) and keeps what was posted."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Answer)
        self.answer: tuple[int, Any] = (500, {})
        self.posted: list[tuple[str, Any]] = []


class _Answer(BaseHTTPRequestHandler):
    server: FakeApiServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.posted.append((self.path, json.loads(self.rfile.read(length))))
        status, body = self.server.answer
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    server = FakeApiServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _kube(server: FakeApiServer) -> Kube:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    return Kube(client.ApiClient(configuration))


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


def test_creating_a_new_job_posts_it_once(api: FakeApiServer) -> None:
    job = job_for(name="shop-g1-abcdef")
    api.answer = (201, job)
    assert _kube(api).create_job(job) is True
    [(path, posted)] = api.posted
    assert path == "/apis/batch/v1/namespaces/shop/jobs"
    assert posted["metadata"]["name"] == "shop-g1-abcdef"


def test_a_job_that_already_exists_is_adopted(api: FakeApiServer) -> None:
    api.answer = (409, _status(409, "AlreadyExists", 'jobs.batch "shop-g1-abcdef" already exists'))
    assert _kube(api).create_job(job_for(name="shop-g1-abcdef")) is False


def test_other_409s_and_errors_are_raised(api: FakeApiServer) -> None:
    """Only AlreadyExists means adoption; a Conflict or a refusal is an error to retry."""
    kube = _kube(api)
    api.answer = (409, _status(409, "Conflict", "the object has been modified"))
    with pytest.raises(Conflict):
        kube.create_job(job_for())
    api.answer = (422, _status(422, "Invalid", 'Job.batch "x" is invalid'))
    with pytest.raises(KubeError) as raised:
        kube.create_job(job_for())
    assert (raised.value.status, raised.value.reason) == (422, "Invalid")


def test_a_reconcile_whose_job_exists_unlisted_adopts_it_and_reports_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The listing missed the Job, the create answers AlreadyExists: no second Job, status Running."""
    events: list[str] = []
    monkeypatch.setattr(kopf, "event", lambda _body, **kw: events.append(kw["reason"]))
    in_flight = sample("revisor_jobs_in_flight")
    first = FakeKube(migration())
    decision = reconcile(runtime(first), namespace="shop", name="shop")
    assert decision is not None and decision.action == "create"
    [job] = first.created
    name = job["metadata"]["name"]
    assert sample("revisor_jobs_in_flight") == in_flight + 1

    racing = FakeKube(migration(), unlisted=[job])
    again = reconcile(runtime(racing), namespace="shop", name="shop")

    assert again is not None and again.job is not None and again.job["metadata"]["name"] == name
    assert racing.created == [] and racing.adopted == [name]
    [written] = racing.status_writes
    assert written["phase"] == "Running"
    progressing = next(c for c in written["conditions"] if c["type"] == "Progressing")
    assert progressing["status"] == "True"
    # The creation was announced by the reconcile that created it; adopting it is no news.
    assert events == ["Running"]
    assert sample("revisor_jobs_in_flight") == in_flight + 1, "the same Job, counted once"
    metrics.job_seen(namespace="shop", job=name, active=False)
