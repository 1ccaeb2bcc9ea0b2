"""Where the operator meets the outside: the Kubernetes API, Prometheus, the log, kopf.

:mod:`.kube` is the only module that talks to the Kubernetes API, and
translates its errors into its own; :mod:`.metrics` serves Prometheus;
:mod:`.logs` renders every log line as JSON; :mod:`.kopf_namespace_race`
patches the one kopf race the operator cannot live with.
"""
