{{/* Names and labels shared by every object of a release. */}}
{{- define "logitrec.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "logitrec.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component ("gateway" or "triton"): call with (list $ "gateway"). */}}
{{- define "logitrec.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ $root.Chart.Name }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "logitrec.claimName" -}}
{{- .Values.modelRepository.existingClaim | default (printf "%s-models" (include "logitrec.fullname" .)) -}}
{{- end -}}

{{/* The gateway's whole shutdown: an optional preStop pause, the drain, the admitted requests
finishing (up to graceSeconds), the gRPC server stopping (up to graceSeconds again), and a
few seconds for the refusals in between and the process exit. */}}
{{- define "logitrec.gateway.terminationGracePeriod" -}}
{{- $g := .Values.gateway -}}
{{- ceil (addf $g.preStopSleepSeconds $g.drainSeconds (mulf 2 $g.graceSeconds) 5) | int -}}
{{- end -}}

{{/* One TOML value: Helm reads every YAML number as a float, and the gateway's integer
settings must stay integers, so whole numbers are written without a fraction. */}}
{{- define "logitrec.tomlValue" -}}
{{- if kindIs "string" . -}}
{{- . | quote -}}
{{- else if kindIs "bool" . -}}
{{- . -}}
{{- else if and (kindIs "float64" .) (eq (floor .) .) -}}
{{- int64 . -}}
{{- else -}}
{{- . -}}
{{- end -}}
{{- end -}}
