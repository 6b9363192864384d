// Live parts: every element with data-live is fetched again every few seconds and replaced.
// Forms with data-target post in place and show the answer in that element. No library.
(function () {
  "use strict";
  var LIVE_MS = 2000;
  function refresh(element) {
    fetch(element.dataset.live, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) { if (html !== null) { element.innerHTML = html; } })
      .catch(function () { /* the next tick tries again */ });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(function (element) {
      setInterval(function () { refresh(element); }, LIVE_MS);
    });
    document.querySelectorAll("form[data-target]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        var target = document.getElementById(form.dataset.target);
        fetch(form.action, { method: "POST", body: new FormData(form), credentials: "same-origin" })
          .then(function (response) { return response.text(); })
          .then(function (html) { target.innerHTML = html; });
      });
    });
  });
})();
