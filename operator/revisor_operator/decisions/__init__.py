"""The operator's decisions: pure functions of data, no I/O.

Everything here is tested without a cluster. :mod:`.spec` parses a
resource's spec once; :mod:`.references` says which Secret and ConfigMap it
needs and whether what exists will do; :mod:`.jobs` builds the Job a run
needs; :mod:`.observe` reads what a Job and its pods say happened;
:mod:`.status` and :mod:`.conditions` turn that into status; :mod:`.rollout`
judges a Deployment's rollout and :mod:`.rollback` what a rollback window
does about it; :mod:`.reconcile` puts them together into the one next
action. :mod:`.readiness` answers ``revisor-operator wait``'s question.
Nothing here imports kopf or kubernetes (an import-linter contract says so).
"""
