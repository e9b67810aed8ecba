{{/* Names, labels and the pod parts every component shares. */}}

{{- define "rebound.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's objects: include "rebound.componentName" (list . "consumer") */}}
{{- define "rebound.componentName" -}}
{{- printf "%s-%s" (include "rebound.fullname" (index . 0)) (index . 1) -}}
{{- end -}}

{{- define "rebound.selectorLabels" -}}
app.kubernetes.io/name: {{ (index . 0).Chart.Name }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "rebound.labels" -}}
{{ include "rebound.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" (index . 0).Chart.Name (index . 0).Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ (index . 0).Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ (index . 0).Release.Service }}
app.kubernetes.io/part-of: rebound
{{- end -}}

{{- define "rebound.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The consumer's sink is SQLite: one writer, so a single-replica StatefulSet with a volume. */}}
{{- define "rebound.consumerIsSqlite" -}}
{{- if and (not .Values.consumer.sink.existingSecret.name) (hasPrefix "sqlite://" .Values.consumer.sink.url) -}}true{{- end -}}
{{- end -}}

{{- define "rebound.consumerMaxReplicas" -}}
{{- if gt (int .Values.consumer.autoscaling.maxReplicas) 0 -}}
{{- .Values.consumer.autoscaling.maxReplicas -}}
{{- else -}}
{{- .Values.topics.create.partitions -}}
{{- end -}}
{{- end -}}

{{/* Environment of every rebound binary: Kafka, logging, tracing. */}}
{{- define "rebound.commonEnv" -}}
- name: REBOUND_BROKERS
  value: {{ .Values.kafka.brokers | quote }}
{{- if .Values.kafka.config }}
- name: REBOUND_KAFKA_CONFIG
  value: {{ include "rebound.kafkaConfig" . | quote }}
{{- end }}
{{- if .Values.kafka.configFileSecret.name }}
- name: REBOUND_KAFKA_CONFIG_FILE
  value: /etc/rebound/kafka/{{ .Values.kafka.configFileSecret.key }}
{{- end }}
- name: REBOUND_LOG_FORMAT
  value: {{ .Values.log.format | quote }}
- name: RUST_LOG
  value: {{ .Values.log.level | quote }}
{{- end -}}

{{/* -X properties as REBOUND_KAFKA_CONFIG: KEY=VALUE;KEY=VALUE, in key order. */}}
{{- define "rebound.kafkaConfig" -}}
{{- $pairs := list -}}
{{- range $key, $value := .Values.kafka.config -}}
{{- if contains ";" (toString $value) -}}
{{- fail (printf "kafka.config.%s contains ';', the separator of REBOUND_KAFKA_CONFIG: put it in kafka.configFileSecret" $key) -}}
{{- end -}}
{{- $pairs = append $pairs (printf "%s=%s" $key (toString $value)) -}}
{{- end -}}
{{- join ";" $pairs -}}
{{- end -}}

{{/* Tracing and the operational endpoints of a long-running service:
     include "rebound.serviceEnv" (dict "root" $ "serviceName" "rebound-consumer") */}}
{{- define "rebound.serviceEnv" -}}
- name: REBOUND_METRICS_LISTEN
  value: "0.0.0.0:{{ .root.Values.metricsPort }}"
- name: OTEL_SERVICE_NAME
  value: {{ .serviceName | quote }}
{{- with .root.Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with .root.Values.tracing.sampler }}
- name: OTEL_TRACES_SAMPLER
  value: {{ . | quote }}
{{- end }}
{{- with .root.Values.tracing.samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{- define "rebound.topologyEnv" -}}
- name: REBOUND_TIERS
  value: {{ join "," .Values.topics.tiers | quote }}
- name: REBOUND_DLQ_TOPIC
  value: {{ .Values.topics.dlq | quote }}
{{- with .Values.topics.prefix }}
- name: REBOUND_TOPIC_PREFIX
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* A component's own env map and EnvVar list, after the chart's: the last of a name wins. */}}
{{- define "rebound.extraEnv" -}}
{{- range $name, $value := .env }}
- name: {{ $name }}
  value: {{ toString $value | quote }}
{{- end }}
{{- with .extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "rebound.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.configFileSecret.name }}
- name: kafka-config
  mountPath: /etc/rebound/kafka
  readOnly: true
{{- end }}
{{- if .Values.kafka.tlsSecret.name }}
- name: kafka-tls
  mountPath: {{ .Values.kafka.tlsSecret.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "rebound.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .Values.kafka.configFileSecret.name }}
- name: kafka-config
  secret:
    secretName: {{ .Values.kafka.configFileSecret.name }}
    items:
      - key: {{ .Values.kafka.configFileSecret.key }}
        path: {{ .Values.kafka.configFileSecret.key }}
{{- end }}
{{- if .Values.kafka.tlsSecret.name }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tlsSecret.name }}
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by every component. */}}
{{- define "rebound.podSpecCommon" -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Probes on the operational endpoints: include "rebound.probes" (dict "root" $ "port" "metrics") */}}
{{- define "rebound.probes" -}}
{{- $probes := .root.Values.probes -}}
startupProbe:
  httpGet:
    path: /healthz
    port: {{ .port }}
  periodSeconds: {{ $probes.startup.periodSeconds }}
  failureThreshold: {{ $probes.startup.failureThreshold }}
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ .port }}
  periodSeconds: {{ $probes.liveness.periodSeconds }}
  timeoutSeconds: {{ $probes.liveness.timeoutSeconds }}
  failureThreshold: {{ $probes.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ .port }}
  periodSeconds: {{ $probes.readiness.periodSeconds }}
  timeoutSeconds: {{ $probes.readiness.timeoutSeconds }}
  failureThreshold: {{ $probes.readiness.failureThreshold }}
{{- end -}}

{{- define "rebound.podMetadata" -}}
labels:
  {{- include "rebound.selectorLabels" (list .root .component) | nindent 2 }}
  {{- with .root.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .root.Values.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
