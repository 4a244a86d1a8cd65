{{/* Names, labels and the pieces every central pod shares. */}}

{{- define "pulsegate-central.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "pulsegate-central.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: include with (list $ "ingest"). */}}
{{- define "pulsegate-central.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ $root.Chart.Name }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "pulsegate-central.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Environment of every central container: the broker URL from its Secret, the state directory. */}}
{{- define "pulsegate-central.env" -}}
- name: PULSEGATE_AMQP_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "secrets.amqp.existingSecret must name the Secret holding the broker URL" .Values.secrets.amqp.existingSecret }}
      key: {{ .Values.secrets.amqp.urlKey }}
- name: PULSEGATE_CENTRAL_STATE_DIR
  value: /var/lib/pulsegate-central
{{- end -}}

{{/* Writable directories under a read-only root file system. */}}
{{- define "pulsegate-central.stateMounts" -}}
- name: state
  mountPath: /var/lib/pulsegate-central
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "pulsegate-central.stateVolumes" -}}
- name: state
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- end -}}

{{/* The basic-auth sidecar in front of a loopback port: include with (list $ PORT). */}}
{{- define "pulsegate-central.authProxy" -}}
{{- $root := index . 0 -}}
- name: auth-proxy
  image: {{ $root.Values.authProxy.image }}
  args: ["nginx", "-c", "/etc/nginx/pulsegate/nginx-{{ index . 1 }}.conf", "-g", "daemon off;"]
  ports:
    - name: http
      containerPort: {{ $root.Values.authProxy.port }}
  readinessProbe:
    tcpSocket:
      port: http
  securityContext:
    runAsNonRoot: true
    runAsUser: 101
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities: {drop: [ALL]}
  resources:
    {{- toYaml $root.Values.authProxy.resources | nindent 4 }}
  volumeMounts:
    - name: proxy-config
      mountPath: /etc/nginx/pulsegate
      readOnly: true
    - name: htpasswd
      mountPath: /etc/nginx/htpasswd
      readOnly: true
    - name: proxy-tmp
      mountPath: /tmp
{{- end -}}

{{- define "pulsegate-central.authProxyVolumes" -}}
- name: proxy-config
  configMap:
    name: {{ include "pulsegate-central.fullname" . }}
- name: htpasswd
  secret:
    secretName: {{ required "authProxy.htpasswdSecret must name a Secret with key htpasswd" .Values.authProxy.htpasswdSecret }}
- name: proxy-tmp
  emptyDir: {}
{{- end -}}

{{- define "pulsegate-central.podCommon" -}}
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
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
