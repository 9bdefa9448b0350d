/* alert.raised: say so in the banner slot and let the operator reload when ready (they may be
 * typing). The banner is rendered by the server (templates/components/banner.html, in the
 * #alert-live-template of base.html); this only places it. */
(function () {
  "use strict";

  window.AgentFlow.on("alert.raised", function () {
    var slot = document.getElementById("banners");
    var template = document.getElementById("alert-live-template");
    if (!slot || !template || document.getElementById("alert-live")) return;
    var banner = template.content.firstElementChild.cloneNode(true);
    var reload = banner.querySelector("a");
    if (reload) reload.href = window.location.href; // the page as it is now (filters pushed to the URL)
    slot.insertBefore(banner, slot.firstChild);
  });
})();
