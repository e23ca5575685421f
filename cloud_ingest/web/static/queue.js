// The live queue: server-sent events tell that the queue changed; the table body is fetched
// again with the page's filters and swapped in, and the change is announced to screen readers.
// Without JavaScript the page still works (reload to refresh).
(function () {
  "use strict";
  var table = document.getElementById("queue");
  var body = document.getElementById("queue-rows");
  var live = document.getElementById("live-state");
  var announce = document.getElementById("announce");
  if (!table || !body || !window.EventSource) { return; }
  var pending = null;
  var lastText = "";

  function refresh() {
    pending = null;
    fetch(table.dataset.rows, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.redirected || !r.ok) { throw new Error("queue rows: " + r.status); }
        return r.text();
      })
      .then(function (html) {
        body.innerHTML = html;
        body.dataset.updated = String(Date.now());
        if (lastText) { announce.textContent = announce.dataset.changed + ": " + lastText; }
      })
      .catch(function () { live.textContent = live.dataset.offline; });
  }

  var source = new EventSource(table.dataset.stream, { withCredentials: true });
  source.addEventListener("ready", function () {
    live.textContent = live.dataset.live;
    live.classList.remove("offline");
    document.body.dataset.stream = "ready";
  });
  source.addEventListener("change", function (ev) {
    try { lastText = JSON.parse(ev.data).text || ""; } catch (e) { lastText = ""; }
    if (pending === null) { pending = window.setTimeout(refresh, 150); }
  });
  source.addEventListener("error", function () {
    live.textContent = live.dataset.offline;
    live.classList.add("offline");
  });
})();
