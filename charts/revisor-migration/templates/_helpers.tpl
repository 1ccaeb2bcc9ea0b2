{{/* The DatabaseMigration's name. */}}
{{- define "revisor-migration.name" -}}
{{- default .Release.Name .Values.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of the hook objects (Jobs, RBAC, the desired-state ConfigMap). */}}
{{- define "revisor-migration.hookName" -}}
{{- include "revisor-migration.name" . | trunc 48 | trimSuffix "-" -}}-revisor
{{- end -}}

{{- define "revisor-migration.labels" -}}
app.kubernetes.io/name: revisor-migration
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/*
For the application chart: the revision files as a ConfigMap, labelled
revisor.dev/scripts so that the operator sees a change at once, rendered as a
pre-install/pre-upgrade hook so that the NEW revisions exist before the migration
runs (a normal release resource would be applied only after the pre-upgrade hooks).
It is deliberately NOT a pre-rollback hook: on `helm rollback` the ConfigMap keeps
the newer files, which the downgrade needs. Usage, in a template of your chart:

  {{ include "revisor-migration.scripts" (dict "name" "shop-migrations" "files" (.Files.Glob "migrations/*.py")) }}
*/}}
{{- define "revisor-migration.scripts" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .name }}
  labels:
    app.kubernetes.io/component: migrations
    # The operator watches ConfigMaps with this label: a change starts a run at once
    # (others are noticed at the next resync).
    revisor.dev/scripts: "true"
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "-5"
    helm.sh/hook-delete-policy: before-hook-creation
data:
{{ .files.AsConfig | indent 2 }}
{{- end -}}

{{/* The hook Job's pod, shared by the upgrade and rollback hooks; .args are the wait flags. */}}
{{- define "revisor-migration.jobSpec" -}}
{{- $root := .root -}}
backoffLimit: 0
activeDeadlineSeconds: {{ add 120 (include "revisor-migration.seconds" $root.Values.hook.timeout) }}
template:
  metadata:
    labels:
      {{- include "revisor-migration.labels" $root | nindent 6 }}
      app.kubernetes.io/component: migration-hook
  spec:
    serviceAccountName: {{ include "revisor-migration.hookName" $root }}
    restartPolicy: Never
    securityContext:
      runAsNonRoot: true
      runAsUser: 65532
      seccompProfile: {type: RuntimeDefault}
    containers:
      - name: wait
        image: {{ include "revisor-migration.image" $root }}
        imagePullPolicy: {{ $root.Values.hook.imagePullPolicy }}
        command:
          - revisor-operator
          - wait
          - {{ ternary "dbmset" "dbm" (and $root.Values.fleet $root.Values.fleet.enabled | default false) }}/{{ include "revisor-migration.name" $root }}
          - --namespace
          - {{ $root.Release.Namespace }}
          - --timeout
          - {{ $root.Values.hook.timeout | quote }}
          # Passed explicitly so that it is visible (and mappable) in argv.
          - --service-account-dir
          - {{ $root.Values.hook.serviceAccountDir }}
          {{- range .args }}
          - {{ . | quote }}
          {{- end }}
        {{- with .mount }}
        volumeMounts:
          - {name: desired, mountPath: /etc/revisor/desired, readOnly: true}
        {{- end }}
        securityContext:
          readOnlyRootFilesystem: true
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
        {{- with $root.Values.hook.resources }}
        resources:
          {{- toYaml . | nindent 10 }}
        {{- end }}
    {{- with .mount }}
    volumes:
      - name: desired
        configMap:
          name: {{ include "revisor-migration.hookName" $root }}-desired
    {{- end }}
{{- end -}}

{{/* hook.image, or its repository @ hook.digest when a digest pins it. A tag is
what follows the last ":" after the last "/" (a registry's port is not a tag). */}}
{{- define "revisor-migration.image" -}}
{{- $image := .Values.hook.image -}}
{{- if .Values.hook.digest -}}
{{- $repository := regexReplaceAll "(@sha256:[a-f0-9]+|:[^:/]+)$" $image "" -}}
{{- printf "%s@%s" $repository .Values.hook.digest -}}
{{- else -}}
{{- $image -}}
{{- end -}}
{{- end -}}

{{/* A duration of hours, minutes and seconds (10m, 90s, 1h30m: what values.schema.json
admits for hook.timeout) as whole seconds, for activeDeadlineSeconds. */}}
{{- define "revisor-migration.seconds" -}}
{{- $text := toString . -}}
{{- $h := regexFind "[0-9]+h" $text | trimSuffix "h" | atoi -}}
{{- $m := regexFind "[0-9]+m" $text | trimSuffix "m" | atoi -}}
{{- $s := regexFind "[0-9]+s" $text | trimSuffix "s" | atoi -}}
{{- add (mul $h 3600) (mul $m 60) $s -}}
{{- end -}}
