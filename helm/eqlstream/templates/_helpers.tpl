{{/*
Names. A StatefulSet's name stays <= 52 characters: its pods add "-N" and the
controller-revision-hash label adds "-<10 chars>", both within the 63-character label limit.
*/}}
{{- define "eqlstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "eqlstream.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 43 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 43 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 43 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The workload of one stage: (dict "root" $ "component" "ingest|sequence|all"). */}}
{{- define "eqlstream.componentName" -}}
{{- printf "%s-%s" (include "eqlstream.fullname" .root) .component -}}
{{- end -}}

{{- define "eqlstream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "eqlstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eqlstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "eqlstream.labels" -}}
helm.sh/chart: {{ include "eqlstream.chart" . }}
{{ include "eqlstream.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: eqlstream
{{- end -}}

{{/* Labels of one stage's objects: (dict "root" $ "component" ...). */}}
{{- define "eqlstream.componentLabels" -}}
{{ include "eqlstream.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "eqlstream.componentSelectorLabels" -}}
{{ include "eqlstream.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "eqlstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "eqlstream.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The image. Nobody publishes one: without image.repository a release would only ever fail to
pull, so the chart refuses to render and says what to do.
*/}}
{{- define "eqlstream.image" -}}
{{- $repository := required "image.repository is required: the chart ships no image. Build it from the Dockerfile, push it to your registry (docs/deploy.md, \"Build the image\") and set image.repository, e.g. --set image.repository=registry.example.com/security/eqlstream" .Values.image.repository -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The stages this release runs, in the order they are rendered. */}}
{{- define "eqlstream.components" -}}
{{- if eq .Values.mode "all" -}}
all
{{- else -}}
ingest,sequence
{{- end -}}
{{- end -}}

{{/* Where the chart puts things inside the container. */}}
{{- define "eqlstream.dataDir" -}}/var/lib/eqlstream{{- end -}}
{{- define "eqlstream.tlsDir" -}}/etc/eqlstream/kafka-tls{{- end -}}
{{- define "eqlstream.rulesDir" -}}/etc/eqlstream/rules{{- end -}}

{{- define "eqlstream.saslEnabled" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol -}}true{{- end -}}
{{- end -}}

{{- define "eqlstream.tlsEnabled" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") -}}true{{- end -}}
{{- end -}}

{{/*
Consistency checks the schema cannot express (they compare two values): each fails the
render with the value to change.
*/}}
{{- define "eqlstream.validate" -}}
{{- if and (include "eqlstream.saslEnabled" .) (not .Values.kafka.sasl.existingSecret) -}}
{{- fail (printf "kafka.securityProtocol=%s needs kafka.sasl.existingSecret (the Secret holding the SASL password)" .Values.kafka.securityProtocol) -}}
{{- end -}}
{{- if and (include "eqlstream.saslEnabled" .) (not .Values.kafka.sasl.username) -}}
{{- fail (printf "kafka.securityProtocol=%s needs kafka.sasl.username" .Values.kafka.securityProtocol) -}}
{{- end -}}
{{- $tls := .Values.kafka.tls -}}
{{- if and $tls.existingSecret (not (include "eqlstream.tlsEnabled" .)) -}}
{{- fail (printf "kafka.tls.existingSecret is set but kafka.securityProtocol=%s uses no TLS: use SSL or SASL_SSL" .Values.kafka.securityProtocol) -}}
{{- end -}}
{{- if and $tls.existingSecret (not (or $tls.caKey $tls.certificateKey)) -}}
{{- fail "kafka.tls.existingSecret is set but neither kafka.tls.caKey nor kafka.tls.certificateKey names a file in it" -}}
{{- end -}}
{{- if and (not $tls.existingSecret) (or $tls.certificateKey $tls.keyKey $tls.keyPasswordKey) -}}
{{- fail "kafka.tls.certificateKey, keyKey and keyPasswordKey name keys of kafka.tls.existingSecret: set it" -}}
{{- end -}}
{{- if ne (empty $tls.certificateKey) (empty $tls.keyKey) -}}
{{- fail "mutual TLS needs both kafka.tls.certificateKey and kafka.tls.keyKey" -}}
{{- end -}}
{{- if gt (int .Values.config.topicMinInsyncReplicas) (int .Values.config.topicReplicationFactor) -}}
{{- fail (printf "config.topicMinInsyncReplicas=%d exceeds config.topicReplicationFactor=%d: no write to the topics could succeed" (int .Values.config.topicMinInsyncReplicas) (int .Values.config.topicReplicationFactor)) -}}
{{- end -}}
{{- if and .Values.rules.path .Values.rules.files -}}
{{- fail "set rules.path or rules.files, not both" -}}
{{- end -}}
{{- if and .Values.metrics.podMonitor.enabled .Values.metrics.serviceMonitor.enabled -}}
{{- fail "enable metrics.podMonitor or metrics.serviceMonitor, not both: each scrapes every pod" -}}
{{- end -}}
{{- $partitions := int .Values.config.candidatesPartitions -}}
{{- $sequence := .Values.sequence.autoscaling -}}
{{- if and (eq .Values.mode "split") $sequence.enabled (gt (int $sequence.maxReplicaCount) $partitions) -}}
{{- fail (printf "sequence.autoscaling.maxReplicaCount=%d exceeds config.candidatesPartitions=%d: a sequence worker beyond the partition count would sit idle" (int $sequence.maxReplicaCount) $partitions) -}}
{{- end -}}
{{- if and (eq .Values.mode "split") (gt (int .Values.sequence.replicas) $partitions) -}}
{{- fail (printf "sequence.replicas=%d exceeds config.candidatesPartitions=%d: a sequence worker beyond the partition count would sit idle" (int .Values.sequence.replicas) $partitions) -}}
{{- end -}}
{{- if and $sequence.enabled (gt (int $sequence.minReplicaCount) (int $sequence.maxReplicaCount)) -}}
{{- fail "sequence.autoscaling.minReplicaCount exceeds its maxReplicaCount" -}}
{{- end -}}
{{- $ingest := .Values.ingest.autoscaling -}}
{{- if and $ingest.enabled (gt (int $ingest.minReplicaCount) (int $ingest.maxReplicaCount)) -}}
{{- fail "ingest.autoscaling.minReplicaCount exceeds its maxReplicaCount" -}}
{{- end -}}
{{- if and (eq .Values.mode "all") (or $ingest.enabled $sequence.enabled) -}}
{{- fail "mode=all runs both stages in one process: autoscaling is for mode=split (ingest.autoscaling, sequence.autoscaling)" -}}
{{- end -}}
{{- end -}}

{{/* A value as an environment variable: numbers from YAML files arrive as float64 (1e+06). */}}
{{- define "eqlstream.envValue" -}}
{{- if kindIs "float64" . -}}{{ int64 . }}{{- else -}}{{ . }}{{- end -}}
{{- end -}}

{{/* KEDA's name of the SASL mechanism, or nothing without SASL. */}}
{{- define "eqlstream.kedaSasl" -}}
{{- if include "eqlstream.saslEnabled" . -}}
{{- get (dict "PLAIN" "plaintext" "SCRAM-SHA-256" "scram_sha256" "SCRAM-SHA-512" "scram_sha512") .Values.kafka.sasl.mechanism -}}
{{- end -}}
{{- end -}}

{{/* A TriggerAuthentication is rendered when some ScaledObject needs Kafka credentials. */}}
{{- define "eqlstream.kedaAuthNeeded" -}}
{{- $scaled := and (eq .Values.mode "split") (or .Values.ingest.autoscaling.enabled .Values.sequence.autoscaling.enabled) -}}
{{- $secured := or (include "eqlstream.saslEnabled" .) .Values.kafka.tls.existingSecret -}}
{{- if and $scaled $secured -}}true{{- end -}}
{{- end -}}
