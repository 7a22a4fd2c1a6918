// Genesis fleet console: progressive enhancement only. Pages work without
// it; with it, the theme toggle needs no round trip and elements marked
// data-live="lifecycle:ID" follow the server's event stream.
(function () {
  "use strict";
  var root = document.documentElement;

  function systemDark() {
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  }

  function currentTheme() {
    var t = root.getAttribute("data-theme");
    if (t === "dark" || t === "light") return t;
    return systemDark() ? "dark" : "light";
  }

  function setupTheme() {
    var form = document.getElementById("theme");
    var back = form && form.querySelector('input[name="back"]');
    if (back) back.value = location.pathname + location.search;
    if (!form) return;
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var next = currentTheme() === "dark" ? "light" : "dark";
      root.setAttribute("data-theme", next);
      var c = "genesis_theme=" + next + "; path=/console; max-age=31536000; samesite=strict";
      if (location.protocol === "https:") c += "; secure";
      document.cookie = c;
      var btn = document.getElementById("theme-toggle");
      if (btn) btn.setAttribute("aria-pressed", next === "dark" ? "true" : "false");
    });
  }

  function setupLive() {
    var src = document.body.getAttribute("data-live-stream");
    if (!src || !window.EventSource) return;
    if (!document.querySelector("[data-live]")) return;
    var es = new EventSource(src);
    es.addEventListener("lifecycle", function (ev) {
      var d;
      try { d = JSON.parse(ev.data); } catch (e) { return; }
      if (!d || typeof d.tenant !== "string" || typeof d.lifecycle !== "string") return;
      var sel = '[data-live="lifecycle:' + (window.CSS && CSS.escape ? CSS.escape(d.tenant) : d.tenant) + '"]';
      var els = document.querySelectorAll(sel);
      for (var i = 0; i < els.length; i++) {
        els[i].textContent = d.lifecycle;
        els[i].setAttribute("data-updated", String(Date.now()));
      }
    });
    window.addEventListener("pagehide", function () { es.close(); });
  }

  function init() {
    setupTheme();
    setupLive();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
