{{/* Chart name, possibly overridden. */}}
{{- define "clasflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped base name: the release name alone when it already holds the chart name. */}}
{{- define "clasflow.fullname" -}}
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

{{- define "clasflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels. Call with (dict "ctx" $ "component" "minio"). */}}
{{- define "clasflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "clasflow.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "clasflow.labels" -}}
helm.sh/chart: {{ include "clasflow.chart" .ctx }}
{{ include "clasflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: clasflow
{{- end }}

{{/* clasflow image reference. Call with (dict "ctx" $ "kind" "gpu"|"cpu"|"mlflow").
The digest `make release` recorded (files/release.env, NAME=REGISTRY/NAME@sha256:...) when it is
in image.registry and no image.tag is set; otherwise REGISTRY/NAME:TAG. */}}
{{- define "clasflow.image" -}}
{{- $v := .ctx.Values.image -}}
{{- $name := get $v .kind -}}
{{- $registry := $v.registry | trimSuffix "/" -}}
{{- $pinned := "" -}}
{{- if not $v.tag }}
{{- range .ctx.Files.Lines "files/release.env" }}
{{- $kv := splitn "=" 2 (trim .) }}
{{- if and (eq $kv._0 $name) (hasPrefix (printf "%s/%s@sha256:" $registry $name) $kv._1) }}{{ $pinned = $kv._1 }}{{ end }}
{{- end }}
{{- end }}
{{- $pinned | default (printf "%s/%s:%s" $registry $name (default .ctx.Chart.AppVersion $v.tag)) }}
{{- end }}

{{- define "clasflow.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/* The Secret the components read: an existing one, or the one the chart creates. */}}
{{- define "clasflow.credentialsSecret" -}}
{{- if .Values.credentials.existingSecret }}
{{- .Values.credentials.existingSecret }}
{{- else if and (not .Values.minio.enabled) .Values.externalS3.existingSecret }}
{{- .Values.externalS3.existingSecret }}
{{- else }}
{{- .Values.credentials.secretName }}
{{- end }}
{{- end }}

{{/* "true" when the chart creates the credentials Secret (generated keys for the bundled MinIO). */}}
{{- define "clasflow.createSecret" -}}
{{- if and .Values.minio.enabled (not .Values.credentials.existingSecret) }}true{{ end }}
{{- end }}

{{- define "clasflow.minioName" -}}
{{- printf "%s-minio" (include "clasflow.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "clasflow.mlflowName" -}}
{{- printf "%s-mlflow" (include "clasflow.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* S3 endpoint URL the components, MLflow and the bucket Job use. */}}
{{- define "clasflow.s3Endpoint" -}}
{{- if .Values.minio.enabled }}
{{- printf "http://%s.%s.svc.cluster.local:%v" (include "clasflow.minioName" .) .Release.Namespace .Values.minio.service.port }}
{{- else }}
{{- .Values.externalS3.endpoint }}
{{- end }}
{{- end }}

{{- define "clasflow.trackingUri" -}}
{{- if .Values.mlflow.enabled }}
{{- printf "http://%s.%s.svc.cluster.local:%v" (include "clasflow.mlflowName" .) .Release.Namespace .Values.mlflow.service.port }}
{{- else }}
{{- .Values.externalMlflow.trackingUri }}
{{- end }}
{{- end }}

{{- define "clasflow.artifactRoot" -}}
{{- /* the bucket itself: clasflow publishes under <root>/runs/<pipeline run>/ (a root ending in /runs would double it) */ -}}
{{- default (printf "s3://%s" .Values.s3.bucket) .Values.config.artifactRoot }}
{{- end }}

{{/* storageClassName line for a claim. Call with (dict "ctx" $ "class" <per-claim value>). */}}
{{- define "clasflow.storageClass" -}}
{{- $class := default .ctx.Values.storageClass .class }}
{{- if eq $class "-" }}
storageClassName: ""
{{- else if $class }}
storageClassName: {{ $class | quote }}
{{- end }}
{{- end }}

{{/* The pipelineNamespaces other than the release namespace, as a JSON list. */}}
{{- define "clasflow.pipelineNamespaces" -}}
{{- without (.Values.pipelineNamespaces | uniq) .Release.Namespace | toJson }}
{{- end }}

{{/* MinIO's image, pinned by digest. */}}
{{- define "clasflow.minioImage" -}}
{{- printf "%s@%s" .Values.minio.image.repository .Values.minio.image.digest }}
{{- end }}

{{/* Pod template metadata of every pod of the chart: labels and podAnnotations.
Call with (dict "ctx" $ "component" "minio"). */}}
{{- define "clasflow.podMetadata" -}}
labels:
  {{- include "clasflow.labels" . | nindent 2 }}
{{- with .ctx.Values.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The pipeline parameter defaults the upload job writes from these values (JSON). */}}
{{- define "clasflow.pipelineDefaults" -}}
{{- $d := dict "credentials_secret" (include "clasflow.credentialsSecret" .) "config_map" .Values.config.name "experiment" .Values.config.experimentName "gpu_resource" .Values.gpu.resourceName "gpu_node_selector" (.Values.gpu.nodeSelector | default dict) "gpu_tolerations" (.Values.gpu.tolerations | default list) }}
{{- with .Values.imagePullSecrets }}{{ $_ := set $d "image_pull_secret" (first .).name }}{{ end }}
{{- toJson $d }}
{{- end }}

{{/* Pod-level settings shared by every pod of the chart. */}}
{{- define "clasflow.podCommon" -}}
serviceAccountName: {{ include "clasflow.fullname" . }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "clasflow.scheduling" -}}
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
{{- end }}

{{/* S3 credentials as environment variables (never literal values). */}}
{{- define "clasflow.s3CredentialsEnv" -}}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "clasflow.credentialsSecret" . }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "clasflow.credentialsSecret" . }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}

{{/* Values that cannot work together: fail with a message that says what to set. */}}
{{- define "clasflow.validate" -}}
{{- if and .Values.minio.enabled (not (regexMatch "^sha256:[0-9a-f]{64}$" .Values.minio.image.digest)) }}
{{- fail (printf "minio.image.digest is required (sha256:<64 hex>): MinIO no longer publishes community images, so pin the image you mirror or build, e.g. `crane digest %s:%s` prints its digest; or set minio.enabled=false and use externalS3 (see docs/gpu-cluster.md)" .Values.minio.image.repository .Values.minio.image.tag) }}
{{- end }}
{{- if not .Values.minio.enabled }}
{{- if not .Values.externalS3.endpoint }}
{{- fail "minio.enabled=false needs externalS3.endpoint (the URL of your S3/MinIO)" }}
{{- end }}
{{- if not (or .Values.credentials.existingSecret .Values.externalS3.existingSecret) }}
{{- fail "minio.enabled=false needs externalS3.existingSecret (or credentials.existingSecret): a Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" }}
{{- end }}
{{- end }}
{{- $k := .Values.kfp.uploadPipeline }}
{{- if and $k.enabled $k.namespace (not (has $k.namespace .Values.pipelineNamespaces)) }}
{{- fail (printf "kfp.uploadPipeline.namespace=%s is not in pipelineNamespaces: the pipeline's pods would run there without the Secret and ConfigMap; add it to pipelineNamespaces" $k.namespace) }}
{{- end }}
{{- if .Values.mlflow.enabled }}
{{- if eq .Values.mlflow.backendStore.type "postgresql" }}
{{- if not .Values.mlflow.backendStore.postgresql.existingSecret }}
{{- fail "mlflow.backendStore.type=postgresql needs mlflow.backendStore.postgresql.existingSecret (a Secret holding the database URI)" }}
{{- end }}
{{- else if gt (int .Values.mlflow.replicas) 1 }}
{{- fail "mlflow.backendStore.type=sqlite allows one replica only: set mlflow.replicas=1 or use postgresql" }}
{{- end }}
{{- if and .Values.mlflow.ingress.enabled (not .Values.mlflow.ingress.host) }}
{{- fail "mlflow.ingress.enabled=true needs mlflow.ingress.host" }}
{{- end }}
{{- if .Values.mlflow.auth.enabled }}
{{- if not .Values.mlflow.auth.existingSecret }}
{{- fail "mlflow.auth.enabled=true needs mlflow.auth.existingSecret (MLFLOW_AUTH_ADMIN_USERNAME, MLFLOW_AUTH_ADMIN_PASSWORD, MLFLOW_FLASK_SERVER_SECRET_KEY)" }}
{{- end }}
{{- if ne .Values.mlflow.backendStore.type "sqlite" }}
{{- fail "mlflow.auth.enabled=true keeps MLflow's user database on the sqlite volume: use backendStore.type=sqlite, or keep MLflow internal (ingress off, networkPolicy on) behind your own authenticating proxy" }}
{{- end }}
{{- end }}
{{- else if not .Values.externalMlflow.trackingUri }}
{{- fail "mlflow.enabled=false needs externalMlflow.trackingUri" }}
{{- end }}
{{- end }}


{{/*
Credentials never go into plain values: refuse a key that looks like one.
Usage: include "clasflow.refuseCredential" (list "mlflow.extraEnv" $name)
*/}}
{{- define "clasflow.refuseCredential" -}}
{{- $where := index . 0 -}}{{- $key := index . 1 -}}
{{- if regexMatch "(?i)(SECRET|PASSWORD|PASSWD|TOKEN|ACCESS_KEY|CREDENTIAL|PRIVATE_KEY)" $key -}}
{{- fail (printf "%s: %s looks like a credential; keep it in a Secret (credentials.existingSecret, or valueFrom.secretKeyRef in an env entry), never in plain values" $where $key) -}}
{{- end -}}
{{- end -}}
