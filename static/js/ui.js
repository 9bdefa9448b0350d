/* Page chrome that needs a little script: the colour theme (light, dark or as the system, kept in
 * localStorage) and the menu button of the phone layout. Runs in <head> without defer so the
 * stored theme is applied before the first paint; the buttons are wired once the DOM is there. */
(function () {
  "use strict";

  var KEY = "agentflow-theme";
  var root = document.documentElement;
  root.classList.add("js");

  function stored() {
    try { return localStorage.getItem(KEY) || "system"; } catch (err) { return "system"; }
  }

  function apply(choice) {
    if (choice === "light" || choice === "dark") root.dataset.theme = choice;
    else delete root.dataset.theme;
    document.querySelectorAll("[data-theme-choice]").forEach(function (b) {
      b.setAttribute("aria-pressed", String(b.dataset.themeChoice === choice));
    });
  }

  apply(stored());

  // Without an emoji font an agent's emoji is an empty box: draw one and look for colour.
  function emojiFont() {
    try {
      var canvas = document.createElement("canvas");
      canvas.width = canvas.height = 20;
      var ctx = canvas.getContext("2d");
      ctx.textBaseline = "top";
      ctx.font = "16px sans-serif";
      ctx.fillText("\ud83e\udd80", 0, 0);
      var px = ctx.getImageData(0, 0, 20, 20).data;
      for (var i = 0; i < px.length; i += 4) {
        if (px[i + 3] && (px[i] !== px[i + 1] || px[i + 1] !== px[i + 2])) return true;
      }
      return false;
    } catch (err) { return true; }
  }
  if (!emojiFont()) root.classList.add("no-emoji");

  document.addEventListener("DOMContentLoaded", function () {
    apply(stored());
    document.querySelectorAll("[data-theme-choice]").forEach(function (b) {
      b.addEventListener("click", function () {
        try { localStorage.setItem(KEY, b.dataset.themeChoice); } catch (err) { /* private mode: this page only */ }
        apply(b.dataset.themeChoice);
      });
    });

    var button = document.getElementById("menu-button");
    var panel = document.getElementById("nav-panel");
    if (!button || !panel) return;
    function setOpen(open) {
      button.setAttribute("aria-expanded", String(open));
      panel.classList.toggle("open", open);
    }
    button.addEventListener("click", function () {
      setOpen(button.getAttribute("aria-expanded") !== "true");
      if (panel.classList.contains("open")) {
        var first = panel.querySelector("a, button");
        if (first) first.focus();
      }
    });
    document.addEventListener("keydown", function (e) {
      if (e.key === "Escape" && panel.classList.contains("open")) { setOpen(false); button.focus(); }
    });
  });
})();
