{{/* Names and labels. */}}
{{- define "tunegate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tunegate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tunegate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "tunegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tunegate
{{- end -}}

{{/* Selector labels for one component: include "tunegate.selector" (list . "gateway") */}}
{{- define "tunegate.selector" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ include "tunegate.name" $ }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "tunegate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tunegate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tunegate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "tunegate.secretName" -}}
{{- default (include "tunegate.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "tunegate.pool" -}}
{{- if eq .Values.engine.kind "pool" -}}true{{- end -}}
{{- end -}}

{{/* Is a Redis URL given (bundled Redis, external URL, or whatever an existing Secret holds)? */}}
{{- define "tunegate.redisUrl" -}}
{{- if .Values.redis.externalUrl -}}
{{- .Values.redis.externalUrl -}}
{{- else if .Values.redis.enabled -}}
{{- printf "redis://%s-redis:6379/0" (include "tunegate.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "tunegate.vllmHeadless" -}}
{{- printf "%s-vllm-headless" (include "tunegate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The tune manifests and policy files: config-values.yaml (the repository's, when config.bundled)
overlaid by .Values.tunes / .Values.policies; an empty text drops an entry. Returns JSON:
{tunes: {name: text}, policies: {file: text}}.
*/}}
{{- define "tunegate.config" -}}
{{- $tunes := dict -}}
{{- $policies := dict -}}
{{- if .Values.config.bundled -}}
{{- $bundled := .Files.Get "config-values.yaml" | fromYaml -}}
{{- $tunes = merge $tunes (default (dict) $bundled.tunes) -}}
{{- $policies = merge $policies (default (dict) $bundled.policies) -}}
{{- end -}}
{{- range $k, $v := .Values.tunes -}}
{{- $_ := set $tunes $k $v -}}
{{- end -}}
{{- range $k, $v := .Values.policies -}}
{{- $_ := set $policies $k $v -}}
{{- end -}}
{{- $outTunes := dict -}}
{{- range $k, $v := $tunes -}}
{{- if $v -}}
{{- if not (regexMatch "^[A-Za-z0-9][A-Za-z0-9._-]*$" $k) -}}
{{- fail (printf "tunes: %q is not a valid tune name" $k) -}}
{{- end -}}
{{- $_ := set $outTunes $k $v -}}
{{- end -}}
{{- end -}}
{{- $outPolicies := dict -}}
{{- range $k, $v := $policies -}}
{{- if $v -}}
{{- if not (regexMatch "^[A-Za-z0-9][A-Za-z0-9._-]*\\.ya?ml$" $k) -}}
{{- fail (printf "policies: %q is not a YAML file name" $k) -}}
{{- end -}}
{{- $_ := set $outPolicies $k $v -}}
{{- end -}}
{{- end -}}
{{- dict "tunes" $outTunes "policies" $outPolicies | toJson -}}
{{- end -}}

{{/* Checks that fail the install early with a clear message. */}}
{{- define "tunegate.validate" -}}
{{- if not (has .Values.engine.kind (list "inprocess" "pool")) -}}
{{- fail "engine.kind must be inprocess or pool" -}}
{{- end -}}
{{- if and (gt (int .Values.gateway.workers) 1) (ne .Values.engine.kind "pool") -}}
{{- fail "gateway.workers > 1 needs engine.kind=pool (the in-process engine lives in one process)" -}}
{{- end -}}
{{- range $k, $_ := .Values.gateway.env -}}
{{- if has (upper $k) (list "ADMIN_TOKEN" "REDIS_URL" "ENGINE__UPSTREAM_API_KEY") -}}
{{- fail (printf "gateway.env.%s is a secret: set it through `secrets` (or secrets.existingSecret)" $k) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.redis.enabled .Values.redis.externalUrl -}}
{{- fail "set redis.enabled=false when redis.externalUrl is given" -}}
{{- end -}}
{{- $replicas := ternary .Values.autoscaling.maxReplicas .Values.gateway.replicaCount .Values.autoscaling.enabled -}}
{{- if and (gt (int $replicas) 1) (not (include "tunegate.redisUrl" .)) (not .Values.secrets.existingSecret) -}}
{{- fail "several gateway replicas share state through Redis: enable redis, set redis.externalUrl, or give secrets.existingSecret with a redis-url" -}}
{{- end -}}
{{- if and (eq .Values.audit.sink "redis") (not (include "tunegate.redisUrl" .)) (not .Values.secrets.existingSecret) -}}
{{- fail "audit.sink=redis needs Redis" -}}
{{- end -}}
{{- end -}}
