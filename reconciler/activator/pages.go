package activator

import (
	"html/template"
	"net/http"
)

var (
	wakingPage = template.Must(template.New("waking").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>{{.Tenant}} is waking up</title></head>
<body><h1>{{.Tenant}} is waking up, retry in {{.Seconds}} s</h1><p>This workspace was asleep and is starting; this page reloads itself.</p>
<script>setTimeout(function(){location.reload()},{{.Seconds}}000)</script></body></html>
`))
	hibernatedPage = template.Must(template.New("hibernated").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>{{.Tenant}} is hibernated</title></head>
<body><h1>{{.Tenant}} is hibernated</h1><p>This workspace is switched off by its owner; traffic does not wake it.</p></body></html>
`))
)

// writePage answers code with a small HTML page about tenant.
func writePage(w http.ResponseWriter, code int, page *template.Template, tenant string, seconds int) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = page.Execute(w, struct {
		Tenant  string
		Seconds int
	}{tenant, seconds})
}
