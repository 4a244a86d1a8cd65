{{/* nginx.conf of the auth proxy in front of 127.0.0.1:PORT: include with (list $ PORT). */}}
{{- define "pulsegate-central.nginxConf" -}}
{{- $root := index . 0 -}}
worker_processes 1;
pid /tmp/nginx.pid;
error_log /dev/stderr warn;
events {
    worker_connections 256;
}
http {
    access_log /dev/stdout;
    client_body_temp_path /tmp/client_body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;
    server {
        listen {{ $root.Values.authProxy.port }};
        # Probes carry no credentials; /healthz tells nothing secret.
        location = /healthz {
            proxy_pass http://127.0.0.1:{{ index . 1 }};
        }
        location / {
            auth_basic "pulsegate";
            auth_basic_user_file /etc/nginx/htpasswd/htpasswd;
            proxy_pass http://127.0.0.1:{{ index . 1 }};
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }
    }
}
{{- end -}}
