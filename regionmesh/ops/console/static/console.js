// regionmesh console: live pages by polling (no framework, nothing from a CDN).
// Every <body data-refresh="N"> seconds, fetch the same URL and swap in its <main id="live">,
// unless the operator is typing in a form field there (a filter being edited is not overwritten).
(function () {
  "use strict";
  var seconds = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  if (!(seconds > 0)) { return; }
  function editing() {
    var el = document.activeElement;
    return el && (el.tagName === "INPUT" || el.tagName === "SELECT" || el.tagName === "TEXTAREA");
  }
  function refresh() {
    if (editing() || document.hidden) { return; }
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Requested-With": "console" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null || editing()) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("live"), here = document.getElementById("live");
        var view = doc.getElementById("view"), viewHere = document.getElementById("view");
        if (fresh && here) { here.replaceWith(document.importNode(fresh, true)); }
        if (view && viewHere) { viewHere.replaceWith(document.importNode(view, true)); }
        document.body.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () { /* the next tick tries again */ });
  }
  window.setInterval(refresh, seconds * 1000);
})();
