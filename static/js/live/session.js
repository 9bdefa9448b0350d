/* A session's chat panel: the streamed reply, the stored log, the head's status and run
 * indicator, the composer following the gateway's status, and the panel's registration for
 * chat polling (BATCH-003), renewed every 10 s while the tab is visible. */
(function () {
  "use strict";

  var AF = window.AgentFlow;
  var head = document.getElementById("session-head");
  if (!head) return; // not a chat panel

  function isThisSession(m) {
    return head.dataset.sessionKey === m.session_key;
  }

  function register() {
    AF.send({ type: "panel.open", gateway_id: Number(head.dataset.gatewayId), session_key: head.dataset.sessionKey });
  }

  // The streamed reply of a finished run stays up until the stored messages arrive (BATCH-003
  // polls open panels every few seconds and pushes chat.messages), so it never vanishes in
  // between; without that push it goes after 15 s.
  var streamTimer = null;
  function clearStream() {
    var stream = document.getElementById("stream");
    if (streamTimer) { clearTimeout(streamTimer); streamTimer = null; }
    if (!stream) return;
    stream.hidden = true;
    delete stream.dataset.done;
    document.getElementById("stream-text").textContent = "";
  }

  // Abort needs a run in flight and a gateway that takes writes.
  var running = !document.getElementById("run-indicator").hidden;
  var gatewayDown = !!document.getElementById("send-disabled");
  function syncAbort() {
    var abort = document.getElementById("abort");
    if (!abort) return;
    if (head.hasAttribute("data-viewer")) return; // a viewer's controls stay disabled, with the reason
    abort.disabled = !running || gatewayDown;
    if (gatewayDown) return; // its title keeps the gateway's reason
    abort.title = running ? "" : "no run in flight";
    if (running) abort.removeAttribute("title");
  }

  function showRun(isRunning) {
    var run = document.getElementById("run-indicator");
    if (run) run.hidden = !isRunning;
    running = isRunning;
    syncAbort();
  }

  // The abort's answer ("Abort requested." or why not) clears after a few seconds.
  var abortTimer = null;
  document.body.addEventListener("htmx:afterSwap", function (e) {
    var result = document.getElementById("abort-result");
    if (!result || e.detail.target !== result) return;
    if (abortTimer) clearTimeout(abortTimer);
    abortTimer = setTimeout(function () { result.textContent = ""; abortTimer = null; }, 4000);
  });
  // An error answer (400) is swapped in too: htmx leaves 4xx bodies out unless told otherwise.
  document.body.addEventListener("htmx:beforeSwap", function (e) {
    if (e.detail.target && e.detail.target.id === "abort-result" && e.detail.xhr.status === 400) {
      e.detail.shouldSwap = true;
      e.detail.isError = false;
    }
  });

  AF.on("gateway.status", function (m) {
    // The composer follows the gateway: sending needs it up.
    var composer = document.getElementById("composer");
    if (!composer || Number(head.dataset.gatewayId) !== m.gateway_id) return;
    var down = m.status !== "connected";
    composer.querySelectorAll("textarea, button").forEach(function (el) { el.disabled = down; });
    var note = document.getElementById("send-disabled-live");
    if (down && !note) {
      note = document.createElement("p");
      note.id = "send-disabled-live";
      note.className = "reason";
      composer.querySelector(".row").appendChild(note);
    }
    if (note) note.textContent = down ? "Sending is paused. Gateway status: " + m.label + "." : "";
    gatewayDown = down;
    syncAbort();
  });

  AF.on("sessions.changed", function (m) {
    (m.changes || []).forEach(function (c) {
      if (!isThisSession(c)) return;
      AF.setStatus(head.querySelector(".status"), c.status, c.status_label);
      showRun(!!c.has_active_run);
      AF.refetchSoon(document.getElementById("session-meta")); // tokens, model, "updated … ago"
    });
  });

  AF.on("agent.run", function (m) {
    if (!isThisSession(m)) return;
    showRun(m.phase === "start");
    AF.pulse(head);
  });

  AF.on("chat.stream", function (m) {
    var stream = document.getElementById("stream");
    if (!stream) return;
    var text = document.getElementById("stream-text");
    var label = stream.querySelector(".live");
    if (m.state === "delta") {
      if (stream.dataset.done) clearStream(); // a new run: start afresh
      stream.hidden = false;
      if (label) label.hidden = false;
      text.textContent += m.delta; // textContent: agent output is text, never markup
    } else {
      if (m.state === "error" && m.error) { text.textContent += "\n[error] " + m.error; }
      stream.dataset.done = m.state;
      if (label) label.hidden = true;
      if (streamTimer) clearTimeout(streamTimer);
      streamTimer = setTimeout(clearStream, 15000);
      AF.refetch(document.getElementById("chat-log"));
    }
  });

  AF.on("chat.messages", function () {
    var done = AF.refetch(document.getElementById("chat-log"));
    var stream = document.getElementById("stream");
    if (stream && stream.dataset.done) {
      if (done && done.then) done.then(clearStream); else clearStream();
    }
  });

  AF.onOpen(register);
  // A brand-new session (New chat) is on record once its first message is sent: the server refuses
  // panels of unknown sessions, so register again at once rather than at the next renewal.
  document.body.addEventListener("htmx:afterRequest", function (e) {
    if (e.detail.successful && e.detail.elt && e.detail.elt.id === "composer") register();
  });
  // Keep the panel registered for chat polling (its registration expires on its own).
  setInterval(function () { if (!document.hidden) register(); }, 10000);
})();
