{{/* Full name of the release's objects: the release name, plus the chart name unless it already contains it. */}}
{{- define "llmd-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "llmd-operator.serviceAccountName" -}}
{{- default (include "llmd-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "llmd-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "llmd-operator.labels" -}}
{{ include "llmd-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "llmd-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Leader election: required with more than one replica. */}}
{{- define "llmd-operator.leaderElect" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) -}}
{{- fail "leaderElection.enabled=false needs replicas: 1 (only the leader may reconcile)" -}}
{{- end -}}
{{- if .Values.leaderElection.enabled -}}true{{- else -}}false{{- end -}}
{{- end -}}
