"""Revisor's Kubernetes operator: ``DatabaseMigration`` resources run the engine as Jobs.

The package is layered so that decisions can be tested without a cluster:

* pure: :mod:`.spec` (parse and validate), :mod:`.naming`, :mod:`.jobs`
  (spec -> Job manifest), :mod:`.observe` (Job + pods -> what happened),
  :mod:`.status` and :mod:`.conditions` (what happened -> status),
  :mod:`.reconcile` (all of the above -> one action), :mod:`.redaction`;
* I/O: :mod:`.kube` is the only module that talks to the Kubernetes API;
  :mod:`.handlers` wires kopf events to :mod:`.reconcile` and :mod:`.kube`;
* runtime: :mod:`.main` (the ``revisor-operator`` command), :mod:`.settings`,
  :mod:`.logs`, :mod:`.metrics`.

From the engine, only :mod:`revisor.contract` may be imported.
"""

GROUP = "revisor.dev"
VERSION = "v1alpha1"
PLURAL = "databasemigrations"
KIND = "DatabaseMigration"
API_VERSION = f"{GROUP}/{VERSION}"
#: The fleet kind (``dbmset``): one template, a child DatabaseMigration per target.
SET_KIND = "DatabaseMigrationSet"
SET_PLURAL = "databasemigrationsets"
