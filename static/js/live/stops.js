/* stop.changed: an emergency stop was engaged or released somewhere. Every open page redraws the
 * banner from the event's rows with the server-rendered template (templates/components/
 * stop_banner_row.html), without a request, so an operator sees a stop the moment it is engaged.
 * After a resync (missed events) the core re-fetches it (its data-fragment). The header's Emergency stop link
 * opens its confirmation dialog (without JavaScript it is a link to the Stops page's form). */
(function () {
  "use strict";

  function slot() { return document.getElementById("stop-banners"); }

  function draw(rows) {
    var holder = slot();
    var template = document.getElementById("stop-banner-template");
    if (!holder || !template) return;
    var base = holder.dataset.stopsUrl;
    holder.textContent = "";
    rows.forEach(function (row) {
      var banner = template.content.firstElementChild.cloneNode(true);
      banner.id = "stop-banner-" + row.id;
      banner.dataset.stop = row.id;
      banner.querySelector("[data-slot=label]").textContent = row.label;
      banner.querySelector("[data-slot=reason]").textContent = row.reason;
      banner.querySelector("[data-slot=by]").textContent = row.automatic ? "automatic (" + row.automatic + ")" : row.who;
      var since = banner.querySelector("[data-slot=since]");
      since.setAttribute("datetime", row.since);
      since.textContent = new Date(row.since).toLocaleTimeString();
      banner.querySelector("[data-slot=url]").href = base + row.id + "/";
      holder.appendChild(banner);
    });
  }

  if (window.AgentFlow && window.AgentFlow.on) {
    window.AgentFlow.on("stop.changed", function (message) { draw(message.stops || []); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var open = document.getElementById("stop-button");
    var dialog = document.getElementById("stop-dialog");
    if (!open || !dialog || typeof dialog.showModal !== "function") return;
    open.addEventListener("click", function (event) {
      event.preventDefault();
      dialog.showModal();
      var reason = dialog.querySelector("textarea[name=reason]");
      if (reason) reason.focus();
    });
  });
})();
