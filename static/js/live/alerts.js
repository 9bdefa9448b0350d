/* alert.raised / alert.resolved: say so in the banner slot and let the operator reload when ready
 * (they may be typing). The banners are rendered by the server (templates/components/banner.html,
 * in base.html's #alert-live-template and #alert-resolved-template, the latter only on pages that
 * show an open alert); this only places them, once each. */
(function () {
  "use strict";

  function place(templateId, bannerId) {
    var slot = document.getElementById("banners");
    var template = document.getElementById(templateId);
    if (!slot || !template || document.getElementById(bannerId)) return;
    var banner = template.content.firstElementChild.cloneNode(true);
    var reload = banner.querySelector("a");
    if (reload) reload.href = window.location.href; // the page as it is now (filters pushed to the URL)
    slot.insertBefore(banner, slot.firstChild);
  }

  window.AgentFlow.on("alert.raised", function () {
    place("alert-live-template", "alert-live");
  });
  window.AgentFlow.on("alert.resolved", function () {
    place("alert-resolved-template", "alert-resolved-live");
  });
})();
