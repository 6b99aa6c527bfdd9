{{/*
Names, labels, the image reference, the controller's RBAC rules, and the checks across values
that values.schema.json cannot state with a clear message.
*/}}

{{- define "signet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The object name prefix: the release name when it already says "signet". */}}
{{- define "signet.fullname" -}}
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

{{- define "signet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object the chart creates. They say managed-by: Helm; the objects the controller
itself creates for each policy say managed-by: signet, and its watches select on that.
*/}}
{{- define "signet.commonLabels" -}}
helm.sh/chart: {{ include "signet.chart" . }}
app.kubernetes.io/name: {{ include "signet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels of the controller's objects. */}}
{{- define "signet.labels" -}}
{{ include "signet.commonLabels" . }}
app.kubernetes.io/component: controller
{{- end }}

{{/*
Selects the controller pods. The instance and component labels keep worker pods out: they also
carry app.kubernetes.io/name: signet.
*/}}
{{- define "signet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "signet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "signet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "signet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "signet.leaseName" -}}
{{- default (include "signet.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "signet.metricsServiceName" -}}
{{- printf "%s-metrics" (include "signet.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The image of the controller, the workers and the migration Job. */}}
{{- define "signet.image" -}}
{{- $image := printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- with .Values.image.digest }}
{{- $image = printf "%s@%s" $image . }}
{{- end }}
{{- $image }}
{{- end }}

{{/*
The rules the controller needs where it reconciles policies: cluster-wide (ClusterRole) or in each
watched namespace (Role). Exactly the API calls in src/controller/; tests/chart/ holds the same
table with the call behind each rule and fails when the two differ.
*/}}
{{- define "signet.controllerRules" -}}
# Watch policies; clear the run-now annotation (merge patch).
- apiGroups: ["signet.dev"]
  resources: ["signaturepolicies"]
  verbs: ["list", "watch", "patch"]
# Write the controller's part of the status. Also what lets it create the worker Roles, which
# grant this verb: Kubernetes refuses a Role granting more than its creator holds.
- apiGroups: ["signet.dev"]
  resources: ["signaturepolicies/status"]
  verbs: ["patch"]
# Worker CronJobs: watched by label, read once to verify, server-side applied (create on first
# apply), deleted when a section is disabled.
- apiGroups: ["batch"]
  resources: ["cronjobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The manual-run Job's ownerReference sets blockOwnerDeletion on its CronJob, which clusters
# running the OwnerReferencesPermissionEnforcement admission plugin allow only with this.
- apiGroups: ["batch"]
  resources: ["cronjobs/finalizers"]
  verbs: ["update"]
# Manual runs (signet.dev/run-now): a Job from the CronJob's template. The worker Jobs are
# watched by label, for the runs Kubernetes fails (reflected as lastRun outcome JobFailed).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["list", "watch", "create"]
# Pending worker pods, watched by label, for runs that cannot start (a missing Secret, an image
# that cannot be pulled, no node to run on).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# The worker ServiceAccount: watched, verified, server-side applied.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The worker Role and RoleBinding: watched, verified, server-side applied.
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Events on policies (kube's Recorder, events.k8s.io/v1; a new Recorder per Event, so it only
# ever creates).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/*
Checks across values, each failing with a sentence that says what to change. Included by the
Deployment, so every render runs them.
*/}}
{{- define "signet.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail (printf "replicaCount is %d but leaderElection.enabled is false: every replica would reconcile; enable leader election or run one replica" (int .Values.replicaCount)) }}
{{- end }}
{{- if and (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) }}
{{- fail "serviceAccount.create is false, so serviceAccount.name must name an existing ServiceAccount" }}
{{- end }}
{{- if and .Values.migration.enabled (not .Values.migration.databaseUrlSecret.name) }}
{{- fail "migration.enabled needs migration.databaseUrlSecret.name: the Secret holding the database URL" }}
{{- end }}
{{- if and .Values.networkPolicy.enabled .Values.networkPolicy.egress.enabled (not .Values.networkPolicy.egress.apiServerCIDRs) }}
{{- fail "networkPolicy.egress.enabled needs networkPolicy.egress.apiServerCIDRs, or the controller cannot reach the API server" }}
{{- end }}
{{- end }}
