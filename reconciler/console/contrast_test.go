package console

import (
	"fmt"
	"io/fs"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The console's colours are CSS custom properties of :root, one set per
// theme. TestContrast reads the embedded stylesheet, finds where each
// colour is used, and computes the WCAG 2.x contrast ratio of every pair
// a person sees:
//
//   - text: every colour a rule sets as color, on every surface text sits
//     on (the page, and each background set by a rule that leaves the
//     text colour to its content: header, cards, pills), and each rule's
//     own color on its own background (buttons, inputs, flash, banner):
//     at least 4.5:1 (WCAG 1.4.3, normal-size text);
//   - the boundaries that identify a control (the borders of buttons,
//     inputs and selects) and the focus outline, on every surface: at
//     least 3:1 (WCAG 1.4.11).
//
// Other borders (table rules, the edges of cards and of the header) are
// decoration and exempt. Every custom property must be one of these
// roles, so a new colour cannot escape the check.

// cssRule is one rule of the stylesheet: its selector and declarations.
type cssRule struct {
	selector string
	decls    map[string]string
}

// parseCSS splits css into rules, flattening @media blocks (the rules in
// them are listed with the media condition prefixed to the selector).
func parseCSS(t *testing.T, css string) []cssRule {
	t.Helper()
	css = regexp.MustCompile(`(?s)/\*.*?\*/`).ReplaceAllString(css, "")
	var out []cssRule
	var media []string
	for rest := css; strings.TrimSpace(rest) != ""; {
		open, close := strings.IndexByte(rest, '{'), strings.IndexByte(rest, '}')
		if close >= 0 && (open < 0 || close < open) { // the end of an @media block
			if len(media) == 0 {
				t.Fatalf("console.css: unbalanced } near %q", rest[:min(len(rest), 40)])
			}
			media = media[:len(media)-1]
			rest = rest[close+1:]
			continue
		}
		if open < 0 {
			t.Fatalf("console.css: trailing text %q", rest)
		}
		sel := strings.TrimSpace(rest[:open])
		if strings.HasPrefix(sel, "@media") {
			media = append(media, sel)
			rest = rest[open+1:]
			continue
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			t.Fatalf("console.css: unterminated rule %q", sel)
		}
		body := rest[open+1 : open+end]
		r := cssRule{selector: strings.TrimSpace(strings.Join(append(slices.Clone(media), sel), " ")), decls: map[string]string{}}
		for _, d := range strings.Split(body, ";") {
			k, v, ok := strings.Cut(d, ":")
			if ok {
				r.decls[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
		}
		out = append(out, r)
		rest = rest[open+end+1:]
	}
	return out
}

// rgb is a colour.
type rgb [3]float64

func parseHex(s string) (rgb, error) {
	if len(s) != 7 || s[0] != '#' {
		return rgb{}, fmt.Errorf("%q is not #rrggbb", s)
	}
	var c rgb
	for i := range 3 {
		v, err := strconv.ParseUint(s[1+2*i:3+2*i], 16, 8)
		if err != nil {
			return rgb{}, fmt.Errorf("%q is not #rrggbb", s)
		}
		c[i] = float64(v) / 255
	}
	return c, nil
}

// luminance is WCAG 2.x relative luminance.
func (c rgb) luminance() float64 {
	lin := func(v float64) float64 {
		if v <= 0.04045 {
			return v / 12.92
		}
		return math.Pow((v+0.055)/1.055, 2.4)
	}
	return 0.2126*lin(c[0]) + 0.7152*lin(c[1]) + 0.0722*lin(c[2])
}

// contrast is the WCAG 2.x contrast ratio of a and b.
func contrast(a, b rgb) float64 {
	la, lb := a.luminance(), b.luminance()
	if la < lb {
		la, lb = lb, la
	}
	return (la + 0.05) / (lb + 0.05)
}

// TestContrastRatio checks the ratio arithmetic against known values.
func TestContrastRatio(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want float64
	}{
		{"#000000", "#ffffff", 21}, {"#ffffff", "#ffffff", 1}, {"#767676", "#ffffff", 4.54}, {"#777777", "#ffffff", 4.48},
	} {
		a, _ := parseHex(tc.a)
		b, _ := parseHex(tc.b)
		if got := contrast(a, b); math.Abs(got-tc.want) > 0.01 {
			t.Errorf("contrast(%s, %s) = %.3f, want %.2f", tc.a, tc.b, got, tc.want)
		}
	}
}

var varRe = regexp.MustCompile(`var\(--([a-z0-9-]+)\)`)

// varsOf is the custom properties a rule declares.
func varsOf(t *testing.T, r cssRule) map[string]rgb {
	t.Helper()
	out := map[string]rgb{}
	for k, v := range r.decls {
		if name, ok := strings.CutPrefix(k, "--"); ok {
			c, err := parseHex(v)
			if err != nil {
				t.Fatalf("%s: --%s: %v", r.selector, name, err)
			}
			out[name] = c
		}
	}
	return out
}

func TestContrast(t *testing.T) {
	b, err := fs.ReadFile(assets, "static/console.css")
	if err != nil {
		t.Fatal(err)
	}
	rules := parseCSS(t, string(b))
	themes := map[string]map[string]rgb{}
	var systemDark map[string]rgb
	var used []cssRule
	for _, r := range rules {
		switch r.selector {
		case ":root":
			themes["light"] = varsOf(t, r)
		case `:root[data-theme="dark"]`:
			themes["dark"] = varsOf(t, r)
		case `@media (prefers-color-scheme: dark) :root:not([data-theme="light"])`:
			systemDark = varsOf(t, r)
		default:
			used = append(used, r)
		}
	}
	if len(themes) != 2 || systemDark == nil {
		t.Fatalf("console.css: want :root, :root[data-theme=dark] and the prefers-color-scheme: dark block; found %v", slices.Collect(maps.Keys(themes)))
	}
	// The system's dark theme is the toggle's dark theme.
	if !maps.Equal(systemDark, themes["dark"]) {
		t.Errorf("the prefers-color-scheme: dark colours differ from :root[data-theme=\"dark\"]")
	}
	if !slices.Equal(slices.Sorted(maps.Keys(themes["light"])), slices.Sorted(maps.Keys(themes["dark"]))) {
		t.Errorf("the themes define different colours: %v and %v", slices.Sorted(maps.Keys(themes["light"])), slices.Sorted(maps.Keys(themes["dark"])))
	}

	// Roles, from the rules that use the colours.
	one := func(r cssRule, props ...string) string {
		for _, p := range props {
			if m := varRe.FindStringSubmatch(r.decls[p]); m != nil {
				return m[1]
			}
		}
		return ""
	}
	control := regexp.MustCompile(`(^|[\s,])(button|input|select|textarea)\b`)
	texts := map[string][]string{}    // colour → selectors using it as text
	surfaces := map[string][]string{} // background text sits on → selectors
	type pair struct{ fg, bg, where string }
	var own []pair // a rule's text on its own background
	boundaries := map[string][]string{}
	decorative := map[string]bool{}
	for _, r := range used {
		fg, bg := one(r, "color"), one(r, "background", "background-color")
		switch {
		case fg != "" && bg != "":
			own = append(own, pair{fg, bg, r.selector})
		case fg != "":
			texts[fg] = append(texts[fg], r.selector)
		case bg != "":
			surfaces[bg] = append(surfaces[bg], r.selector)
		}
		if r.selector == "body" && bg != "" { // the page: every text may sit on it
			surfaces[bg] = append(surfaces[bg], r.selector)
			texts[fg] = append(texts[fg], r.selector)
		}
		if o := one(r, "outline", "outline-color"); o != "" {
			boundaries[o] = append(boundaries[o], r.selector+" outline")
		}
		if bd := one(r, "border", "border-color", "border-bottom", "border-top"); bd != "" {
			if control.MatchString(r.selector) {
				boundaries[bd] = append(boundaries[bd], r.selector+" border")
			} else {
				decorative[bd] = true
			}
		}
	}
	roles := map[string]bool{}
	for _, m := range []map[string][]string{texts, surfaces, boundaries} {
		for k := range m {
			roles[k] = true
		}
	}
	for _, p := range own {
		roles[p.fg], roles[p.bg] = true, true
	}
	for name := range themes["light"] {
		if !roles[name] && !decorative[name] {
			t.Errorf("--%s is defined but neither text, a background, a control's boundary nor a decorative border", name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(roles)) {
		if _, ok := themes["light"][name]; !ok {
			t.Errorf("var(--%s) is used but not defined", name)
		}
	}

	for _, theme := range []string{"light", "dark"} {
		c := themes[theme]
		check := func(fg, bg string, want float64, why string) {
			t.Helper()
			if got := contrast(c[fg], c[bg]); got < want {
				t.Errorf("%s theme: --%s on --%s is %.2f:1, want at least %.1f:1 (%s)", theme, fg, bg, got, want, why)
			}
		}
		for _, fg := range slices.Sorted(maps.Keys(texts)) {
			for _, bg := range slices.Sorted(maps.Keys(surfaces)) {
				check(fg, bg, 4.5, "text of "+strings.Join(texts[fg], ", ")+" on "+strings.Join(surfaces[bg], ", "))
			}
		}
		for _, p := range own {
			check(p.fg, p.bg, 4.5, "text of "+p.where)
		}
		for _, bd := range slices.Sorted(maps.Keys(boundaries)) {
			for _, bg := range slices.Sorted(maps.Keys(surfaces)) {
				check(bd, bg, 3, strings.Join(boundaries[bd], ", ")+" on "+strings.Join(surfaces[bg], ", "))
			}
		}
	}
	// The check must see what the stylesheet is known to use.
	for _, want := range []string{"fg", "muted", "link", "ok", "warn", "err"} {
		if _, ok := texts[want]; !ok {
			t.Errorf("--%s is not found used as text: the stylesheet's parsing is off", want)
		}
	}
	for _, want := range []string{"bg", "card", "pill"} {
		if _, ok := surfaces[want]; !ok {
			t.Errorf("--%s is not found used as a surface: the stylesheet's parsing is off", want)
		}
	}
	if len(boundaries) == 0 {
		t.Error("no control boundary found: the stylesheet's parsing is off")
	}
}
