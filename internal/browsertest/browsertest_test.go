package browsertest

import (
	"bytes"
	"fmt"
	"image/png"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// page is a small page: a heading, a labelled and an unlabelled input, a
// text a script changes after a moment, and a block wider than a phone.
const page = `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>browsertest</title>
<style>body { font: 16px sans-serif; margin: 1rem; } #wide { width: 600px; background: #ddd; }</style>
</head><body>
<h1 id="hello">Hello, browser</h1>
<form><label for="name">Name</label> <input id="name" name="name">
<input id="bare" name="bare"> <input type="hidden" name="csrf" value="x">
<label>Region <select id="region" name="region"><option>nyc3</option></select></label>
<button type="submit">Go</button></form>
<p id="live">waiting</p>
<div id="wide">wider than a phone</div>
<script>
window.marker = "set before";
setTimeout(() => { document.getElementById("live").textContent = "changed"; }, 300);
</script>
</body></html>`

func serve(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, page)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestBrowser drives a page on 127.0.0.1: waits for an element, reads its
// text, sees a script change the page without a reload, takes full-page
// screenshots at desktop and phone sizes, and measures the layout.
func TestBrowser(t *testing.T) {
	srv := serve(t)
	start := time.Now()
	b := Start(t, Options{})
	t.Logf("chromium started in %s", time.Since(start).Round(time.Millisecond))

	b.SetViewport(Desktop())
	b.Navigate(srv.URL + "/")
	b.WaitVisible("#hello")
	if got := b.Text("#hello"); got != "Hello, browser" {
		t.Errorf("#hello: %q", got)
	}
	if got := b.WaitText("#live", regexp.MustCompile(`^changed$`), 10*time.Second); got != "changed" {
		t.Errorf("#live: %q", got)
	}
	if got := Eval[string](b, `window.marker`); got != "set before" {
		t.Errorf("window.marker %q: the page was reloaded", got)
	}
	if !b.Present("#wide") || b.Present("#absent") {
		t.Error("Present is wrong")
	}

	dir := t.TempDir()
	for _, v := range []Viewport{Desktop(), Phone()} {
		b.SetViewport(v)
		path := b.Screenshot(dir, "page-"+v.Name)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := png.DecodeConfig(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		// A full-page screenshot holds the whole page: on the phone, the
		// 600 px block makes it wider than the device.
		if int64(cfg.Width) < v.Width || int64(cfg.Height) < v.Height || (v.Name == "desktop" && int64(cfg.Width) != v.Width) {
			t.Errorf("%s screenshot %dx%d, want %d wide and at least %d high", v.Name, cfg.Width, cfg.Height, v.Width, v.Height)
		}
		l := b.CheckLayout()
		if l.ClientWidth != int(v.Width) {
			t.Errorf("%s: clientWidth %d, want %d", v.Name, l.ClientWidth, v.Width)
		}
		// The page's 600 px block fits a desktop, not a phone.
		if l.ScrollsSideways() != (v.Name == "phone") {
			t.Errorf("%s: %+v", v.Name, l)
		}
		if v.Name == "phone" && !slices.ContainsFunc(l.Wide, func(s string) bool { return strings.HasPrefix(s, "div#wide") }) {
			t.Errorf("phone: wide elements %q do not name div#wide", l.Wide)
		}
		if !slices.Equal(l.Unlabelled, []string{"input#bare[name=bare]"}) {
			t.Errorf("unlabelled controls %q, want only input#bare", l.Unlabelled)
		}
	}
}

// TestNoNetworkBeyondLoopback: the browser loads nothing from anywhere
// but 127.0.0.1 — not a name on the internet, not a server on this
// machine's other addresses.
func TestNoNetworkBeyondLoopback(t *testing.T) {
	b := Start(t, Options{})
	srv := serve(t)
	b.Navigate(srv.URL + "/")
	b.WaitVisible("#hello")

	urls := []string{"http://example.com/", "http://192.0.2.1/"}
	// A server on a non-loopback address of this machine, when it has
	// one: reachable for Go, not for the browser.
	if ip := nonLoopback(); ip != nil {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
		if err == nil {
			other := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, page) }))
			other.Listener.Close()
			other.Listener = ln
			other.Start()
			defer other.Close()
			resp, err := http.Get(other.URL)
			if err != nil {
				t.Fatalf("the test's own server on %s: %v", ip, err)
			}
			resp.Body.Close()
			urls = append(urls, other.URL+"/")
		}
	}
	for _, u := range urls {
		b.Navigate("about:blank")
		err := b.Try(20*time.Second, chromedp.Navigate(u))
		if err == nil {
			t.Errorf("the browser loaded %s", u)
			continue
		}
		t.Logf("%s: %v", u, err)
	}
}

func nonLoopback() net.IP {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP
		}
	}
	return nil
}

// fatalTB records Fatalf and stops the calling function the way
// testing.T does (here, with a panic the test recovers).
type fatalTB struct {
	testing.TB
	msg string
}

type stopped struct{}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(stopped{})
}

// TestMissingChromiumFails: without Chromium, Start fails the test and
// says what to run; it does not skip.
func TestMissingChromiumFails(t *testing.T) {
	f := &fatalTB{TB: t}
	func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(stopped); !ok {
					panic(r)
				}
			}
		}()
		Start(f, Options{Chromium: "/nonexistent/chromium"})
		t.Error("Start returned without a browser")
	}()
	if !strings.Contains(f.msg, "make deps") || !strings.Contains(f.msg, "/nonexistent/chromium") {
		t.Errorf("failure message %q does not name the path and `make deps`", f.msg)
	}
}

func TestJSString(t *testing.T) {
	for in, want := range map[string]string{
		`a`:                              `"a"`,
		`td[data-live="lifecycle:ws-a"]`: `"td[data-live=\"lifecycle:ws-a\"]"`,
		"x\\y\n":                         `"x\\y\u000a"`,
	} {
		if got := jsString(in); got != want {
			t.Errorf("jsString(%q) = %s, want %s", in, got, want)
		}
	}
}
