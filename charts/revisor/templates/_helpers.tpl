{{/* Names and labels shared by every template. */}}

{{- define "revisor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release name, or "<release>-revisor" when it does not say revisor already. */}}
{{- define "revisor.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "revisor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "revisor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "revisor.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "revisor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: revisor
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "revisor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "revisor.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "revisor.runnerServiceAccountName" -}}
{{- default (printf "%s-runner" (include "revisor.fullname" .)) .Values.runner.serviceAccount.name }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest pins it. */}}
{{- define "revisor.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The engine image of Jobs that name none: runner.image, else the operator's image. */}}
{{- define "revisor.runnerImage" -}}
{{- default (include "revisor.image" .) .Values.runner.image }}
{{- end }}

{{/* "true" when the operator serves every namespace (clusterWide), else empty. */}}
{{- define "revisor.clusterwide" -}}
{{- if and .Values.clusterWide .Values.watchNamespaces }}
{{- fail "clusterWide: true serves every namespace and watchNamespaces names some: set one or the other, not both" }}
{{- end }}
{{- if .Values.clusterWide }}true{{ end }}
{{- end }}

{{/* The namespaces served outside cluster-wide mode, as a JSON list:
watchNamespaces, or the release's own namespace. */}}
{{- define "revisor.watchedNamespaces" -}}
{{- if .Values.watchNamespaces }}
{{- toJson .Values.watchNamespaces }}
{{- else }}
{{- list .Release.Namespace | toJson }}
{{- end }}
{{- end }}

{{/* ServiceAccounts a spec may name: policy.serviceAccounts and the chart's runner account. */}}
{{- define "revisor.allowedServiceAccounts" -}}
{{- $accounts := .Values.policy.serviceAccounts }}
{{- if .Values.runner.serviceAccount.create }}
{{- $accounts = append $accounts (include "revisor.runnerServiceAccountName" .) }}
{{- end }}
{{- join "," (uniq $accounts) }}
{{- end }}
