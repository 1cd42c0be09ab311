// Live floor: tiles are replaced by the server's Server-Sent Events; elapsed times tick here.
(function () {
  "use strict";
  const tiles = document.getElementById("tiles");
  const status = document.getElementById("live-status");

  function pad(n) { return String(n).padStart(2, "0"); }
  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    return Math.floor(s / 3600) + ":" + pad(Math.floor((s % 3600) / 60)) + ":" + pad(s % 60);
  }
  function tick() {
    const now = Date.now() / 1000;
    document.querySelectorAll("[data-started]").forEach(function (el) {
      el.textContent = duration(now - Number(el.dataset.started));
    });
  }
  setInterval(tick, 1000);
  tick();

  if (!tiles || !window.EventSource) { return; }
  const source = new EventSource(tiles.dataset.events);
  source.addEventListener("tiles", function (event) {
    tiles.innerHTML = event.data;
    tick();
    if (status) { status.textContent = status.dataset.live + " · " + new Date().toLocaleTimeString(document.documentElement.lang); }
  });
  source.addEventListener("error", function () {
    if (status) { status.textContent = status.dataset.lost; }
  });
})();
