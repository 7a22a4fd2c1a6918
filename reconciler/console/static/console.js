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

  // setupLive follows the server's event stream: "lifecycle" events carry
  // one tenant's new state; "resync" events the current state of every
  // tenant this page shows (named in the stream's URL), sent when the
  // stream opens or reopens and whenever the server may have missed a
  // change (its LISTEN connection came back, this stream fell behind).
  function setupLive() {
    var src = document.body.getAttribute("data-live-stream");
    if (!src || !window.EventSource) return;
    var live = document.querySelectorAll("[data-live]");
    if (!live.length) return;
    var ids = [], seen = {};
    for (var i = 0; i < live.length && ids.length < 200; i++) {
      var v = live[i].getAttribute("data-live") || "";
      if (v.indexOf("lifecycle:") !== 0) continue;
      var id = v.slice("lifecycle:".length);
      if (!seen[id]) { seen[id] = true; ids.push("t=" + encodeURIComponent(id)); }
    }
    var es = new EventSource(ids.length ? src + "?" + ids.join("&") : src);
    function show(tenant, lifecycle) {
      if (typeof tenant !== "string" || typeof lifecycle !== "string") return;
      var sel = '[data-live="lifecycle:' + (window.CSS && CSS.escape ? CSS.escape(tenant) : tenant) + '"]';
      var els = document.querySelectorAll(sel);
      for (var i = 0; i < els.length; i++) {
        if (els[i].textContent === lifecycle) continue;
        els[i].textContent = lifecycle;
        els[i].setAttribute("data-updated", String(Date.now()));
      }
    }
    es.addEventListener("lifecycle", function (ev) {
      var d;
      try { d = JSON.parse(ev.data); } catch (e) { return; }
      if (d) show(d.tenant, d.lifecycle);
    });
    es.addEventListener("resync", function (ev) {
      var d;
      try { d = JSON.parse(ev.data); } catch (e) { return; }
      if (!d || !d.lifecycles || typeof d.lifecycles !== "object") return;
      for (var t in d.lifecycles) {
        if (Object.prototype.hasOwnProperty.call(d.lifecycles, t)) show(t, d.lifecycles[t]);
      }
      document.body.setAttribute("data-live-synced", String(Date.now()));
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
