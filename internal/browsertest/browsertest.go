// Package browsertest drives a real headless browser in tests: Debian's
// Chromium (/usr/bin/chromium, which `make deps` installs), started by
// chromedp and spoken to over the Chrome DevTools Protocol through a pipe.
//
// A test calls Start, which launches one Chromium for the test with a fresh
// temporary profile and stops it, and removes the profile, when the test
// ends (t.Cleanup). The browser reaches nothing but this machine's loopback:
// every host name other than localhost resolves to nothing
// (--host-resolver-rules) and every other connection goes to a proxy that
// does not exist (--proxy-server), so a page that would load something from
// outside fails the way it would for an operator without the internet,
// instead of passing by luck.
//
// Every step has a bound (Options.Step, 30 s by default) so a page that
// never shows what the test waits for fails the test with the page's URL and
// the selector, never hangs it. A missing Chromium fails the test with what
// to run; it is never a silent skip.
package browsertest

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// DefaultChromium is where Debian's chromium package installs the browser.
const DefaultChromium = "/usr/bin/chromium"

// ScreenshotsEnv names the variable that, when set to a directory, makes
// ScreenshotDir return it (the README's examples are made that way).
const ScreenshotsEnv = "GENESIS_SCREENSHOTS"

// Options say how to start the browser. The zero value is a good default.
type Options struct {
	// Chromium is the browser's executable (default DefaultChromium, or
	// $GENESIS_CHROMIUM when set).
	Chromium string
	// Step bounds every action and wait (default 30 s).
	Step time.Duration
	// Start bounds the browser's start (default 60 s: a loaded CI machine).
	Start time.Duration
	// Logger receives the browser's own output and chromedp's errors
	// (default: a text logger into the test's log, shown when it fails).
	Logger *slog.Logger
}

// Viewport is a window size, optionally emulating a phone (mobile layout,
// touch, device-width meta viewport honoured).
type Viewport struct {
	Name          string
	Width, Height int64
	Scale         float64
	Mobile        bool
}

// Desktop is a common laptop window: 1366×900.
func Desktop() Viewport { return Viewport{Name: "desktop", Width: 1366, Height: 900, Scale: 1} }

// Phone is a current phone in portrait: 390×844 CSS pixels, mobile and
// touch emulated (at scale 1, to keep screenshots small).
func Phone() Viewport {
	return Viewport{Name: "phone", Width: 390, Height: 844, Scale: 1, Mobile: true}
}

// Browser is one headless Chromium with one tab, owned by one test.
type Browser struct {
	t    testing.TB
	ctx  context.Context // the tab's context: chromedp keys its target on it
	step time.Duration
	log  *slog.Logger
}

// Start launches Chromium for t and returns its tab; t.Cleanup stops it.
// It fails t (never skips it) when Chromium is missing or does not start.
func Start(t testing.TB, o Options) *Browser {
	t.Helper()
	if o.Chromium == "" {
		o.Chromium = os.Getenv("GENESIS_CHROMIUM")
	}
	if o.Chromium == "" {
		o.Chromium = DefaultChromium
	}
	if o.Step <= 0 {
		o.Step = 30 * time.Second
	}
	if o.Start <= 0 {
		o.Start = 60 * time.Second
	}
	if o.Logger == nil {
		tw := &testWriter{t: t}
		t.Cleanup(tw.close) // runs after the browser's cleanup below
		o.Logger = slog.New(slog.NewTextHandler(tw, nil))
	}
	log := o.Logger.With("component", "browsertest")
	if _, err := os.Stat(o.Chromium); err != nil {
		t.Fatalf("browsertest: no Chromium at %s (%v): run `make deps` (scripts/install-deps installs Debian's chromium package) or set GENESIS_CHROMIUM", o.Chromium, err)
	}

	out := &lineLogger{log: log}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), Flags(o.Chromium, out)...)
	ctx, cancelTab := chromedp.NewContext(allocCtx,
		chromedp.WithErrorf(func(format string, args ...any) { log.Warn("chromedp", "msg", fmt.Sprintf(format, args...)) }))
	t.Cleanup(func() {
		// Close the browser gracefully within a bound, then make sure:
		// cancelling the allocator kills the process and waits for it,
		// and removes the temporary profile.
		done := make(chan struct{})
		go func() {
			defer close(done)
			cancelTab()
		}()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			log.Warn("browser did not close in 15s; killing it")
		}
		cancelAlloc()
		out.flush()
	})

	// The first action starts the browser. It must run on the tab's own
	// context (the browser lives as long as the context of the first
	// action): the bound kills the browser instead.
	timer := time.AfterFunc(o.Start, cancelAlloc)
	err := chromedp.Do(ctx, chromedp.Navigate("about:blank"))
	if !timer.Stop() {
		err = fmt.Errorf("not started within %s: %w", o.Start, err)
	}
	if err != nil {
		out.flush()
		t.Fatalf("browsertest: start %s: %v; its last output:\n%s", o.Chromium, err, strings.Join(out.Last(), "\n"))
	}
	b := &Browser{t: t, ctx: ctx, step: o.Step, log: log}
	return b
}

// Flags are the allocator options Start uses: headless, a temporary
// profile, no GPU, no network but loopback, --no-sandbox only as root
// (Chromium refuses to run as root with its sandbox), the browser's output
// to out.
func Flags(chromium string, out io.Writer) []chromedp.ExecAllocatorOption {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.DisableGPU,
		chromedp.CombinedOutput(out),
		// No network but loopback: names resolve to nothing but localhost,
		// and connections to any other address go to a proxy on a port
		// nobody listens on (loopback bypasses proxies).
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"),
		chromedp.ProxyServer("http://127.0.0.1:9"),
		chromedp.Flag("proxy-bypass-list", "127.0.0.1;localhost"),
		// Nothing of Google's in the background, no crash uploads.
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("disable-features", "Translate,BlinkGenPropertyTrees,OptimizationHints,MediaRouter,DialMediaRouteProvider,AutofillServerCommunication"),
		chromedp.WindowSize(1366, 900),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	} else {
		opts = append(opts, chromedp.Flag("no-sandbox", false))
	}
	return opts
}

// Context returns the tab's context bounded by one step, for chromedp
// actions of a test's own; call the cancel func.
func (b *Browser) Context() (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.ctx, b.step)
}

// Do runs actions within one step and fails the test on an error, naming
// what was being done and the page it was on.
func (b *Browser) Do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := b.Try(b.step, actions...); err != nil {
		b.t.Fatalf("browser: %s: %v (page %s)", what, err, b.Location())
	}
}

// Try runs actions within d and returns their error.
func (b *Browser) Try(d time.Duration, actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, d)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// Location is the tab's URL ("" when it cannot be read).
func (b *Browser) Location() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	u, _ := chromedp.Run(ctx, chromedp.Location())
	return u
}

// Navigate loads url and waits for its load event.
func (b *Browser) Navigate(url string) {
	b.t.Helper()
	if err := b.Try(b.step, chromedp.Navigate(url)); err != nil {
		b.t.Fatalf("browser: navigate to %s: %v", url, err)
	}
}

// ClickNavigate clicks the element sel matches (a link or a submit
// button) and waits, one step, until a new page replaced the current one
// and finished loading (a redirect after a POST included).
func (b *Browser) ClickNavigate(sel string) {
	b.t.Helper()
	// The old page carries a mark the new one lacks.
	Eval[bool](b, `(window.__browsertestOld = true)`)
	b.Do("click "+sel, chromedp.Click(chromedp.CSS(sel)))
	deadline := time.Now().Add(b.step)
	for {
		// Evaluate in whatever document the tab holds now: during the
		// navigation it fails, or answers from the old page.
		ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
		done, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__browsertestOld !== true && document.readyState === "complete"`))
		cancel()
		if err == nil && done {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("browser: click %s: no new page loaded within %s (page %s, last error %v)", sel, b.step, b.Location(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// SetViewport sizes the page as v (and emulates a phone when v.Mobile).
// The page re-lays out at once; a reload is not needed.
func (b *Browser) SetViewport(v Viewport) {
	b.t.Helper()
	opts := []chromedp.EmulateViewportOption{chromedp.EmulateScale(v.Scale), chromedp.EmulatePortrait}
	if v.Width > v.Height {
		opts[1] = chromedp.EmulateLandscape
	}
	if v.Mobile {
		opts = append(opts, chromedp.EmulateMobile, chromedp.EmulateTouch)
	}
	b.Do("set viewport "+v.Name, chromedp.EmulateViewport(v.Width, v.Height, opts...))
}

// WaitVisible waits until the CSS selector sel matches a visible element.
func (b *Browser) WaitVisible(sel string) {
	b.t.Helper()
	b.Do("wait for "+sel+" to be visible", chromedp.WaitVisible(chromedp.CSS(sel)))
}

// WaitReady waits until the CSS selector sel matches an element in the
// page (visible or not).
func (b *Browser) WaitReady(sel string) {
	b.t.Helper()
	b.Do("wait for "+sel, chromedp.WaitReady(chromedp.CSS(sel)))
}

// Present reports whether sel matches an element now (no waiting).
func (b *Browser) Present(sel string) bool {
	b.t.Helper()
	return Eval[bool](b, fmt.Sprintf(`document.querySelector(%s) !== null`, jsString(sel)))
}

// Text is the visible text of the first element sel matches (waiting, one
// step, for it to be visible).
func (b *Browser) Text(sel string) string {
	b.t.Helper()
	ctx, cancel := b.Context()
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("browser: text of %s: %v (page %s)", sel, err, b.Location())
	}
	return strings.TrimSpace(s)
}

// WaitText waits, up to within, until the text of the first element sel
// matches re, and returns that text. It reads the page only: it never
// reloads it. The page runs re as a JavaScript RegExp: keep to the syntax
// both share (a leading (?i) becomes the flag i).
func (b *Browser) WaitText(sel string, re *regexp.Regexp, within time.Duration) string {
	b.t.Helper()
	expr, flags := re.String(), ""
	if rest, ok := strings.CutPrefix(expr, "(?i)"); ok {
		expr, flags = rest, "i"
	}
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%s); if (!e) return ""; const s = (e.innerText || e.textContent || "").trim(); return new RegExp(%s, %s).test(s) ? s : ""; })()`,
		jsString(sel), jsString(expr), jsString(flags))
	ctx, cancel := context.WithTimeout(b.ctx, within+5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Poll[string](js, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(within)))
	if err != nil {
		last, _ := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(() => { const e = document.querySelector(%s); return e ? (e.innerText || e.textContent || "").trim() : "(no element)"; })()`, jsString(sel))))
		b.t.Fatalf("browser: %s never matched %q within %s: last %q (page %s): %v", sel, re, within, last, b.Location(), err)
	}
	return s
}

// Eval evaluates a JavaScript expression in the page within one step and
// decodes its value; an error fails the test.
func Eval[T any](b *Browser, expr string) T {
	b.t.Helper()
	ctx, cancel := b.Context()
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("browser: evaluate %.120q: %v (page %s)", expr, err, b.Location())
	}
	return v
}

// Screenshot saves a full-page PNG of the tab as dir/name.png and returns
// its path.
func (b *Browser) Screenshot(dir, name string) string {
	b.t.Helper()
	ctx, cancel := b.Context()
	defer cancel()
	data, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("browser: screenshot %s: %v (page %s)", name, err, b.Location())
	}
	if _, err := png.DecodeConfig(bytes.NewReader(data)); err != nil {
		b.t.Fatalf("browser: screenshot %s is not a PNG: %v", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.t.Fatal(err)
	}
	return path
}

// ScreenshotDir is where a test writes its screenshots: $GENESIS_SCREENSHOTS
// when set (a relative path is taken from the module's root, the directory
// holding go.mod above the test's package, so GENESIS_SCREENSHOTS=docs/console
// means the same folder from any package), else t.TempDir().
func ScreenshotDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv(ScreenshotsEnv)
	if dir == "" {
		return t.TempDir()
	}
	if filepath.IsAbs(dir) {
		return dir
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for root := wd; ; root = filepath.Dir(root) {
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			return filepath.Join(root, dir)
		}
		if filepath.Dir(root) == root {
			return filepath.Join(wd, dir)
		}
	}
}

// Layout is what CheckLayout measures of the page.
type Layout struct {
	ScrollWidth int `json:"scrollWidth"` // document.documentElement.scrollWidth
	// ClientWidth is the layout viewport's width
	// (document.documentElement.clientWidth): the emulated device's width
	// on a phone.
	ClientWidth int `json:"clientWidth"`
	// InnerWidth is window.innerWidth. On an emulated phone, as on a real
	// one, Chromium zooms out to fit a page wider than the device, and
	// innerWidth grows with the page: so scrollWidth <= innerWidth holds
	// there even for a page that does not fit. ScrollsSideways compares
	// with ClientWidth instead.
	InnerWidth int `json:"innerWidth"`
	// Unlabelled describes every form control (input, select, textarea)
	// without an accessible name: a <label for>, an enclosing <label>,
	// aria-label, aria-labelledby or title. Hidden inputs and buttons need
	// none.
	Unlabelled []string `json:"unlabelled"`
	// Wide names up to ten elements reaching past the layout viewport's
	// right edge (when the page scrolls sideways), to say what to fix.
	Wide []string `json:"wide"`
}

// ScrollsSideways reports whether the page is wider than the device: the
// reader has to scroll (or zoom out) to see all of it.
func (l Layout) ScrollsSideways() bool { return l.ScrollWidth > l.ClientWidth }

// layoutJS measures Layout.
const layoutJS = `(() => {
	const d = document.documentElement;
	const describe = (e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.name ? "[name=" + e.name + "]" : "") + (e.className && typeof e.className === "string" ? "." + e.className.trim().split(/\s+/).join(".") : "");
	const unlabelled = [];
	for (const e of document.querySelectorAll("input, select, textarea")) {
		const type = (e.getAttribute("type") || "").toLowerCase();
		if (type === "hidden" || type === "submit" || type === "button" || type === "reset" || type === "image") continue;
		const named = (e.labels && e.labels.length > 0 && [...e.labels].some(l => l.textContent.trim() !== "")) ||
			(e.getAttribute("aria-label") || "").trim() !== "" ||
			((e.getAttribute("aria-labelledby") || "").split(/\s+/).some(id => id && document.getElementById(id) && document.getElementById(id).textContent.trim() !== "")) ||
			(e.getAttribute("title") || "").trim() !== "";
		if (!named) unlabelled.push(describe(e));
	}
	const wide = [];
	if (d.scrollWidth > d.clientWidth) {
		for (const e of document.body.querySelectorAll("*")) {
			const r = e.getBoundingClientRect();
			if (r.right > d.clientWidth + 1 && wide.length < 10) wide.push(describe(e) + " right=" + Math.round(r.right));
		}
	}
	return {scrollWidth: d.scrollWidth, innerWidth: window.innerWidth, clientWidth: d.clientWidth, unlabelled, wide};
})()`

// CheckLayout measures the page: whether it scrolls sideways, and which
// form controls have no accessible name.
func (b *Browser) CheckLayout() Layout {
	b.t.Helper()
	return Eval[Layout](b, layoutJS)
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	var sb strings.Builder
	sb.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			sb.WriteByte('\\')
			sb.WriteRune(r)
		case r < 0x20 || r == 0x2028 || r == 0x2029:
			fmt.Fprintf(&sb, `\u%04x`, r)
		default:
			sb.WriteRune(r)
		}
	}
	sb.WriteByte('"')
	return sb.String()
}

// testWriter writes into the test's log until the test ends (a late line
// from a browser goroutine is dropped: testing panics on a Log after the
// test).
type testWriter struct {
	t      testing.TB
	mu     sync.Mutex
	closed bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

// lineLogger logs the browser's output a line at a time (at debug level:
// Chromium is chatty about GPU and D-Bus in a container), keeping the last
// lines to show when the browser fails to start.
type lineLogger struct {
	log     *slog.Logger
	mu      sync.Mutex
	partial []byte
	last    []string
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.line(string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	return len(p), nil
}

func (l *lineLogger) line(s string) {
	if s = strings.TrimSpace(s); s == "" {
		return
	}
	l.last = append(l.last, s)
	if len(l.last) > 20 {
		l.last = l.last[1:]
	}
	l.log.Debug("chromium", "line", s)
}

// flush logs a partial last line.
func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.line(string(l.partial))
		l.partial = nil
	}
}

// Last returns the browser's last lines of output.
func (l *lineLogger) Last() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.last...)
}
