{{- /*
The properties a DatabaseMigration's spec shares with a DatabaseMigrationSet's
spec.template: every field but database and schema (a set's targets give those).
Defined once, included by both CRDs, so the two cannot drift apart.
*/ -}}
{{- define "revisor.migrationSpecProperties" }}
source:
  type: object
  description: >-
    Where the Alembic revision files come from. Set exactly one of configMap or
    image. A change of the files' content (the ConfigMap's data, the image
    reference) starts a new run, like a spec change.
  x-kubernetes-validations:
    - rule: has(self.configMap) != has(self.image)
      message: set exactly one of source.configMap or source.image
  properties:
    configMap:
      type: object
      description: >-
        A ConfigMap whose keys are revision file names (e.g.
        3c9a1f0b2e44_add_orders.py) and whose values are the files, as made by
        `kubectl create configmap NAME --from-file=versions/`. Mounted read-only
        as the engine's scripts directory. A ConfigMap holds at most 1 MiB; use
        an image for larger histories.
      required: [name]
      properties:
        name:
          type: string
          minLength: 1
          maxLength: 253
          description: Name of the ConfigMap, in this namespace.
    image:
      type: object
      description: >-
        A container image holding the revision files, typically the
        application's own image. An init container from this image copies path
        into a scratch volume the engine reads; the image needs a `cp`.
      required: [image]
      properties:
        image:
          type: string
          minLength: 1
          description: >-
            Image reference; pin a tag or digest (registry/shop:1.4.2) so that
            a new release is a new run.
        path:
          type: string
          default: /migrations
          pattern: ^/
          description: >-
            Absolute path of the directory of revision files inside the image.
            Default /migrations.
        imagePullPolicy:
          type: string
          enum: [IfNotPresent, Always, Never]
          description: Pull policy of the scripts image. Default IfNotPresent.
    envPy:
      type: boolean
      default: false
      description: >-
        Run the scripts' own env.py (as `revisor --env-py`): env.py configures
        Alembic itself (its target_metadata and naming convention, its
        version_table_schema, a SET search_path before configure()) on the
        locked connection the engine hands it in
        config.attributes["connection"]. The engine image (runner.image) must
        then hold everything env.py imports: build one image for the
        application and its migrations (see the image docs). Default false: a
        hermetic run, which says so when the scripts carry an env.py that
        shapes DDL.
target:
  type: string
  default: head
  maxLength: 256
  description: >-
    The revision the database should be at, in Alembic's syntax: head (the
    single head), heads (every branch head), base (nothing applied), a revision
    id or a unique prefix of one, +N / -N (relative to the current revision),
    branch@head, branch@+N, rev@+N or rev+N. The engine moves the database up or
    down as needed. A relative target is an action, not a state: it runs once
    per generation, the revision it reached is recorded in
    status.targetRevision, and new revision files do not make it run again
    (change the spec, or the annotation revisor.dev/retry, to run it again).
    Default head.
  x-kubernetes-validations:
    - rule: self.matches('^(heads?|base|[+-][0-9]+|[A-Za-z0-9_]+([+-][0-9]+)?|[A-Za-z0-9_]+@(head|base|[+-][0-9]+))$')
      message: >-
        target must be head, heads, base, a revision id or prefix, +N, -N,
        branch@head, branch@+N or rev@+N
mode:
  type: string
  enum: [Apply, Plan, DryRun]
  default: Apply
  description: >-
    Apply moves the database to the target. Plan only computes the steps (into
    status.plan) and changes nothing. DryRun runs the steps in a transaction
    that is rolled back (PostgreSQL; scripts needing autocommit are refused).
    Default Apply.
approval:
  type: object
  description: >-
    Two-step apply: with required true, the operator first runs a plan and
    stops in phase AwaitingApproval with the steps and their hash in
    status.plan; setting planHash to that hash applies exactly that plan. If
    the steps have changed since (new revisions, or the database moved), the
    engine refuses and changes nothing, status.plan shows the new plan, and the
    resource awaits approval of its hash again (reason PlanChanged).
  properties:
    required:
      type: boolean
      default: false
      description: Require an approved plan before changing the database. Default false.
    planHash:
      type: string
      pattern: ^[0-9a-f]{8,128}$
      description: >-
        The approved status.plan.hash. Changing it (or the target) makes a new
        run.
onFailure:
  type: string
  enum: [Rollback, Stop]
  default: Rollback
  description: >-
    When a revision fails: Rollback downgrades what this run applied, back to
    the revision it started from (phase RolledBack); Stop leaves the database
    at the last revision that committed (phase Failed). A downgrade that is
    only `pass` runs as a no-op, as in Alembic; a revision with no downgrade()
    (or one that raises) ends the rollback there (reason RollbackIncomplete,
    naming it). On MySQL/MariaDB, a revision that fails after some of its DDL
    committed is never rolled back over (reason PartiallyApplied: a person
    finishes or undoes it, then sets a new revisor.dev/retry). Default
    Rollback.
requireReversible:
  type: boolean
  default: false
  description: >-
    Refuse, before anything runs (reason NotReversible), revisions whose
    downgrade() is missing, raises or is only `pass`: every step of this
    resource can then be undone for real. Default false: empty downgrades run
    as no-ops, as Alembic runs them.
metadata:
  type: string
  pattern: ^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$
  description: >-
    MODULE:ATTRIBUTE of the project's SQLAlchemy MetaData (e.g.
    app.models:Base.metadata), importable in the engine image, as `revisor
    --metadata`: a hermetic run gives Alembic its naming convention, so
    constraints get the names the project's own env.py would give them.
lock:
  type: object
  description: >-
    The database's migration lock (an advisory lock), which keeps two runs,
    from any resource or tool, from migrating the same database at once.
  properties:
    timeoutSeconds:
      type: integer
      minimum: 0
      default: 60
      description: >-
        How long a run waits for the lock before failing with reason
        LockTimeout. Default 60.
timeouts:
  type: object
  description: Durations such as 30s, 10m, 1h30m, 500ms.
  properties:
    statement:
      type: string
      pattern: ^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$
      description: >-
        Longest a single SQL statement may run (PostgreSQL statement_timeout).
        Default: no limit.
    ddlLock:
      type: string
      pattern: ^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$
      description: >-
        Longest a statement waits for a table lock (PostgreSQL lock_timeout), so
        a migration blocked by long transactions fails fast instead of blocking
        the application behind it. Default: no limit.
    ddlLockRetries:
      type: integer
      minimum: 0
      maximum: 100
      default: 0
      description: >-
        Times a revision that waited longer than ddlLock for a table lock is run
        again as a whole, after a growing, jittered pause (never a revision with
        an autocommit block, part of which may have committed). Each retry is
        logged and recorded in revisor_history. Default 0.
    job:
      type: string
      pattern: ^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$
      description: >-
        Longest a run's Job may take (its activeDeadlineSeconds); a run past it
        is stopped and reported as JobFailed. runner.activeDeadlineSeconds, if
        set, wins. Default 30m; at most 24h.
runner:
  type: object
  description: The Job's pod that runs the engine.
  properties:
    image:
      type: string
      description: >-
        The Revisor engine image. Default: the operator's (REVISOR_RUNNER_IMAGE),
        which matches the operator's version.
    imagePullPolicy:
      type: string
      enum: [Always, IfNotPresent, Never]
      description: Pull policy of the engine image. Default IfNotPresent.
    serviceAccountName:
      type: string
      description: >-
        ServiceAccount of the pod, e.g. for cloud database IAM. Default: none
        mounted (the engine does not call the Kubernetes API).
    resources:
      type: object
      description: CPU and memory requests and limits of the engine container.
      properties:
        limits:
          type: object
          description: "Maximum resources, e.g. {memory: 256Mi}."
          additionalProperties:
            x-kubernetes-int-or-string: true
        requests:
          type: object
          description: "Guaranteed resources, e.g. {cpu: 100m, memory: 128Mi}."
          additionalProperties:
            x-kubernetes-int-or-string: true
    nodeSelector:
      type: object
      description: Node labels the pod must run on.
      additionalProperties:
        type: string
    tolerations:
      type: array
      description: Taints the pod tolerates (as pod.spec.tolerations).
      items:
        type: object
        properties:
          key:
            type: string
            description: Taint key; empty with operator Exists matches all.
          operator:
            type: string
            enum: [Exists, Equal]
            description: Exists or Equal (default Equal).
          value:
            type: string
            description: Taint value, with operator Equal.
          effect:
            type: string
            enum: [NoSchedule, PreferNoSchedule, NoExecute]
            description: Taint effect to match; empty matches all.
          tolerationSeconds:
            type: integer
            format: int64
            description: For NoExecute, how long the pod stays after the taint appears.
    backoffLimit:
      type: integer
      minimum: 0
      maximum: 10
      default: 3
      description: >-
        Retries of a run whose pod failed for a reason a retry can fix (lock
        timeout, database unreachable, pod evicted), with Kubernetes' growing
        pause between them (10s, 20s, 40s, ...). Failed migrations and bad
        input are never retried. Default 3, at most 10.
    activeDeadlineSeconds:
      type: integer
      minimum: 1
      maximum: 86400
      description: The Job's deadline in seconds (at most a day); overrides timeouts.job.
versionTable:
  type: object
  description: >-
    Alembic's version table. Change only together with the database: the engine
    reads the current revision from this table.
  properties:
    name:
      type: string
      pattern: ^[A-Za-z_][A-Za-z0-9_$]{0,62}$
      description: Table name. Default alembic_version.
    schema:
      type: string
      pattern: ^[A-Za-z_][A-Za-z0-9_$]{0,62}$
      description: Schema of the table. Default the connection's default schema.
drift:
  type: object
  description: >-
    Schema drift checks. The engine's `revisor drift` compares the live schema
    with the snapshot every run records for the revision it leaves (tables,
    columns, keys, indexes, constraints, views, sequences, enums; Revisor's own
    tables left out), in a Job of its own that only reads, under the migration
    lock, bounded and unprivileged like a migration's. A check runs after every
    successful run, every interval if one is set, and when the annotation
    revisor.dev/drift-check takes a new value. Its answer is status.drift and
    the Drifted condition (True drifted; False none, or accepted; Unknown no
    snapshot to compare with, or the check failed), with an Event when it
    changes and the metric revisor_schema_drifted. Unset: no checks.
  properties:
    interval:
      type: string
      pattern: ^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$
      description: >-
        Also check this long after the last check finished, e.g. 1h; at least
        1m. Default: no scheduled checks (only after runs, and on request).
    policy:
      type: string
      enum: [Report, Block]
      default: Report
      description: >-
        Report only reports drift. Block also checks before every apply and
        refuses the apply while the schema has drifted (phase Pending, reason
        Drifted, no migration Job), since a run over drift would record the
        drifted schema as its revision's. Fix the schema, and the next check
        (interval, or the annotation) lets the run go; or accept the drift with
        acceptedHash. Plans and dry runs are never refused. Default Report.
    acceptedHash:
      type: string
      pattern: ^[0-9a-f]{64}$
      description: >-
        Drift acknowledged: the live schema's hash, status.drift.hash (passed
        as `revisor drift --accept`). While the live schema has exactly this
        hash it is not reported as drift (reason DriftAccepted) and Block lets
        the apply go; any further change is drift again.
    ignore:
      type: array
      maxItems: 50
      description: >-
        fnmatch patterns left out of the comparison (`revisor drift --ignore`,
        case-sensitive): tables (tmp_* and everything on them), columns
        (orders.legacy_*), indexes and constraints by name (ix_*, also
        table.name), views, sequences and enums by name.
      items:
        type: string
        minLength: 1
        maxLength: 253
        description: One pattern, e.g. tmp_*.
baseline:
  type: string
  maxLength: 256
  pattern: ^[A-Za-z0-9_]+(@heads?)?$
  description: >-
    Adopt a database that has no version table (built by
    metadata.create_all(), or by hand): the engine stamps it at this revision,
    the one its schema matches, then migrates on to the target (`revisor apply
    --baseline`); lastRun's message says so. Ignored once the database has a
    version table, so it may stay set. A revision id or a unique prefix of one,
    head, heads or branch@head: head for a database create_all() built from the
    current models. Without it, such a database is refused before anything runs
    (reason NeedsBaseline) when the first revision would create what it has.
  x-kubernetes-validations:
    - rule: self != 'base' && !self.startsWith('base@')
      message: baseline must name the revision the existing schema matches, not base
rollback:
  type: object
  description: >-
    Automatic schema rollback when the application's rollout fails after a
    migration. After an upgrade that applied revisions, the operator follows
    deploymentRef's rollout for window; if it fails (Progressing=False with
    reason ProgressDeadlineExceeded, or new pods not available when the window
    ends), a Job moves the database back to status.previousRevision (base when
    there was none) and the phase becomes RolledBack (reason
    DeployFailedRolledBack). No window opens after an upgrade from base (a first
    install: there is no previous application to serve) unless allowBase is
    true, and a new generation of the spec closes the window of the old one.
    See status.rollout.
  properties:
    deploymentRef:
      type: object
      description: The Deployment whose rollout is watched after a migration.
      required: [name]
      properties:
        name:
          type: string
          description: Name of the Deployment, in this namespace.
    window:
      type: string
      default: 10m
      pattern: ^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$
      description: How long after a migration a failed rollout triggers a rollback; a rollout complete within it closes the window. Default 10m.
    allowBase:
      type: boolean
      default: false
      description: >-
        Let a failed rollout after the first install move the database back to
        base: every table the migration created is dropped. Default false.
{{- end }}
