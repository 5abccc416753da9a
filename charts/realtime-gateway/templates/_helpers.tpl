{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "realtime-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: <release>-<chart> unless the release name already contains the chart name.
*/}}
{{- define "realtime-gateway.fullname" -}}
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

{{/*
Name of the built-in Redis objects (kept under 63 characters).
*/}}
{{- define "realtime-gateway.redisName" -}}
{{- printf "%s-redis" (include "realtime-gateway.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{- define "realtime-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: name and instance only. They are immutable on a Deployment, so nothing that
changes between upgrades (version, chart) may ever go here.
*/}}
{{- define "realtime-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "realtime-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Common labels of every object.
*/}}
{{- define "realtime-gateway.labels" -}}
helm.sh/chart: {{ include "realtime-gateway.chart" . }}
{{ include "realtime-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ include "realtime-gateway.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: realtime-gateway
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Built-in Redis: its own name label, so that the gateway's selector (name + instance) never
matches the Redis pod and the other way round.
*/}}
{{- define "realtime-gateway.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-redis" (include "realtime-gateway.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "realtime-gateway.redisLabels" -}}
helm.sh/chart: {{ include "realtime-gateway.chart" . }}
{{ include "realtime-gateway.redisSelectorLabels" . }}
app.kubernetes.io/version: {{ .Values.redis.builtin.image.tag | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: realtime-gateway
app.kubernetes.io/component: redis
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "realtime-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "realtime-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "realtime-gateway.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "realtime-gateway.image" -}}
{{- $repo := .Values.image.repository }}
{{- if .Values.image.registry }}
{{- $repo = printf "%s/%s" .Values.image.registry .Values.image.repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (include "realtime-gateway.imageTag" .) }}
{{- end }}
{{- end }}

{{- define "realtime-gateway.redisImage" -}}
{{- $img := .Values.redis.builtin.image }}
{{- if $img.registry }}
{{- printf "%s/%s:%s" $img.registry $img.repository $img.tag }}
{{- else }}
{{- printf "%s:%s" $img.repository $img.tag }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding the secret settings: the user's existing one or the release's.
*/}}
{{- define "realtime-gateway.secretName" -}}
{{- default (include "realtime-gateway.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/*
The chart renders its own Secret only without existingSecret.
*/}}
{{- define "realtime-gateway.createSecret" -}}
{{- if not .Values.secrets.existingSecret }}true{{ end }}
{{- end }}

{{/*
Seconds between deletion and SIGKILL: a set value, or preStop + ceil(drain) + margin.
*/}}
{{- define "realtime-gateway.preStopSeconds" -}}
{{- int .Values.preStopSleepSeconds }}
{{- end }}

{{- define "realtime-gateway.drainSeconds" -}}
{{- ceil .Values.gateway.drainSeconds | int }}
{{- end }}

{{- define "realtime-gateway.terminationGracePeriodSeconds" -}}
{{- $preStop := include "realtime-gateway.preStopSeconds" . | int }}
{{- $drain := include "realtime-gateway.drainSeconds" . | int }}
{{- $needed := add $preStop $drain }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $needed (int .Values.terminationGraceMarginSeconds) }}
{{- else }}
{{- $set := int .Values.terminationGracePeriodSeconds }}
{{- if le $set $needed }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than preStopSleepSeconds (%d) + gateway.drainSeconds (%d) = %d, or live sessions are killed before the drain ends; raise it or leave it null to compute it" $set $preStop $drain $needed) }}
{{- end }}
{{- $set }}
{{- end }}
{{- end }}

{{/*
Checks of value combinations a schema cannot express well; they fail the render with a
message that says what to change.
*/}}
{{- define "realtime-gateway.validate" -}}
{{- $replicasMatter := or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}
{{- if and (eq .Values.redis.mode "embedded") $replicasMatter }}
{{- fail "redis.mode embedded keeps state in one process: it supports one replica only. Set redis.mode to external (production) or builtin (evaluation), or replicaCount to 1 with autoscaling off" }}
{{- end }}
{{- if and (eq .Values.redis.mode "external") (not .Values.secrets.existingSecret) (not .Values.redis.external.url) }}
{{- fail "redis.mode external needs redis.external.url, or secrets.existingSecret with the key secrets.existingSecretKeys.redisUrl" }}
{{- end }}
{{- if and (eq .Values.redis.external.topology "sentinel") (eq .Values.redis.mode "external") (not .Values.redis.external.sentinelMasterName) }}
{{- fail "redis.external.topology sentinel needs redis.external.sentinelMasterName" }}
{{- end }}
{{- if and (not .Values.secrets.existingSecret) .Values.secrets.upstreams (or .Values.secrets.upstreamApiKey .Values.upstream.url) }}
{{- fail "set either secrets.upstreams (several upstreams) or upstream.url/secrets.upstreamApiKey (one upstream), not both" }}
{{- end }}
{{- if and (not .Values.secrets.existingSecret) .Values.upstream.url (not .Values.secrets.upstreamApiKey) }}
{{- fail "upstream.url needs secrets.upstreamApiKey (or secrets.existingSecret with the key secrets.existingSecretKeys.upstreamApiKey)" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (lt (int .Values.autoscaling.maxReplicas) (int .Values.autoscaling.minReplicas)) }}
{{- fail "autoscaling.maxReplicas must be at least autoscaling.minReplicas" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (kindIs "invalid" .Values.autoscaling.targetCPUUtilizationPercentage) (not .Values.autoscaling.liveSessions.enabled) }}
{{- fail "autoscaling needs at least one metric: targetCPUUtilizationPercentage or liveSessions.enabled" }}
{{- end }}
{{- end }}
