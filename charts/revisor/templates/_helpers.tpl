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

{{/* Namespaces that get a Role (namespaced mode) and a runner ServiceAccount. */}}
{{- define "revisor.clusterwide" -}}
{{- if empty .Values.watchNamespaces }}true{{ end }}
{{- end }}
