/* AgentFlow live updates.
 *
 * The htmx ws extension owns the socket (reconnects with full-jitter backoff). The server
 * sends small JSON events; this file applies them in place (status text, pulses, run
 * indicators, streamed chat text) and, for structural changes, re-fetches the affected
 * fragment, rendered server-side from the page's own templates. After a reconnect it
 * re-fetches every visible fragment, so the page is never silently stale. While the tab is
 * hidden, events are only noted and the page re-syncs when it becomes visible again.
 */
(function () {
  "use strict";

  var body = document.body;
  var indicator = document.getElementById("live-status");
  var socket = null;
  var everConnected = false;
  var staleWhileHidden = false;
  var pending = {};

  function setState(state, text) {
    if (!indicator) return;
    indicator.dataset.state = state;
    indicator.querySelector(".label").textContent = text;
  }

  function pulse(el) {
    if (!el) return;
    el.classList.remove("pulse");
    void el.offsetWidth; // restart the CSS animation
    el.classList.add("pulse");
    el.dataset.pulsedAt = String(Date.now());
  }

  function refetch(el) {
    var url = el && (el.dataset.fragment || el.dataset.agentFragment);
    if (!url || !window.htmx) return;
    // A re-fetch replaces the nodes an event just pulsed (e.g. the agent of a new session):
    // carry a recent pulse over to the fresh nodes, or it would vanish mid-animation.
    var recent = {};
    el.querySelectorAll("[data-pulsed-at][id]").forEach(function (n) {
      if (Date.now() - Number(n.dataset.pulsedAt) < 1000) recent[n.id] = n.dataset.pulsedAt;
    });
    var done = htmx.ajax("GET", url + window.location.search, { target: el, swap: "outerHTML" });
    if (done && done.then) {
      done.then(function () {
        Object.keys(recent).forEach(function (id) {
          var n = document.getElementById(id);
          if (n && !n.dataset.pulsedAt) { n.classList.add("pulse"); n.dataset.pulsedAt = recent[id]; }
        });
      });
    }
    return done;
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

  // Coalesce bursts: one re-fetch per element per 300 ms.
  function refetchSoon(el) {
    if (!el || !el.id) return;
    if (pending[el.id]) return;
    pending[el.id] = setTimeout(function () {
      delete pending[el.id];
      refetch(document.getElementById(el.id));
    }, 300);
  }

  function resync() {
    document.querySelectorAll("[data-fragment]").forEach(refetch);
  }

  function gatewaySection(id) {
    return document.getElementById("gateway-" + id);
  }

  function byData(root, attr, value) {
    if (!root) return null;
    var nodes = root.querySelectorAll("[" + attr + "]");
    for (var i = 0; i < nodes.length; i++) {
      if (nodes[i].getAttribute(attr) === value) return nodes[i];
    }
    return null;
  }

  function setStatus(node, status) {
    node.className = node.className.replace(/\bst-(active|idle|offline)\b/g, "").trim() + " st-" + status;
    var label = node.querySelector("[data-status]");
    if (label) label.textContent = status.charAt(0).toUpperCase() + status.slice(1);
  }

  function setRunning(node, running) {
    node.classList.toggle("running", running);
    var live = node.querySelector(":scope > details > summary > .live, :scope > .live");
    if (live) live.hidden = !running;
  }

  var handlers = {
    "gateway.status": function (m) {
      var health = document.getElementById("health-" + m.gateway_id);
      if (health) {
        health.dataset.fragment = health.dataset.fragment || "/fragments/gateways/" + m.gateway_id + "/health/";
        refetch(health);
      }
      // On a chat panel of this gateway: the composer follows the gateway (sending needs it up).
      var head = document.getElementById("session-head");
      var composer = document.getElementById("composer");
      if (head && composer && Number(head.dataset.gatewayId) === m.gateway_id) {
        var down = m.status !== "connected";
        composer.querySelectorAll("textarea, button").forEach(function (el) { el.disabled = down; });
        var note = document.getElementById("send-disabled-live");
        if (down && !note) {
          note = document.createElement("p");
          note.id = "send-disabled-live";
          note.className = "reason";
          composer.querySelector(".row").appendChild(note);
        }
        if (note) note.textContent = down ? "The gateway is " + m.status.replace("_", " ") + ": sending is paused." : "";
      }
    },
    "sessions.changed": function (m) {
      var section = gatewaySection(m.gateway_id);
      var missing = false;
      (m.changes || []).forEach(function (c) {
        var node = byData(section, "data-session-key", c.session_key);
        var agent = byData(section, "data-agent-id", c.agent_id);
        if (node) { setStatus(node, c.status); setRunning(node, !!c.has_active_run); pulse(node); }
        else if (!agent) { missing = true; } // a new agent: the whole section is re-fetched
        else if (agent.hasAttribute("data-lazy")) {
          // Its sessions are not on the page (collapsed, fetched on expand): show the change on the agent.
          if (c.status === "active") setStatus(agent, "active");
        } else {
          refetchSoon(agent.querySelector("[data-agent-fragment]")); // a new session of a shown agent
        }
        if (agent) pulse(agent);
        var head = document.getElementById("session-head");
        if (head && head.dataset.sessionKey === c.session_key) {
          var st = head.querySelector("[data-status]");
          if (st) { st.textContent = c.status.charAt(0).toUpperCase() + c.status.slice(1); }
          var run = document.getElementById("run-indicator");
          if (run) run.hidden = !c.has_active_run;
        }
      });
      if (section && missing) refetchSoon(section);
    },
    "agent.run": function (m) {
      var agent = byData(gatewaySection(m.gateway_id), "data-agent-id", m.agent_id);
      if (agent) {
        setRunning(agent, m.phase === "start");
        pulse(agent);
      }
      var head = document.getElementById("session-head");
      if (head && head.dataset.sessionKey === m.session_key) {
        var run = document.getElementById("run-indicator");
        if (run) run.hidden = m.phase !== "start";
        pulse(head);
      }
    },
    "config.changed": function (m) { refetchSoon(gatewaySection(m.gateway_id)); },
    "chat.stream": function (m) {
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
        refetch(document.getElementById("chat-log"));
      }
    },
    "resync": function () { resync(); },
    "chat.messages": function () {
      var done = refetch(document.getElementById("chat-log"));
      var stream = document.getElementById("stream");
      if (stream && stream.dataset.done) {
        if (done && done.then) done.then(clearStream); else clearStream();
      }
    },
    "alert.raised": function () {
      // Don't reload (an operator may be typing): say so and let them reload when ready.
      if (document.getElementById("alert-live")) return;
      var p = document.createElement("p");
      p.id = "alert-live";
      p.className = "alert alert-error";
      p.setAttribute("role", "alert");
      p.innerHTML = 'A new alert was raised. <a href="">Reload</a> to see it.';
      var main = document.getElementById("main");
      main.insertBefore(p, main.firstChild);
    }
  };

  function openPanel() {
    var head = document.getElementById("session-head");
    if (!head || !socket) return;
    socket.send(JSON.stringify({ type: "panel.open", gateway_id: Number(head.dataset.gatewayId),
                                 session_key: head.dataset.sessionKey }));
  }

  document.addEventListener("htmx:wsConnecting", function () {
    setState("connecting", everConnected ? "Reconnecting…" : "Connecting…");
  });
  document.addEventListener("htmx:wsOpen", function (e) {
    socket = e.detail.socketWrapper;
    setState("live", "Live");
    openPanel();
    if (everConnected) resync(); // re-fetch whatever we may have missed while disconnected
    everConnected = true;
  });
  document.addEventListener("htmx:wsClose", function (e) {
    var code = e.detail.event && e.detail.event.code;
    if (code === 4401) setState("down", "Signed out: reload to log in");
    else setState("connecting", "Reconnecting…");
  });
  document.addEventListener("htmx:wsBeforeMessage", function (e) {
    var raw = e.detail.message;
    if (typeof raw !== "string" || raw.charAt(0) !== "{") return; // HTML: let htmx swap it out of band
    e.preventDefault();
    var message;
    try { message = JSON.parse(raw); } catch (err) { return; }
    if (document.hidden) { staleWhileHidden = true; return; }
    var handler = handlers[message.type];
    if (handler) handler(message);
    body.dispatchEvent(new CustomEvent("agentflow:event", { detail: message }));
  });
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && staleWhileHidden) { staleWhileHidden = false; resync(); }
  });
  // Keep an open chat panel registered for chat polling (its registration expires on its own).
  setInterval(function () { if (!document.hidden) openPanel(); }, 10000);
})();
