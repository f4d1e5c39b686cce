{{/* Short name: nameOverride, else the chart name. */}}
{{- define "nvca.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object name: fullnameOverride; else <release>-<name>, or the release name when it already holds the name. */}}
{{- define "nvca.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "nvca.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "nvca.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nvca.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "nvca.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "nvca.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "nvca.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "nvca.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/*
The BYOO OpenTelemetry collector image NVIDIA's chart adds to every function's and task's
environment (BYOO_OTEL_COLLECTOR_CONTAINER): agent.byooOtelCollector, its repository by
default beside image.repository (NVIDIA: nvcr.io's, or stg.nvcr.io's for a staging
operator image, which is what that gives for NVIDIA's own images); an empty tag turns it
off. R/templates/_helpers.tpl byooOtelCollectorImage.
*/}}
{{- define "nvca.byooOtelCollectorImage" -}}
{{- $byoo := (.Values.agent).byooOtelCollector | default dict -}}
{{- $tag := "0.157.0-nv-0.1.1" -}}
{{- if hasKey $byoo "imageTag" -}}{{- $tag = $byoo.imageTag -}}{{- end -}}
{{- if $tag -}}
{{- printf "%s:%s" (include "nvca.siblingRepository" (dict "repository" ($byoo.imageRepository | default "") "base" .Values.image.repository "name" "byoo-otel-collector")) ($tag | toString) -}}
{{- end -}}
{{- end -}}

{{/*
agent.functionEnvOverrides or agent.taskEnvOverrides (.overrides) with the BYOO collector
image, as JSON; {} when there is nothing. A value equal to the image NVIDIA's chart once
packaged as this default is replaced by the current one, as NVIDIA's chart does on upgrade.
*/}}
{{- define "nvca.envOverrides" -}}
{{- $overrides := deepCopy (.overrides | default dict) -}}
{{- $byoo := include "nvca.byooOtelCollectorImage" .root -}}
{{- $key := "BYOO_OTEL_COLLECTOR_CONTAINER" -}}
{{- if and $byoo (or (not (hasKey $overrides $key)) (eq (get $overrides $key) "nvcr.io/nvidia/nvcf-byoc/byoo-otel-collector:0.157.11")) -}}
{{- $_ := set $overrides $key $byoo -}}
{{- end -}}
{{- toJson $overrides -}}
{{- end -}}

{{/*
NVIDIA's rule (R/templates/_helpers.tpl validateTransportTrust): QUIC without
certificate checks cannot go with bundle trust, whether the bundle is asked for in
agentConfig.mergeConfig or through operatorConfig's Secret.
*/}}
{{- define "nvca.validateTransportTrust" -}}
{{- $merge := dict -}}
{{- with (.Values.agentConfig).mergeConfig -}}
{{- if kindIs "string" . -}}
{{- $merge = fromYaml . -}}
{{- else -}}
{{- $merge = . -}}
{{- end -}}
{{- end -}}
{{- $workload := $merge.workload | default dict -}}
{{- $secretName := (((((.Values.operatorConfig).workload).transportTLS).trustBundle).secretKeyRef).name | default "" -}}
{{- $bundle := or (eq (($workload.transportTLS).trustMode | default "") "bundle") (ne $secretName "") -}}
{{- if and ($workload.stargateQUICInsecure | default false) $bundle -}}
{{- fail "workload.stargateQUICInsecure=true cannot be used with workload.transportTLS.trustMode=bundle; set workload.stargateQUICInsecure=false or use trustMode=system" -}}
{{- end -}}
{{- end -}}

{{/*
"true" on the bootstrap path, "" on the register-values path. Decided by clusterID:
- empty (the v0.5 install guide's values): the chart runs the bootstrap, an init
  container that registers the cluster with SIS using the vault agent's SIS token and
  writes the IDs into ConfigMap nvca-cluster-registration, and bootstrap-watch, which
  keeps that ConfigMap filled;
- set (the register-values file `nvcf-cli cluster register` writes, NVIDIA's current
  self-managed path, docs/user/cluster-management/self-managed.md of
  github.com/NVIDIA/nvcf): the cluster is registered already, its IDs come
  from the values, and the agent authenticates with a projected ServiceAccount token
  the operator mounts (nvca-token, audience nvcf-icms:<clusterID>). Nothing only the
  bootstrap needs is rendered: no init container, no bootstrap-watch, no vault agent,
  no nvca-cluster-registration, no NVCA_BOOTSTRAP_STORE.
*/}}
{{- define "nvca.bootstrap" -}}
{{- if not (.Values.clusterID | default "" | toString | trim) -}}true{{- end -}}
{{- end -}}

{{/* "true" when the operator pod gets the vault agent: asked for, and on the bootstrap path (its only reader). */}}
{{- define "nvca.vault" -}}
{{- if and .Values.vaultConfig.enabled (include "nvca.bootstrap" .) -}}true{{- end -}}
{{- end -}}

{{/*
selfManaged.identitySource, written by `nvcf-cli cluster register` (psat, spire or
custom) and set to psat by NVIDIA's Helmfile stack. nvca's operator gives the agent a
projected ServiceAccount token, which is psat; empty means the same (NVIDIA's operator
resolves "" to psat for self-managed clusters). NVIDIA's operator refuses spire ("not
yet supported end-to-end") and anything else, and so does this chart, at render time.
*/}}
{{- define "nvca.validateIdentitySource" -}}
{{- $source := (.Values.selfManaged).identitySource | default "" | toString -}}
{{- if not (has $source (list "" "psat")) -}}
{{- fail (printf "selfManaged.identitySource is %q, which nvca does not support: nvca's agent authenticates with the projected ServiceAccount token its operator mounts (psat) and nothing else; SPIRE is not supported end to end (NVIDIA's operator refuses spire, and any value but psat, too). Set selfManaged.identitySource: psat, or leave it empty (psat)" $source) -}}
{{- end -}}
{{- end -}}

{{/* The Secret generateImagePullSecret creates. */}}
{{- define "nvca.generatedPullSecret" -}}
{{- .Values.imagePullSecretName | default "nvca-operator-image-pull" -}}
{{- end -}}

{{/*
The pull secrets of the operator's pods, as JSON [{"name": ...}]: the generated one first,
then imagePullSecrets. The operator and the mirror get the same list, so the agent pulls
with them too.
*/}}
{{- define "nvca.pullSecrets" -}}
{{- $refs := list -}}
{{- if .Values.generateImagePullSecret -}}
{{- $refs = append $refs (dict "name" (include "nvca.generatedPullSecret" .)) -}}
{{- end -}}
{{- range .Values.imagePullSecrets -}}
{{- $refs = append $refs (dict "name" .name) -}}
{{- end -}}
{{- toJson $refs -}}
{{- end -}}

{{- define "nvca.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) -}}
{{- end -}}

{{/* A sibling image of the operator's: same registry and path, last element replaced. */}}
{{- define "nvca.siblingRepository" -}}
{{- if .repository -}}
{{- .repository -}}
{{- else -}}
{{- $parts := splitList "/" .base -}}
{{- if gt (len $parts) 1 -}}
{{- printf "%s/%s" (initial $parts | join "/") .name -}}
{{- else -}}
{{- .name -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A list as one-line JSON; [] when empty. */}}
{{- define "nvca.jsonList" -}}
{{- $items := . | default list | compact -}}
{{- if $items -}}{{ toJson $items }}{{- else -}}[]{{- end -}}
{{- end -}}

{{/* The store volume: the operator's PVC when persistence is on, else an emptyDir. */}}
{{- define "nvca.storeClaim" -}}
{{- .Values.persistence.existingClaim | default (printf "%s-store" (include "nvca.fullname" .)) -}}
{{- end -}}

{{/*
The value at a dotted path of .root as JSON, or nothing when the path is absent.
Usage: include "nvca.valueAt" (dict "root" .Values "path" "agent.customAnnotations")
*/}}
{{- define "nvca.valueAt" -}}
{{- $current := .root -}}
{{- $present := true -}}
{{- range $key := splitList "." .path -}}
{{- if and $present (kindIs "map" $current) (hasKey $current $key) -}}
{{- $current = index $current $key -}}
{{- else -}}
{{- $present = false -}}
{{- end -}}
{{- end -}}
{{- if $present -}}{{ toJson $current }}{{- end -}}
{{- end -}}

{{/*
Keys of NVIDIA's chart that nvca accepts but does not act on yet, each with the value
that means "not in use" (NVIDIA's default) and why it is not used. A values file that
sets one of them to anything else gets a warning in NOTES.txt; docs/chart.md lists them.
*/}}
{{- define "nvca.unsupportedKeys" -}}
- {path: replicaCount, inert: 1, why: "the operator runs one replica (single-writer store); 1 is used"}
- {path: k8sVersionOverride, inert: "", why: "the operator reports the API server's version"}
- {path: nvcaHelmRepositoryPrefix, inert: "", why: "Helm repository restrictions are not implemented"}
- {path: enableGXCache, inert: false, why: "GXCache is not supported"}
- {path: ddcsIPAllowList, inert: "", why: "the DDCS allow-list is not applied"}
- {path: operatorConfig.workload.transportTLS.trustBundle.secretKeyRef.name, inert: "", why: "workload transport trust bundles are not supported"}
- {path: operatorConfig.workload.transportTLS.fingerprint, inert: "", why: "workload transport trust bundles are not supported"}
- {path: operatorConfig.workload.transportTLS.installedBundleMountPath, inert: "", why: "workload transport trust bundles are not supported"}
- {path: nvcaImage.pullPolicy, inert: IfNotPresent, why: "the agent image pull policy is the operator's default"}
- {path: webhookConfig.imageConfig.pullPolicy, inert: IfNotPresent, why: "the webhook image pull policy is the operator's default (NVIDIA's chart does not read this key either)"}
- {path: agent.cacheMountOptionsEnabled, inert: true, why: "model-cache mount options are not configurable yet"}
- {path: agent.cacheMountOptions, inert: "ro,norecovery,nouuid", why: "model-cache mount options are not configurable yet"}
- {path: agent.workerDegradationPeriod, inert: "", why: "NVIDIA's degradation timeout is used"}
- {path: agent.secretMirrorLabelSelector, inert: "", why: "mirroring custom secrets into function namespaces is not supported"}
- {path: agent.customAnnotations, inert: {}, why: "custom pod annotations are not applied"}
- {path: agent.gpuProfiling.functionIds, inert: "", why: "Nsight GPU profiling labels are not applied"}
- {path: agent.taskEnvOverrides, inert: {}, why: "passed to the agent, but tasks are not supported yet"}
- {path: agent.workload.tolerations, inert: [], why: "function pods do not get them yet"}
- {path: otelCollector.enabled, inert: false, why: "the OpenTelemetry collector sidecar is not supported"}
- {path: otel.enabled, inert: false, why: "OpenTelemetry export is not supported; use the Prometheus metrics"}
- {path: selfManaged.otelCollector.enabled, inert: false, why: "the OpenTelemetry collector sidecar is not supported"}
- {path: clusterValidator.enabled, inert: false, why: "the cluster validator is not part of nvca"}
- {path: networkPolicy.operator.enabled, inert: false, why: "the operator pod NetworkPolicy is not rendered yet"}
- {path: vaultConfig.oAuthClientMountPathTemplate, inert: "", why: "helm-managed OAuth clients are not supported"}
- {path: vaultConfig.oAuthClientMountPath, inert: "", why: "helm-managed OAuth clients are not supported"}
- {path: helmManaged.cloudProvider, inert: "", why: "helm-managed clusters are not supported"}
- {path: helmManaged.clusterRegion, inert: "", why: "helm-managed clusters are not supported"}
- {path: helmManaged.clusterGroupID, inert: "", why: "helm-managed clusters are not supported"}
- {path: helmManaged.clusterGroupName, inert: "", why: "helm-managed clusters are not supported"}
- {path: helmManaged.nvcaVersion, inert: "", why: "helm-managed clusters are not supported"}
- {path: helmManaged.oAuthClientID, inert: "", why: "helm-managed clusters are not supported"}
{{- end -}}

{{/* Top-level keys of NVIDIA's chart and of this one; anything else is reported as unknown. */}}
{{- define "nvca.knownTopLevelKeys" -}}
- image
- nvcaImage
- otelCollector
- generateImagePullSecret
- imagePullSecretName
- imagePullSecrets
- serviceAccount
- replicaCount
- podDisruptionBudget
- systemNamespace
- logLevel
- ncaID
- clusterID
- clusterGroupID
- clusterName
- region
- ncaId
- webhookConfig
- k8sVersionOverride
- priorityClassName
- tolerations
- nvcaHelmRepositoryPrefix
- enableGXCache
- ddcsIPAllowList
- agentConfig
- operatorConfig
- resources
- agent
- webhook
- ngcConfig
- vaultConfig
- helmManaged
- selfManaged
- nodeSelector
- otel
- gracefulShutdown
- networkPolicy
- clusterValidator
- workload
- nameOverride
- fullnameOverride
- persistence
- global
{{- end -}}

{{/* One line per value that is set but not acted on; empty when there is none. */}}
{{- define "nvca.unsupportedReport" -}}
{{- $root := .Values -}}
{{- range $entry := include "nvca.unsupportedKeys" . | fromYamlArray -}}
{{- $found := include "nvca.valueAt" (dict "root" $root "path" $entry.path) -}}
{{- if and $found (ne $found (toJson $entry.inert)) }}
  - {{ $entry.path }} = {{ $found }}: not used by nvca yet ({{ $entry.why }})
{{- end -}}
{{- end -}}
{{- if and .Values.systemNamespace (ne .Values.systemNamespace .Release.Namespace) }}
  - systemNamespace = {{ .Values.systemNamespace | toJson }}: not used; as in NVIDIA's chart, the NVCFBackend lives in the release namespace {{ .Release.Namespace }}
{{- end -}}
{{- with .Values.ncaId }}{{ if ne (toString .) (toString ($.Values.ncaID | default "")) }}
  - ncaId = {{ toJson . }}: not used; NVIDIA's Helmfile stack passes it, but NVIDIA's chart and this one read ncaID ({{ $.Values.ncaID | default "" | toJson }}): set ncaID
{{- end }}{{ end -}}
{{- $known := include "nvca.knownTopLevelKeys" . | fromYamlArray -}}
{{- range $key := keys .Values | sortAlpha -}}
{{- if not (has $key $known) }}
  - {{ $key }}: unknown key, neither in NVIDIA's nvca-operator chart nor in this one; ignored
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Environment every nvca container of the operator pod gets. */}}
{{- define "nvca.commonEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef: {fieldPath: metadata.name}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef: {fieldPath: metadata.namespace}
- name: OPERATOR_NAMESPACE
  valueFrom:
    fieldRef: {fieldPath: metadata.namespace}
- name: NVCA_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
{{- /* The bootstrap's store, on the store volume: the init container, bootstrap-watch
       and a manual `kubectl exec ... nvca-self-managed bootstrap` share it. */}}
{{- if include "nvca.bootstrap" . }}
- name: NVCA_BOOTSTRAP_STORE
  value: /var/lib/nvca/bootstrap
{{- end }}
{{- end -}}

{{/* Every container: non-root, read-only root filesystem, no privilege escalation, no capabilities. */}}
{{- define "nvca.containerSecurity" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1010
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
{{- end -}}
