"""An operator coming up while a namespace it serves is created still serves it.

kopf learns the namespaces matching ``--namespace`` patterns in two steps:
a listing, then a watch that starts with a listing of its own. kopf ignores
that second listing, so a namespace created between the two was never
served (``revisor_operator.kopf_fixes`` explains the race and closes it).
This test puts the namespace into exactly that gap, on the real API server:
it holds kopf's namespace watch back until the namespace exists.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kopf._core.reactor import queueing

from tests.cluster.conftest import Kube
from tests.support.kube import wait_for
from tests.support.operator_kit import (
    create,
    create_namespace,
    delete_namespace,
    install_crd,
    migration,
    read,
    ready,
    reason_is,
    running_operator,
    unique_prefix,
)

pytestmark = [pytest.mark.cluster]

PREFIX = unique_prefix("startup")


def test_namespace_created_between_kopfs_two_listings_is_served(
    kube: Kube, request: pytest.FixtureRequest
) -> None:
    """The namespace appears after kopf's first listing, before its watch: it is still served."""
    install_crd(kube)
    created: list[str] = []
    real_watcher = queueing.watcher

    async def watcher_after_a_new_namespace(*, resource: Any, **kwargs: Any) -> None:
        if resource.plural == "namespaces" and not created:
            # kopf's observer has listed the namespaces; its watch has not listed them yet.
            name = await asyncio.to_thread(create_namespace, kube, PREFIX, request.node.name)
            created.append(name)
        await real_watcher(resource=resource, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(queueing, "watcher", watcher_after_a_new_namespace)
        with running_operator(kube, f"{PREFIX}-*"):
            wait_for(lambda: created, bool, timeout=60, what="kopf's namespace watch to start")
            ns = created[0]
            try:
                create(kube, ns, migration("app"))
                served = wait_for(
                    lambda: read(kube, ns, "app"),
                    reason_is("ConfigMapNotFound"),
                    timeout=30,
                    what=f"the operator to serve {ns}, created during its startup",
                )
                assert ready(served)["status"] == "False"
            finally:
                delete_namespace(kube, ns)
