package console

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"genesis.dev/fleet/reconciler/auth"
)

// loginForm is the login page's state.
type loginForm struct {
	Error    string
	Insecure bool
}

// loginState is the sealed genesis_login cookie: the id the login form's
// CSRF token is derived from.
type loginState struct {
	ID      string `json:"n"`
	Expires int64  `json:"e"`
}

// loginPage is GET /console/login. A viewer with a session goes to the
// overview.
func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if _, ok := c.session(r); ok {
		http.Redirect(w, r, "/console/", http.StatusSeeOther)
		return
	}
	c.renderLogin(w, r, http.StatusOK, "")
}

// renderLogin shows the login form with a fresh CSRF id.
func (c *Console) renderLogin(w http.ResponseWriter, r *http.Request, status int, msg string) {
	st := loginState{ID: randomID(), Expires: c.cfg.Now().Add(loginTTL).Unix()}
	val, err := c.keys.seal(loginCookie, st)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	setCookie(w, r, loginCookie, val, loginTTL, true)
	v := &viewer{Theme: themeOf(r), csrf: st.ID, Insecure: c.cfg.Auth == nil}
	c.render(w, r, status, "login", "Log in", v, loginForm{Error: msg, Insecure: c.cfg.Auth == nil})
}

// login is POST /console/login: the token is checked as the API checks it
// (and must hold the dashboard or admin scope); a session cookie is set.
// A refused token answers 401, which the replica's limit on
// unauthenticated requests counts against the client's address.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		c.renderLogin(w, r, http.StatusBadRequest, "form: "+err.Error())
		return
	}
	if !sameOrigin(r) {
		c.renderLogin(w, r, http.StatusForbidden, "cross-origin login refused")
		return
	}
	var st loginState
	ck, err := r.Cookie(loginCookie)
	if err != nil || c.keys.open(loginCookie, ck.Value, &st) != nil || c.cfg.Now().Unix() >= st.Expires ||
		!c.keys.checkCSRF(st.ID, r.PostForm.Get("csrf")) {
		c.renderLogin(w, r, http.StatusForbidden, "csrf: the login form expired or was not this console's; try again")
		return
	}
	token := strings.TrimSpace(r.PostForm.Get("token"))
	if c.cfg.Auth != nil {
		if token == "" {
			c.renderLogin(w, r, http.StatusUnauthorized, "token: enter an API token")
			return
		}
		id, err := c.authenticate(token)
		if err != nil {
			c.log.Warn("console login refused", "reason", "unknown token")
			c.renderLogin(w, r, http.StatusUnauthorized, "token: unknown token")
			return
		}
		if !id.Has(auth.Dashboard) {
			c.log.Warn("console login refused", "caller", id.Name, "reason", "scope")
			c.renderLogin(w, r, http.StatusForbidden, fmt.Sprintf("token %q lacks the dashboard scope the console needs", id.Name))
			return
		}
		c.log.Info("console login", "caller", id.Name)
	} else {
		token = ""
	}
	s := session{Token: token, Expires: c.cfg.Now().Add(c.cfg.SessionTTL).Unix(), ID: randomID()}
	val, err := c.keys.seal(sessionCookie, s)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	setCookie(w, r, sessionCookie, val, c.cfg.SessionTTL, true)
	setCookie(w, r, loginCookie, "", -1, true)
	http.Redirect(w, r, "/console/", http.StatusSeeOther)
}

// logout is POST /console/logout.
func (c *Console) logout(w http.ResponseWriter, r *http.Request, v *viewer) {
	setCookie(w, r, sessionCookie, "", -1, true)
	c.log.Info("console logout", "caller", v.ID.Name)
	http.Redirect(w, r, "/console/login", http.StatusSeeOther)
}

// theme is POST /console/theme: the toggle without script (the script
// sets the cookie itself and does not post). It flips the stored theme
// and returns to the page. It needs a same-origin request with the CSRF
// token of the session or, on the login page, of the login form.
func (c *Console) theme(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil || !sameOrigin(r) {
		http.Error(w, "theme: bad or cross-origin form", http.StatusForbidden)
		return
	}
	id := ""
	if v, ok := c.session(r); ok {
		id = v.csrf
	} else if ck, err := r.Cookie(loginCookie); err == nil {
		var st loginState
		if c.keys.open(loginCookie, ck.Value, &st) == nil {
			id = st.ID
		}
	}
	if !c.keys.checkCSRF(id, r.PostForm.Get("csrf")) {
		http.Error(w, "csrf: missing or wrong token", http.StatusForbidden)
		return
	}
	next := "dark"
	if themeOf(r) == "dark" {
		next = "light"
	}
	setCookie(w, r, themeCookie, next, 365*24*time.Hour, false)
	http.Redirect(w, r, localPath(r.PostForm.Get("back")), http.StatusSeeOther)
}

// localPath is back when it is a console path, else the overview (no open
// redirect).
func localPath(back string) string {
	u, err := url.Parse(back)
	if err != nil || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(u.Path, "/console/") || strings.HasPrefix(back, "//") {
		return "/console/"
	}
	return u.RequestURI()
}
