{{/* Names and labels shared by the dfdwatch chart's templates. */}}

{{- define "dfdwatch.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dfdwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dfdwatch.labels" -}}
{{ include "dfdwatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "dfdwatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "dfdwatch.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The ConfigMap holding the approved DFD, or "" when there is none. */}}
{{- define "dfdwatch.dfdConfigMap" -}}
{{- if .Values.dfd.existingConfigMap -}}
{{- .Values.dfd.existingConfigMap -}}
{{- else if .Values.dfd.files -}}
{{- printf "%s-dfd" (include "dfdwatch.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Whether a destination needs the node's log directory. */}}
{{- define "dfdwatch.needsLogDir" -}}
{{- if or (hasPrefix "/" .Values.events.destination) (hasPrefix "/" .Values.alerts.destination) -}}true{{- end -}}
{{- end -}}
