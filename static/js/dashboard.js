// Progressive enhancements only: every page works without this file.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  var thisYear = new Date().getFullYear();
  var short = new Intl.DateTimeFormat(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short",
  });
  var long = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", timeZoneName: "short",
  });

  // Show <time data-local datetime="…Z"> in the browser's own time zone.
  function localiseTimes(root) {
    root.querySelectorAll("time[data-local]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when)) {
        el.textContent = (when.getFullYear() === thisYear ? short : long).format(when);
      }
    });
  }

  // After htmx swaps in a form with errors or a confirmation, move focus there
  // so keyboard and screen-reader users land where the news is.
  function focusNews(root) {
    var target = root.querySelector(".errorlist, .alert-error, .confirm");
    if (target && root.id === "retry-panel") {
      var focusable = target.closest(".field") ? target.closest(".field").querySelector("input, select, textarea") : target;
      if (focusable) {
        if (!focusable.hasAttribute("tabindex") && !/INPUT|SELECT|TEXTAREA|BUTTON/.test(focusable.tagName)) {
          focusable.setAttribute("tabindex", "-1");
        }
        focusable.focus();
      }
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    localiseTimes(document);
    var note = document.querySelector(".tz-note");
    if (note) {
      note.textContent = "Times are shown in your browser's time zone (" +
        Intl.DateTimeFormat().resolvedOptions().timeZone + ").";
    }
  });
  // htmx 2 fires afterSwap on the element it inserted; detail.target is the one it replaced.
  document.addEventListener("htmx:afterSwap", function (event) {
    localiseTimes(event.target);
    focusNews(event.target);
  });
  document.addEventListener("htmx:oobAfterSwap", function (event) {
    localiseTimes(event.detail.target);
  });
})();
