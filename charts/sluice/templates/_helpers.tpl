{{/* Resource name prefix: release-chart, or the release name when it already holds the chart name. */}}
{{- define "sluice.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select: name, instance (and component, added per workload). */}}
{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sluice.labels" -}}
{{ include "sluice.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sluice
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The proxies' label selector, as the operator's --proxy-selector takes it. */}}
{{- define "sluice.proxySelector" -}}
app.kubernetes.io/name={{ include "sluice.name" . }},app.kubernetes.io/instance={{ .Release.Name }},app.kubernetes.io/component=proxy
{{- end -}}

{{- define "sluice.operatorServiceAccount" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (printf "%s-operator" (include "sluice.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sluice.proxyServiceAccount" -}}
{{- if .Values.proxy.serviceAccount.create -}}
{{- default (printf "%s-proxy" (include "sluice.fullname" .)) .Values.proxy.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.proxy.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sluice.tokenSecret" -}}
{{- default (printf "%s-admin-token" (include "sluice.fullname" .)) .Values.adminToken.existingSecret -}}
{{- end -}}

{{/* The Secret (tls.crt, tls.key, ca.crt) of the proxies' admin port. */}}
{{- define "sluice.adminTlsSecret" -}}
{{- default (printf "%s-admin-tls" (include "sluice.fullname" .)) .Values.adminTls.existingSecret -}}
{{- end -}}

{{- define "sluice.configMap" -}}
{{- printf "%s-config" (include "sluice.fullname" .) -}}
{{- end -}}

{{- define "sluice.lease" -}}
{{- printf "%s-operator" (include "sluice.fullname" .) -}}
{{- end -}}

{{/* image: repository[:tag][@digest]; tag defaults to the appVersion. */}}
{{- define "sluice.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag -}}
{{- if .image.digest -}}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Pod-level security context: the restricted Pod Security Standard. */}}
{{- define "sluice.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "sluice.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
