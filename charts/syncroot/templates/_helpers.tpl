{{/* Chart name, within the 63 characters Kubernetes allows in names and labels. */}}
{{- define "syncroot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name; the API Service carries it unchanged. */}}
{{- define "syncroot.fullname" -}}
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

{{- define "syncroot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "syncroot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "syncroot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "syncroot.labels" -}}
helm.sh/chart: {{ include "syncroot.chart" . }}
{{ include "syncroot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: syncroot
{{- end -}}

{{- define "syncroot.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Secret every pod reads: the chart's own, or the one named by existingSecret. */}}
{{- define "syncroot.secretName" -}}
{{- default (include "syncroot.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{/* Public names, localhost for the kubelet's probes, and the API Service's in-cluster names. */}}
{{- define "syncroot.allowedHosts" -}}
{{- $svc := include "syncroot.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- $internal := list "localhost" "127.0.0.1" $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) -}}
{{- join "," (uniq (concat (.Values.allowedHosts | default list) $internal)) -}}
{{- end -}}

{{- define "syncroot.csrfTrustedOrigins" -}}
{{- $origins := list -}}
{{- range .Values.allowedHosts -}}
{{- $origins = append $origins (printf "https://%s" .) -}}
{{- end -}}
{{- join "," $origins -}}
{{- end -}}

{{/*
Non-secret environment (ConfigMap data), shared by the ConfigMap and the migration hook's copy.
Empty values are left out so the code's defaults apply.
*/}}
{{- define "syncroot.configData" -}}
DJANGO_ALLOWED_HOSTS: {{ include "syncroot.allowedHosts" . | quote }}
{{- if and .Values.allowedHosts (not (hasKey .Values.env "DJANGO_CSRF_TRUSTED_ORIGINS")) }}
DJANGO_CSRF_TRUSTED_ORIGINS: {{ include "syncroot.csrfTrustedOrigins" . | quote }}
{{- end }}
{{- range $key, $value := .Values.env }}
{{- if and (ne $key "DJANGO_ALLOWED_HOSTS") (ne (toString $value) "") }}
{{ $key }}: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* DJANGO_SECRET_KEY: the value given, else the one already installed, else a new random one. */}}
{{- define "syncroot.secretKey" -}}
{{- if .Values.secretEnv.DJANGO_SECRET_KEY -}}
{{- .Values.secretEnv.DJANGO_SECRET_KEY -}}
{{- else -}}
{{- $installed := lookup "v1" "Secret" .Release.Namespace (include "syncroot.fullname" .) | default dict -}}
{{- $encoded := dig "data" "DJANGO_SECRET_KEY" "" $installed -}}
{{- if $encoded -}}
{{- b64dec $encoded -}}
{{- else -}}
{{- randAlphaNum 50 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Secret data (base64), shared by the Secret and the migration hook's copy. */}}
{{- define "syncroot.secretData" -}}
DJANGO_SECRET_KEY: {{ include "syncroot.secretKey" . | b64enc | quote }}
{{- range $key, $value := .Values.secretEnv }}
{{- if and (ne $key "DJANGO_SECRET_KEY") (ne (toString $value) "") }}
{{ $key }}: {{ toString $value | b64enc | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Pod annotations: configuration checksums roll the pods when settings change. */}}
{{- define "syncroot.podAnnotations" -}}
checksum/config: {{ include "syncroot.configData" . | sha256sum }}
{{- if not .Values.existingSecret }}
checksum/secret: {{ include "syncroot.secretData" . | sha256sum }}
{{- end }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pod spec fields shared by every workload. */}}
{{- define "syncroot.podCommon" -}}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  # The root filesystem is read-only; /tmp is the one writable place (beat's schedule).
  - name: tmp
    emptyDir: {}
{{- end -}}

{{/* Container fields shared by the API, the workers and beat. */}}
{{- define "syncroot.containerCommon" -}}
image: {{ include "syncroot.image" . | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
envFrom:
  - configMapRef:
      name: {{ include "syncroot.fullname" . }}
  - secretRef:
      name: {{ include "syncroot.secretName" . }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end -}}
