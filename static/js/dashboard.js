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

// Bulk retry: "select all on this page" and the count on "Retry selected (N)". Without
// JavaScript the checked boxes are posted as they are, and "Retry all on this page" stands in.
(function () {
  function boxes(form) {
    // Checkboxes inside the form and those tied to it by a form="…" attribute alike.
    return Array.from(document.querySelectorAll('input[type="checkbox"][name="task"]')).filter(
      function (box) { return box.form === form; }
    );
  }
  function refresh(form) {
    var checked = boxes(form).filter(function (b) { return b.checked; }).length;
    var count = form.querySelector(".selected-count");
    if (count) count.textContent = String(checked);
    var all = form.querySelector(".select-all");
    if (all) all.checked = checked > 0 && checked === boxes(form).length;
  }
  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.matches(".bulk-select .select-all")) {
      var form = target.closest("form");
      boxes(form).forEach(function (b) { b.checked = target.checked; });
      refresh(form);
    } else if (target.matches('input[type="checkbox"][name="task"]')) {
      if (target.form && target.form.classList.contains("bulk-select")) refresh(target.form);
    }
  });
})();
