{{/* The name of every object: the release name, or <release>-habring when it lacks "habring". */}}
{{- define "habring.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "habring.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* On every object's metadata. */}}
{{- define "habring.labels" -}}
app.kubernetes.io/part-of: habring
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* One reference for the webhook and --labeler-image. */}}
{{- define "habring.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default (printf "v%s" .Chart.AppVersion)) -}}
{{- end -}}
{{- end -}}

{{- define "habring.servingSecret" -}}
{{- if .Values.certManager.enabled -}}
{{- printf "%s-serving" (include "habring.fullname" .) -}}
{{- else -}}
{{- required "certManager.enabled=false needs tls.existingSecret: a kubernetes.io/tls Secret for the webhook's Service name (see values.yaml)" .Values.tls.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* webhook.namespaceSelector, or the opt-in label when it is empty. */}}
{{- define "habring.namespaceSelector" -}}
{{- if .Values.webhook.namespaceSelector -}}
{{- toYaml .Values.webhook.namespaceSelector -}}
{{- else -}}
matchExpressions:
- key: habitat.sh/inject
  operator: In
  values: ["enabled"]
{{- end -}}
{{- end -}}
