{{/*
The chart name, or nameOverride.
*/}}
{{- define "issuer-guard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: fullnameOverride, or <release>-<name> (just <release> when it
already contains the name). Truncated to 63 characters: it is a DNS label of
the Service. Resources that add a suffix truncate further.
*/}}
{{- define "issuer-guard.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "issuer-guard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every resource.
*/}}
{{- define "issuer-guard.labels" -}}
helm.sh/chart: {{ include "issuer-guard.chart" . }}
{{ include "issuer-guard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: admission-webhook
{{- end }}

{{/*
Selector labels: immutable for the life of the Deployment.
*/}}
{{- define "issuer-guard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "issuer-guard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount the pods run as.
*/}}
{{- define "issuer-guard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "issuer-guard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The ServiceAccount discovery mints its probe tokens for: <fullname>-canary,
never the pods' own. A token minted with no audience authenticates to the
API server as its account, so this one is bound to nothing and may do
nothing. The Role <fullname>-discovery lets issuer-guard mint tokens for
this name only, and ISSUER_GUARD_SERVICE_ACCOUNT names it: both come from
here.
*/}}
{{- define "issuer-guard.canaryServiceAccountName" -}}
{{- printf "%s-canary" (include "issuer-guard.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}

{{/*
The image reference: repository@digest when a digest is given, else
repository:tag (tag defaults to the appVersion). The repository has no
default: the project publishes no image, and a default name would install a
Deployment that never pulls (and, with the webhooks registered, fails
admission while a rotation is declared).
*/}}
{{- define "issuer-guard.image" -}}
{{- $repository := required "image.repository is required: set image.repository to the image you built from the Dockerfile at the root of the issuer-guard repository and pushed to your registry (the project publishes none), e.g. --set image.repository=registry.example.com/platform/issuer-guard; see \"Build and push the image\" in the chart README" .Values.image.repository }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
The webhooks' names, which the API server's admission metrics carry as their
`name` label: webhooks.yaml registers them and prometheusrule.yaml selects
them, so both must come from here.
*/}}
{{- define "issuer-guard.mutatingWebhookName" -}}
mutate.issuer-guard.io
{{- end }}
{{- define "issuer-guard.validatingWebhookName" -}}
validate.issuer-guard.io
{{- end }}

{{/*
"true" when config.rotation declares something the validating webhook must
enforce (an issuer or key retiring, or a planned issuer switch), else empty.
The same three fields src/config reads as a declaration.
*/}}
{{- define "issuer-guard.rotationDeclared" -}}
{{- $rotation := dig "rotation" dict (.Values.config | default dict) | default dict }}
{{- if or $rotation.retiringIssuers $rotation.retiringKeyIds $rotation.nextIssuer }}true{{ end }}
{{- end }}

{{/*
The validating webhook's failurePolicy. `auto` fails closed only while a
rotation is declared: with nothing declared there is nothing certain to
deny, and a fail-closed webhook that cannot be reached (a bad image, a
NetworkPolicy) would block every pod creation in the cluster for no gain.
*/}}
{{- define "issuer-guard.validatingFailurePolicy" -}}
{{- $policy := .Values.webhook.validating.failurePolicy }}
{{- if eq $policy "auto" }}
{{- if include "issuer-guard.rotationDeclared" . }}Fail{{ else }}Ignore{{ end }}
{{- else }}
{{- $policy }}
{{- end }}
{{- end }}

{{/*
The namespace the helm test sends its dry-run Pod to: tests.namespace.name,
or <fullname>-test.
*/}}
{{- define "issuer-guard.testNamespace" -}}
{{- .Values.tests.namespace.name | default (printf "%s-test" (include "issuer-guard.fullname" . | trunc 58 | trimSuffix "-")) }}
{{- end }}

{{/*
The ConfigMap holding config.yaml.
*/}}
{{- define "issuer-guard.configMapName" -}}
{{- printf "%s-config" (include "issuer-guard.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}

{{/*
The discovery ledger ConfigMap: discovery.ledger, or <fullname>-ledger. The
Role grants update and patch on this name only, and the policy
<fullname>-ledger lets only issuer-guard write it, so the Deployment's
--ledger, the Role and the policy must all come from here. The chart never
renders the ConfigMap itself: issuer-guard creates it.
*/}}
{{- define "issuer-guard.ledgerName" -}}
{{- .Values.discovery.ledger | default (printf "%s-ledger" (include "issuer-guard.fullname" . | trunc 56 | trimSuffix "-")) }}
{{- end }}

{{/*
The Secret discovery keeps its canary tokens in: the ledger's name and
-canary, the name the binary derives from --ledger (src/discovery), so it is
never truncated (the schema keeps discovery.ledger short enough). The Role
<fullname>-discovery grants get and update on this name only, and the policy
<fullname>-ledger-canary lets only issuer-guard write it. The chart never
renders the Secret itself: issuer-guard creates it.
*/}}
{{- define "issuer-guard.canarySecretName" -}}
{{- printf "%s-canary" (include "issuer-guard.ledgerName" .) }}
{{- end }}

{{/*
The Secret holding the serving certificate, per tls.mode:
  helm:         <fullname>-tls (created by the chart)
  cert-manager: <fullname>-cert-manager-tls (written by cert-manager)
  self:         <fullname>-self-tls (created and rotated by issuer-guard)
  secret:       tls.existingSecret
The generated names differ so that switching modes never has Helm,
cert-manager and issuer-guard fight over one Secret (an upgrade from helm
mode deletes <fullname>-tls, which the binary must not be using).
*/}}
{{- define "issuer-guard.tlsSecretName" -}}
{{- $base := include "issuer-guard.fullname" . | trunc 40 | trimSuffix "-" }}
{{- if eq .Values.tls.mode "helm" }}
{{- printf "%s-tls" $base }}
{{- else if eq .Values.tls.mode "cert-manager" }}
{{- printf "%s-cert-manager-tls" $base }}
{{- else if eq .Values.tls.mode "self" }}
{{- printf "%s-self-tls" $base }}
{{- else }}
{{- required "tls.existingSecret is required when tls.mode=secret: the name of a kubernetes.io/tls Secret (keys tls.crt, tls.key) in the release namespace" .Values.tls.existingSecret }}
{{- end }}
{{- end }}

{{/*
The cert-manager serving Certificate (also the inject-ca-from target).
*/}}
{{- define "issuer-guard.certificateName" -}}
{{- printf "%s-serving" (include "issuer-guard.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{/*
DNS names of the serving certificate, as a JSON list.
*/}}
{{- define "issuer-guard.dnsNames" -}}
{{- $fullname := include "issuer-guard.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $names := list (printf "%s.%s.svc" $fullname $ns) (printf "%s.%s.svc.cluster.local" $fullname $ns) (printf "%s.%s" $fullname $ns) $fullname }}
{{- concat $names .Values.tls.extraDnsNames | uniq | toJson }}
{{- end }}

{{/*
Namespaces neither webhook is called for, as a JSON list: always kube-system
(a control-plane restart must never wait on a webhook) and the release
namespace (the webhook's own pods must start while it is down), then
webhook.excludeNamespaces.
*/}}
{{- define "issuer-guard.excludedNamespaces" -}}
{{- concat (list "kube-system" .Release.Namespace) .Values.webhook.excludeNamespaces | uniq | toJson }}
{{- end }}

{{/*
The configuration file, validated beyond what the JSON schema can say
(cross-field rules of src/config/mod.rs), with kube-system and the release
namespace added to exemptNamespaces.
*/}}
{{- define "issuer-guard.configFile" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $static := dict }}
{{- if and $cfg.generation (kindIs "map" $cfg.generation) }}
{{- $static = $cfg.generation.static | default dict }}
{{- end }}
{{- $issuer := $static.issuer | default "https://kubernetes.default.svc.cluster.local" }}
{{- $keyId := $static.keyId | default "" }}
{{- $rotation := $cfg.rotation | default dict }}
{{- $next := $rotation.nextIssuer | default "" }}
{{- $planned := and $next (ne $next $issuer) }}
{{- range $i, $r := ($rotation.retiringIssuers | default list) }}
{{- if and $next (eq $r $next) }}
{{- fail (printf "config.rotation.retiringIssuers[%d]: %q is rotation.nextIssuer; the issuer a switch goes to cannot retire" $i $r) }}
{{- end }}
{{- if and (not $planned) (eq $r $issuer) }}
{{- fail (printf "config.rotation.retiringIssuers[%d]: %q is the current issuer (config.generation.static.issuer, default https://kubernetes.default.svc.cluster.local); to declare a switch before it happens, set config.rotation.nextIssuer instead, and if it no longer signs, set config.generation.static.issuer to the issuer that does" $i $r) }}
{{- end }}
{{- end }}
{{- if $keyId }}
{{- range $i, $k := ($rotation.retiringKeyIds | default list) }}
{{- if eq $k $keyId }}
{{- fail (printf "config.rotation.retiringKeyIds[%d]: %q is the current signing key (config.generation.static.keyId); the current key cannot retire" $i $k) }}
{{- end }}
{{- end }}
{{- end }}
{{- /* Helm reads values as YAML 1.1, where a bare `off` is the boolean
false; the binary reads YAML 1.2, where it is the action "off" that was
meant. The schema lets false through for rule actions only, to land here. */}}
{{- if $cfg.rules }}
{{- $rules := dict }}
{{- range $rule, $action := $cfg.rules }}
{{- if and (kindIs "bool" $action) (not $action) }}
{{- $_ := set $rules $rule "off" }}
{{- else }}
{{- $_ := set $rules $rule $action }}
{{- end }}
{{- end }}
{{- $_ := set $cfg "rules" $rules }}
{{- end }}
{{- $exempt := $cfg.exemptNamespaces | default list }}
{{- $_ := set $cfg "exemptNamespaces" (concat $exempt (list "kube-system" .Release.Namespace) | uniq) }}
{{- toYaml $cfg }}
{{- end }}

{{/*
A webhook's clientConfig: the Service, or webhook.urlOverride (test only).
Takes a dict: urlOverride, path, fullname, ns, caBundle (base64, may be
empty: cert-manager's cainjector fills it).
*/}}
{{- define "issuer-guard.clientConfig" }}
{{- if .urlOverride }}
url: {{ printf "%s%s" .urlOverride .path | quote }}
{{- else }}
service:
  name: {{ .fullname }}
  namespace: {{ .ns }}
  path: {{ .path }}
  port: 443
{{- end }}
{{- if .caBundle }}
caBundle: {{ .caBundle }}
{{- end }}
{{- end }}

{{/*
A hash of the names the serving certificate covers (helm and cert-manager
modes). The binary hot-reloads a renewed certificate but refuses one that
drops a name the served one covers, so when the names change the pods must
restart: the Deployment's pod template carries this hash.
*/}}
{{- define "issuer-guard.tlsNamesHash" -}}
{{- $fullname := include "issuer-guard.fullname" . }}
{{- $cn := printf "%s.%s.svc" $fullname .Release.Namespace }}
{{- $dnsNames := include "issuer-guard.dnsNames" . | fromJsonArray }}
{{- sha256sum (toJson (dict "cn" $cn "dns" $dnsNames "ips" .Values.tls.extraIPs)) }}
{{- end }}

{{/*
A duration as the binary's flags read it (a whole number and ms, s, m or h;
the schema admits no other), in milliseconds.
*/}}
{{- define "issuer-guard.milliseconds" -}}
{{- $n := regexFind "^[0-9]+" . | int64 }}
{{- $unit := trimPrefix (regexFind "^[0-9]+" .) . }}
{{- if eq $unit "ms" }}{{ $n }}
{{- else if eq $unit "s" }}{{ mul $n 1000 }}
{{- else if eq $unit "m" }}{{ mul $n 60000 }}
{{- else }}{{ mul $n 3600000 }}
{{- end }}
{{- end }}

{{/*
tls.mode=self: the binary's environment, after the checks the binary makes
of the same values at start-up, with its messages (in value names), so that
a bad combination fails the install instead of every pod.
*/}}
{{- define "issuer-guard.selfTlsEnv" -}}
{{- $self := .Values.tls.self }}
{{- $ms := dict }}
{{- range $key := list "caLifetime" "caRenewBefore" "certLifetime" "certRenewBefore" "overlap" }}
{{- $_ := set $ms $key (include "issuer-guard.milliseconds" (index $self $key) | int64) }}
{{- end }}
{{- if ge $ms.certRenewBefore $ms.certLifetime }}
{{- fail (printf "tls.self.certRenewBefore (%s) must be shorter than tls.self.certLifetime (%s), or every certificate is renewed as soon as it is issued" $self.certRenewBefore $self.certLifetime) }}
{{- end }}
{{- if ge $ms.caRenewBefore $ms.caLifetime }}
{{- fail (printf "tls.self.caRenewBefore (%s) must be shorter than tls.self.caLifetime (%s), or every CA is rotated as soon as it is made" $self.caRenewBefore $self.caLifetime) }}
{{- end }}
{{- if lt $ms.caRenewBefore (mul $ms.overlap 2) }}
{{- fail (printf "tls.self.caRenewBefore (%s) must be at least twice tls.self.overlap (%s): a rotation takes two overlaps, and the old CA must still be valid until it ends" $self.caRenewBefore $self.overlap) }}
{{- end }}
{{- $names := concat (include "issuer-guard.dnsNames" . | fromJsonArray) .Values.tls.extraIPs | uniq }}
- name: ISSUER_GUARD_TLS_SECRET
  value: {{ printf "%s/%s" .Release.Namespace (include "issuer-guard.tlsSecretName" .) | quote }}
- name: ISSUER_GUARD_WEBHOOK_CONFIGURATIONS
  value: {{ include "issuer-guard.fullname" . | quote }}
- name: ISSUER_GUARD_TLS_NAMES
  value: {{ join "," $names | quote }}
- name: ISSUER_GUARD_CA_LIFETIME
  value: {{ $self.caLifetime | quote }}
- name: ISSUER_GUARD_CA_RENEW_BEFORE
  value: {{ $self.caRenewBefore | quote }}
- name: ISSUER_GUARD_CERT_LIFETIME
  value: {{ $self.certLifetime | quote }}
- name: ISSUER_GUARD_CERT_RENEW_BEFORE
  value: {{ $self.certRenewBefore | quote }}
- name: ISSUER_GUARD_CA_OVERLAP
  value: {{ $self.overlap | quote }}
{{- end }}

{{/*
"true" when the inventory is rendered, else empty: inventory.enabled, and
discovery.enabled, since the inventory reads the ledger discovery writes
(without it there is no ledger, and the inventory could never be ready).
Every inventory object, its ServiceMonitor, NetworkPolicy and alerts test
this one condition.
*/}}
{{- define "issuer-guard.inventoryEnabled" -}}
{{- if and .Values.inventory.enabled .Values.discovery.enabled }}true{{ end }}
{{- end }}

{{/*
The inventory's name: <fullname>-inventory, for its Deployment, Service,
ServiceAccount, ClusterRole, Role and their bindings. The Service's name is
the `job` of its series, which prometheusrule.yaml selects: both come from
here. Truncated so that it stays a DNS label.
*/}}
{{- define "issuer-guard.inventoryName" -}}
{{- printf "%s-inventory" (include "issuer-guard.fullname" . | trunc 53 | trimSuffix "-") }}
{{- end }}

{{/*
The inventory's selector labels. Its own app.kubernetes.io/name: the
webhook's Service, PodDisruptionBudget, spread, NetworkPolicy and
ServiceMonitor select the webhook by name and instance alone, and the
webhook Deployment's selector cannot change, so an inventory pod carrying
the webhook's pair would receive admission reviews it cannot answer and be
counted as a webhook replica.
*/}}
{{- define "issuer-guard.inventorySelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-inventory" (include "issuer-guard.name" . | trunc 53 | trimSuffix "-") }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels on every inventory object.
*/}}
{{- define "issuer-guard.inventoryLabels" -}}
helm.sh/chart: {{ include "issuer-guard.chart" . }}
{{ include "issuer-guard.inventorySelectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: inventory
app.kubernetes.io/part-of: {{ include "issuer-guard.name" . }}
{{- end }}

{{/*
A duration of a whole number and one unit, s, m, h or d (the schema admits
no other), in seconds: for alert thresholds, which are compared with gauges
in seconds.
*/}}
{{- define "issuer-guard.seconds" -}}
{{- $n := regexFind "^[0-9]+" . | int64 }}
{{- $unit := trimPrefix (regexFind "^[0-9]+" .) . }}
{{- if eq $unit "s" }}{{ $n }}
{{- else if eq $unit "m" }}{{ mul $n 60 }}
{{- else if eq $unit "h" }}{{ mul $n 3600 }}
{{- else if eq $unit "d" }}{{ mul $n 86400 }}
{{- else }}{{ fail (printf "%q is not a duration of s, m, h or d" .) }}
{{- end }}
{{- end }}
