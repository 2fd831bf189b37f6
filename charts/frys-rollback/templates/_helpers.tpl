{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "frys-rollback.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, with the chart name unless the release already has it. */}}
{{- define "frys-rollback.fullname" -}}
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

{{/* Name of cluster-scoped objects: unique per release and namespace. */}}
{{- define "frys-rollback.clusterName" -}}
{{- printf "%s-%s" (include "frys-rollback.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "frys-rollback.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "frys-rollback.selectorLabels" -}}
app.kubernetes.io/name: {{ include "frys-rollback.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "frys-rollback.labels" -}}
helm.sh/chart: {{ include "frys-rollback.chart" . }}
{{ include "frys-rollback.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: frys-rollback
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "frys-rollback.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "frys-rollback.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "frys-rollback.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The rules the operator needs in the namespaces it watches: exactly the requests its code makes
(src/controller, src/strategy, src/verify, src/prometheus), checked against the test control
plane's request log by tests/integration/chart.rs.
*/}}
{{- define "frys-rollback.undoKeySecret" -}}
{{- default (printf "%s-undo-key" (include "frys-rollback.fullname" .)) .Values.operator.undoKeySecret -}}
{{- end }}

{{- define "frys-rollback.namespacedRules" -}}
# Its own resources: watched and status written; policies get the onDelete finalizer and
# their trigger annotations consumed (patch); events are created (by policies and drills),
# adopted by their policy, their undo annotation set by a drill or consumed (patch), and pruned
# beyond historyLimit (delete).
- apiGroups: [rollback.frys.io]
  resources: [rollbackpolicies]
  verbs: [get, list, watch, patch]
- apiGroups: [rollback.frys.io]
  resources: [rollbackpolicies/status]
  verbs: [patch]
- apiGroups: [rollback.frys.io]
  resources: [rollbackevents]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [rollback.frys.io]
  resources: [rollbackevents/status]
  verbs: [patch]
# Drills: watched, their run-now annotation consumed (patch), their status and report written.
- apiGroups: [rollback.frys.io]
  resources: [rollbackdrills]
  verbs: [get, list, watch, patch]
- apiGroups: [rollback.frys.io]
  resources: [rollbackdrills/status]
  verbs: [patch]
# Targets: cached and watched; revision rollback and consumed trigger annotations patch them; scale-down
# (emergency shutdown) and scaling patch the scale subresource.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, patch]
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [patch]
- apiGroups: [apps]
  resources: [replicasets]
  verbs: [list, watch]
# Blue/green switches a Service's selector; verification reads Services and their endpoints.
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, patch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list]
# Verification probes connect only to an address the endpoint's Pod has in its status.
- apiGroups: [""]
  resources: [pods]
  verbs: [get]
# Prometheus credentials and webhook URLs a policy refers to; the operator uses only Secrets
# labelled rollback.frys.io/policy-access=true (RBAC cannot select by label; see docs/security.md).
# The evaluator watches them with that label selector (list, watch), so no other Secret is cached.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch]
# Emergency shutdown pins the target's HPA (list, patch); undo reads it back and restores it.
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, patch]
# Kubernetes Events about policies.
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# Traffic shifting and circuit breaker rewrite route weights.
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, patch]
- apiGroups: [networking.istio.io]
  resources: [virtualservices]
  verbs: [get, patch]
{{- end }}
