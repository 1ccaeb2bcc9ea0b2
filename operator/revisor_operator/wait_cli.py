"""``revisor-operator wait dbm/NAME``: block until a DatabaseMigration is done, or say why not.

``wait dbmset/NAME`` does the same for a DatabaseMigrationSet: it waits for
the whole rollout of the set's current template and scripts
(:mod:`.decisions.fleet.readiness`), and fails at once when the rollout
halts, naming the tenant that failed. ``--apply``, ``--record-release`` and
``--rollback-to-release`` work on sets too (the recorded revision is the one
every target reached; a rollback sets ``spec.template.target``).

Made for deploy pipelines, first of all the Helm hooks of
``charts/revisor-migration``:

* ``--apply FILE`` first server-side applies the ``DatabaseMigration`` in
  FILE (JSON or YAML), so a pre-install/pre-upgrade hook can set the desired
  state and wait for it in one Job;
* ``--rollback-to-release N`` first sets ``spec.target`` to the revision
  recorded for Helm release revision N (a pre-rollback hook);
* ``--record-release N``, once Ready, records the revision reached for
  release N (an annotation on the resource), which is what a later
  ``--rollback-to-release N`` reads.

It exits 0 when the resource is Ready for its current generation *and*
scripts (:mod:`.decisions.readiness`), 1 at once when that state failed — printing the
resource's condition message, which Helm shows with
``helm.sh/hook-output-log-policy: hook-failed`` — and 2 on timeout or on an
API error. It polls (one GET a second): a hook needs nothing more, and
``get`` is all its Role must grant besides ``patch`` for ``--apply``.

Credentials: ``--kubeconfig`` (or ``$KUBECONFIG``) outside a cluster;
inside one, the ServiceAccount token and CA from ``--service-account-dir``
(default the standard mount path; see :meth:`.adapters.kube.Kube.from_service_account`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar, cast

import yaml
from revisor.contract import parse_duration

from . import API_VERSION, KIND, SET_KIND
from .adapters.kube import SERVICE_ACCOUNT_DIR, FleetAPI, Kube, KubeAPI, KubeError
from .decisions.bodies import JsonDict, Migration
from .decisions.fleet.readiness import expected_rollout, judge_set, parsed
from .decisions.helm_releases import RELEASES_ANNOTATION, recorded_releases, with_release
from .decisions.readiness import Progress, judge_wait
from .decisions.reconcile import desired_run
from .decisions.references import ConfigMapCheck, scripts_fingerprint
from .decisions.spec import ConfigMapSource, InvalidSpec, parse_spec

FIELD_MANAGER = "revisor-helm"
POLL_SECONDS = 1.0
#: How long a resource may be missing before ``wait`` says so and stops: long
#: enough for a create that races the wait, short enough for a typo.
NOT_FOUND_GRACE_SECONDS = 10.0
EXIT_READY, EXIT_FAILED, EXIT_TIMEOUT = 0, 1, 2
_KINDS = ("dbm", "databasemigration", "databasemigrations", "databasemigration.revisor.dev")
_SET_KINDS = (
    "dbmset",
    "databasemigrationset",
    "databasemigrationsets",
    "databasemigrationset.revisor.dev",
)


class UsageError(Exception):
    """Arguments that cannot be acted on."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="revisor-operator wait",
        description="Wait until a DatabaseMigration is Ready for its current generation and "
        "scripts; exit 1 with its message as soon as that fails, 2 on timeout.",
    )
    parser.add_argument("resource", help="dbm/NAME (or just NAME), or dbmset/NAME")
    parser.add_argument(
        "-n",
        "--namespace",
        default=None,
        help="namespace (default: the --apply manifest's, else the pod's or the kubeconfig "
        "context's, else default)",
    )
    parser.add_argument("--timeout", default="10m", help="give up after this long (10m)")
    parser.add_argument("--kubeconfig", help="use this kubeconfig instead of in-cluster auth")
    parser.add_argument(
        "--service-account-dir",
        default=os.environ.get("REVISOR_SERVICE_ACCOUNT_DIR", SERVICE_ACCOUNT_DIR),
        help="directory holding the ServiceAccount token and ca.crt "
        f"(REVISOR_SERVICE_ACCOUNT_DIR, default {SERVICE_ACCOUNT_DIR})",
    )
    parser.add_argument("--apply", metavar="FILE", help="server-side apply this manifest first")
    parser.add_argument(
        "--rollback-to-release",
        type=int,
        metavar="N",
        help="first set spec.target to the revision recorded for Helm release N",
    )
    parser.add_argument(
        "--record-release",
        type=int,
        metavar="N",
        help="once Ready, record the revision reached for Helm release N",
    )
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    stream = out or sys.stdout
    try:
        kind, name = _resource(args.resource)
        timeout = parse_duration(args.timeout)
        apply = Path(args.apply) if args.apply else None
        kube, in_pod = _kube(args)
        # As kubectl: -n, else the manifest's own namespace, else the pod's
        # (in a hook Job) or the kubeconfig context's (from a laptop or CI).
        namespace = (
            args.namespace
            or (_manifest_namespace(apply, kind) if apply is not None else "")
            or (_pod_namespace(args.service_account_dir) if in_pod else "")
            or Kube.kubeconfig_namespace()
            or "default"
        )
        if kind == SET_KIND:
            return run_set(
                kube,
                namespace=namespace,
                name=name,
                timeout=timeout,
                apply=apply,
                rollback_to=args.rollback_to_release,
                record=args.record_release,
                say=lambda line: print(line, file=stream, flush=True),
            )
        return run(
            kube,
            namespace=namespace,
            name=name,
            timeout=timeout,
            apply=apply,
            rollback_to=args.rollback_to_release,
            record=args.record_release,
            say=lambda line: print(line, file=stream, flush=True),
        )
    except (UsageError, ValueError) as exc:
        print(f"revisor-operator wait: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    except KubeError as exc:
        print(f"revisor-operator wait: Kubernetes API: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT


def run(
    kube: KubeAPI,
    *,
    namespace: str,
    name: str,
    timeout: float,
    apply: Path | None = None,
    rollback_to: int | None = None,
    record: int | None = None,
    say: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Set the desired state if asked, then poll until Ready, Failed or the timeout."""
    what = f"databasemigration/{name}"
    if apply is not None:
        body = _manifest(apply, namespace=namespace, name=name)
        applied = kube.apply_migration(body, field_manager=FIELD_MANAGER)
        generation = applied.get("metadata", {}).get("generation")
        say(f"{what}: applied {apply.name} (generation {generation}, target {_target(applied)})")
    if rollback_to is not None:
        code = _roll_back_target(kube, namespace=namespace, name=name, release=rollback_to, say=say)
        if code is not None:
            return code
    return _poll(
        what=what,
        listing=f"kubectl get dbm -n {namespace}",
        namespace=namespace,
        read=lambda: kube.get_migration(namespace=namespace, name=name),
        judge=lambda body: judge_wait(body, expected_job=_expected_job(kube, body)),
        on_ready=None
        if record is None
        else lambda body: _record(kube, body, release=record, say=say),
        timeout=timeout,
        say=say,
        clock=clock,
        sleep=sleep,
    )


#: A resource's body as the API adapter returns it (a migration's or a set's).
Body = TypeVar("Body")


def _poll(
    *,
    what: str,
    listing: str,
    namespace: str,
    read: Callable[[], Body | None],
    judge: Callable[[Body], Progress],
    on_ready: Callable[[Body], None] | None,
    timeout: float,
    say: Callable[[str], None],
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> int:
    """Poll ``read`` until ``judge`` says Ready or Failed, or the timeout: the exit code.

    Every change of the message is said once; a resource still missing after
    :data:`NOT_FOUND_GRACE_SECONDS` fails with where to look (``listing``).
    """
    started = clock()
    deadline = started + timeout
    last = ""
    while True:
        body = read()
        if body is None and clock() - started >= NOT_FOUND_GRACE_SECONDS:
            print(
                f"{what} not found in namespace {namespace}: check the name and the "
                f"namespace ({listing})",
                file=sys.stderr,
                flush=True,
            )
            return EXIT_FAILED
        progress = Progress("Waiting", "not found yet") if body is None else judge(body)
        if progress.message != last:
            say(f"{what}: {progress.message}")
            last = progress.message
        if progress.outcome == "Ready" and body is not None:
            if on_ready is not None:
                on_ready(body)
            return EXIT_READY
        if progress.outcome == "Failed":
            print(f"{what} failed: {progress.message}", file=sys.stderr, flush=True)
            return EXIT_FAILED
        if clock() >= deadline:
            print(f"{what}: timed out; last seen: {progress.message}", file=sys.stderr)
            return EXIT_TIMEOUT
        sleep(POLL_SECONDS)


def run_set(
    kube: FleetAPI,
    *,
    namespace: str,
    name: str,
    timeout: float,
    apply: Path | None = None,
    rollback_to: int | None = None,
    record: int | None = None,
    say: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """``run`` for a DatabaseMigrationSet: the whole rollout, every target Ready."""
    what = f"databasemigrationset/{name}"
    if apply is not None:
        manifest = _manifest(apply, namespace=namespace, name=name, kind=SET_KIND)
        applied = kube.apply_set(manifest, field_manager=FIELD_MANAGER)
        generation = applied.get("metadata", {}).get("generation")
        target = ((applied.get("spec") or {}).get("template") or {}).get("target", "head")
        say(f"{what}: applied {apply.name} (generation {generation}, target {target})")
    if rollback_to is not None:
        current = kube.get_set(namespace=namespace, name=name)
        code = _set_rollback_target(kube, current, what=what, release=rollback_to, say=say)
        if code is not None:
            return code
    return _poll(
        what=what,
        listing=f"kubectl get dbmset -n {namespace}",
        namespace=namespace,
        read=lambda: kube.get_set(namespace=namespace, name=name),
        judge=lambda body: judge_set(body, expected=_expected_rollout(kube, body)),
        on_ready=None
        if record is None
        else lambda body: _record_set(kube, body, release=record, say=say),
        timeout=timeout,
        say=say,
        clock=clock,
        sleep=sleep,
    )


def _expected_rollout(kube: FleetAPI, body: JsonDict) -> str | None:
    """The rollout the operator runs for the set's current spec and scripts (None: not yet)."""
    spec = parsed(body)
    if spec is None:
        return None
    config_map: ConfigMapCheck | None = None
    if isinstance(spec.migration.source, ConfigMapSource):
        namespace = (body.get("metadata") or {}).get("namespace", "")
        config_map = kube.check_config_map(namespace=namespace, name=spec.migration.source.name)
    scripts = scripts_fingerprint(spec.migration, config_map)
    return None if scripts is None else expected_rollout(body, scripts=scripts)


def _set_rollback_target(
    kube: FleetAPI,
    body: JsonDict | None,
    *,
    what: str,
    release: int,
    say: Callable[[str], None],
) -> int | None:
    if body is None:
        print(f"{what} not found: nothing to roll back", file=sys.stderr)
        return EXIT_FAILED
    revision = recorded_releases(cast(Migration, body)).get(str(release))
    if revision is None or "," in revision:
        print(
            f"{what}: no single database revision was recorded for Helm release {release} "
            "(did its rollout succeed?); set spec.template.target by hand",
            file=sys.stderr,
        )
        return EXIT_FAILED
    meta = body.get("metadata") or {}
    kube.patch_set(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        patch={"spec": {"template": {"target": revision}}},
    )
    say(f"{what}: template target set to {revision}, as recorded for release {release}")
    return None


def _record_set(
    kube: FleetAPI, body: JsonDict, *, release: int, say: Callable[[str], None]
) -> None:
    meta = body.get("metadata") or {}
    revision = (body.get("status") or {}).get("currentRevision")
    if not revision:
        say(f"databasemigrationset/{meta.get('name')}: its targets are not at one revision; "
            f"nothing recorded for release {release}")  # fmt: skip
        return
    records = with_release(recorded_releases(cast(Migration, body)), release, str(revision))
    kube.patch_set(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        patch={"metadata": {"annotations": {RELEASES_ANNOTATION: json.dumps(records)}}},
    )
    say(f"databasemigrationset/{meta.get('name')}: recorded {revision} for release {release}")


def _roll_back_target(
    kube: KubeAPI, *, namespace: str, name: str, release: int, say: Callable[[str], None]
) -> int | None:
    migration = kube.get_migration(namespace=namespace, name=name)
    if migration is None:
        print(f"databasemigration/{name} not found: nothing to roll back", file=sys.stderr)
        return EXIT_FAILED
    revision = recorded_releases(migration).get(str(release))
    if revision is None:
        print(
            f"databasemigration/{name}: no database revision was recorded for Helm release "
            f"{release} (did its migration succeed?); set spec.target by hand",
            file=sys.stderr,
        )
        return EXIT_FAILED
    # "base" is recorded as such; several heads are comma-separated and cannot be a target.
    if "," in revision:
        print(
            f"databasemigration/{name}: release {release} left the database at several heads "
            f"({revision}); set spec.target by hand",
            file=sys.stderr,
        )
        return EXIT_FAILED
    kube.patch_migration(namespace=namespace, name=name, patch={"spec": {"target": revision}})
    say(f"databasemigration/{name}: target set to {revision}, as recorded for release {release}")
    return None


def _record(
    kube: KubeAPI, migration: Migration, *, release: int, say: Callable[[str], None]
) -> None:
    meta = migration.get("metadata", {})
    revision = str((migration.get("status") or {}).get("currentRevision") or "base")
    records = with_release(recorded_releases(migration), release, revision)
    kube.patch_migration(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        patch={"metadata": {"annotations": {RELEASES_ANNOTATION: json.dumps(records)}}},
    )
    say(f"databasemigration/{meta.get('name')}: recorded {revision} for release {release}")


def _expected_job(kube: KubeAPI, migration: Migration) -> str | None:
    """The Job the operator runs for the current spec and scripts (None: cannot tell yet)."""
    try:
        spec = parse_spec(migration.get("spec") or {})
    except InvalidSpec:
        return None
    config_map: ConfigMapCheck | None = None
    if isinstance(spec.source, ConfigMapSource):
        namespace = migration.get("metadata", {}).get("namespace", "")
        config_map = kube.check_config_map(namespace=namespace, name=spec.source.name)
    scripts = scripts_fingerprint(spec, config_map)
    if scripts is None:
        return None
    return desired_run(migration, spec, scripts=scripts)[0]


def _load(path: Path, kind: str = KIND) -> JsonDict:
    try:
        loaded: Any = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    if not isinstance(loaded, dict) or loaded.get("kind") != kind:
        raise UsageError(f"{path} is not a {kind} manifest")
    return dict(loaded)


def _manifest_namespace(path: Path, kind: str = KIND) -> str:
    return str((_load(path, kind).get("metadata") or {}).get("namespace") or "")


def _manifest(path: Path, *, namespace: str, name: str, kind: str = KIND) -> JsonDict:
    body = _load(path, kind)
    body.setdefault("apiVersion", API_VERSION)
    meta = dict(body.get("metadata") or {})
    if meta.get("name", name) != name:
        raise UsageError(f"{path} describes {meta.get('name')}, not {name}")
    # Refused rather than overridden, as by `kubectl apply -n`: overriding would create a
    # second resource in a namespace the manifest does not name, and wait for that one.
    if (meta.get("namespace") or namespace) != namespace:
        raise UsageError(f"{path} is for namespace {meta.get('namespace')}, not {namespace}")
    meta.update({"name": name, "namespace": namespace})
    body["metadata"] = meta
    return body


def _target(migration: Migration) -> str:
    return str((migration.get("spec") or {}).get("target", "head"))


def _resource(resource: str) -> tuple[str, str]:
    """(kind, name) of ``dbm/NAME``, ``dbmset/NAME`` or a bare ``NAME`` (a DatabaseMigration)."""
    kind, slash, name = resource.partition("/")
    if not resource:
        raise UsageError("no resource named: dbm/NAME or dbmset/NAME")
    if not slash:
        return KIND, resource
    if kind.lower() not in (*_KINDS, *_SET_KINDS):
        raise UsageError(
            f"{resource!r}: only dbm/NAME (DatabaseMigration) or dbmset/NAME "
            "(DatabaseMigrationSet) can be waited for"
        )
    if not name:
        raise UsageError(f"{resource!r}: no name")
    return (SET_KIND if kind.lower() in _SET_KINDS else KIND), name


def _kube(args: argparse.Namespace) -> tuple[Kube, bool]:
    """The client, and whether it speaks as the pod's ServiceAccount."""
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
        return Kube.from_environment(), False
    if Path(args.service_account_dir, "token").exists():
        return Kube.from_service_account(args.service_account_dir), True
    return Kube.from_environment(), False


def _pod_namespace(directory: str) -> str:
    try:
        return Path(directory, "namespace").read_text().strip()
    except OSError:
        return ""
