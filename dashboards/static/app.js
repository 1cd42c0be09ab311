// Small progressive helpers of the web app (the pages work without them).
(function () {
  "use strict";
  // "Copy" buttons: data-copy names the input whose value goes to the clipboard.
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      const input = document.getElementById(button.dataset.copy);
      input.select();
      if (navigator.clipboard) { navigator.clipboard.writeText(input.value); }
      else { document.execCommand("copy"); }
      button.dataset.done = "1";
    });
  });
  // Poll a JSON URL until a field is set, then reload (badge enrollment waiting for a tap).
  const poll = document.querySelector("[data-poll-url]");
  if (poll) {
    const timer = setInterval(function () {
      fetch(poll.dataset.pollUrl, { headers: { Accept: "application/json" } })
        .then(function (r) { return r.json(); })
        .then(function (body) {
          if (body[poll.dataset.pollField]) { clearInterval(timer); window.location.reload(); }
        })
        .catch(function () {});
    }, 500);
  }
})();
