{{/* Names ------------------------------------------------------------ */}}

{{- define "ward.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Base name of every resource: the release name, with "-ward" unless the
release name already contains it. At most 20 characters, so that with
instance names of at most 20 "<fullname>-gateway-<name>" stays within the
52 characters a StatefulSet name may have.
*/}}
{{- define "ward.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 20 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 20 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 20 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ward.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ward.labels" -}}
helm.sh/chart: {{ include "ward.chart" . }}
app.kubernetes.io/name: {{ include "ward.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ward
{{- end }}

{{/* Selector labels of one component: call with (dict "root" $ "component" "core") */}}
{{- define "ward.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ward.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "ward.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ward.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ward.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
An instance name (proxies[].name, gateways[].name, gateway locations) becomes
part of resource names, labels and DNS names: lower-case letters, digits and
"-", at most 20 characters. Call with (dict "what" "gateways[].name" "name" $n).
*/}}
{{- define "ward.checkName" -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,18}[a-z0-9])?$" (toString .name)) }}
{{- fail (printf "%s %q: use 1-20 lower-case letters, digits or '-' (not at either end)" .what (toString .name)) }}
{{- end }}
{{- end }}

{{/*
Deep merge that lets src override dst key by key, including false and ""
(sprig's merge/mergeOverwrite skip such values). Mutates dst; use on a
deepCopy. Call with (dict "dst" $d "src" $s).
*/}}
{{- define "ward.deepMerge" -}}
{{- $dst := .dst }}
{{- range $k, $v := .src }}
{{- if and (kindIs "map" $v) (kindIs "map" (get $dst $k)) }}
{{- $_ := include "ward.deepMerge" (dict "dst" (get $dst $k) "src" $v) }}
{{- else }}
{{- $_ := set $dst $k $v }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod annotations: Prometheus scraping, global and per-component ones.
Call with (dict "root" $ "port" 8000 "extra" .podAnnotations) */}}
{{- define "ward.podAnnotations" -}}
{{- $a := dict }}
{{- if .root.Values.metrics.podAnnotations }}
{{- $_ := set $a "prometheus.io/scrape" "true" }}
{{- $_ := set $a "prometheus.io/port" (toString .port) }}
{{- $_ := set $a "prometheus.io/path" "/metrics" }}
{{- end }}
{{- range $k, $v := .root.Values.podAnnotations }}
{{- $_ := set $a $k (toString $v) }}
{{- end }}
{{- range $k, $v := .extra }}
{{- $_ := set $a $k (toString $v) }}
{{- end }}
{{- if .checksum }}
{{- $_ := set $a "checksum/join-token" .checksum }}
{{- end }}
{{- if $a }}
{{- toYaml $a }}
{{- end }}
{{- end }}

{{/*
Affinity of a component: its own affinity when set, else a pod anti-affinity
preset ("soft": preferred, "hard": required, "": none) spreading the pods
matched by matchLabels over topologyKey.
Call with (dict "affinity" .affinity "preset" .podAntiAffinity "topologyKey" .topologyKey "matchLabels" $labels)
*/}}
{{- define "ward.affinity" -}}
{{- if .affinity }}
{{- toYaml .affinity }}
{{- else if eq (toString .preset) "hard" }}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: {{ .topologyKey }}
      labelSelector:
        matchLabels:
          {{- toYaml .matchLabels | nindent 10 }}
{{- else if eq (toString .preset) "soft" }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: {{ .topologyKey }}
        labelSelector:
          matchLabels:
            {{- toYaml .matchLabels | nindent 12 }}
{{- else if not (eq (toString .preset) "") }}
{{- fail (printf "podAntiAffinity must be soft, hard or \"\", not %q" (toString .preset)) }}
{{- end }}
{{- end }}

{{/* True ("true") when core runs on PostgreSQL. */}}
{{- define "ward.core.postgres" -}}
{{- if or .Values.core.database.url .Values.core.database.existingSecret.name }}true{{ end }}
{{- end }}

{{- define "ward.core.replicas" -}}
{{- if include "ward.core.postgres" . }}{{ .Values.core.replicas }}{{ else }}1{{ end }}
{{- end }}
