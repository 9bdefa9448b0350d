/* The fleet overview: session status, run indicators and pulses in place on the org chart, the
 * gateway's status on its health card. Structural changes re-fetch the gateway's section or an
 * agent's session list; config.changed and the rest of the health card are declared in the
 * markup (data-refetch-on). */
(function () {
  "use strict";

  var AF = window.AgentFlow;

  function section(gatewayId) {
    return document.getElementById("gateway-" + gatewayId);
  }

  // The status component of an agent (in its summary) or of a session row.
  function statusOf(node) {
    return node.querySelector(":scope > details > summary > .status, :scope > .status");
  }

  function setRunning(node, running) {
    node.classList.toggle("running", running);
    var live = node.querySelector(":scope > details > summary > .live, :scope > .live");
    if (live) live.hidden = !running;
  }

  AF.on("gateway.status", function (m) {
    var health = document.getElementById("health-" + m.gateway_id);
    if (health) AF.setStatus(health.querySelector(".status"), m.status, m.label);
  });

  /* Re-fetch the gateway's section until the given sessions are on it. The section brings the
   * agent's summary (session count, status, an open <details>) and the counts line with the new
   * rows. The event is sent once the row is stored, but a second sync can race the first, so a
   * re-fetch that still lacks a session tries again a little later (four tries, ~4 s in all)
   * instead of leaving the page stale until a reload. */
  var wanted = {};
  function showSessions(gatewayId, keys) {
    var entry = wanted[gatewayId] = wanted[gatewayId] || { keys: {}, timer: null, tries: 0 };
    keys.forEach(function (k) { entry.keys[k] = true; });
    entry.tries = 0;
    if (!entry.timer) entry.timer = setTimeout(function () { fetchUntilShown(gatewayId); }, 150);
  }
  function fetchUntilShown(gatewayId) {
    var entry = wanted[gatewayId];
    entry.timer = null;
    var done = AF.refetch(section(gatewayId));
    if (!done || !done.then) { delete wanted[gatewayId]; return; }
    done.then(function () {
      var root = section(gatewayId);
      Object.keys(entry.keys).forEach(function (k) {
        if (!root || AF.byData(root, "data-session-key", k)) delete entry.keys[k];
      });
      entry.tries += 1;
      if (!Object.keys(entry.keys).length || entry.tries >= 4) { delete wanted[gatewayId]; return; }
      entry.timer = setTimeout(function () { fetchUntilShown(gatewayId); }, 400 * entry.tries);
    });
  }

  AF.on("sessions.changed", function (m) {
    var root = section(m.gateway_id);
    if (!root) return;
    var missing = false;
    var fresh = [];
    (m.changes || []).forEach(function (c) {
      var node = AF.byData(root, "data-session-key", c.session_key);
      var agent = AF.byData(root, "data-agent-id", c.agent_id);
      if (node) {
        AF.setStatus(statusOf(node), c.status, c.status_label);
        setRunning(node, !!c.has_active_run);
        AF.pulse(node);
      } else if (!agent) {
        missing = true; // a new agent: the whole section is re-fetched
      } else if (agent.hasAttribute("data-lazy")) {
        // Its sessions are not on the page (collapsed, fetched on expand): an agent is as busy
        // as its busiest session, so a session turning active shows on the agent.
        if (c.status === "active") AF.setStatus(statusOf(agent), c.status, c.status_label);
      } else {
        fresh.push(c.session_key); // a new session of a shown agent, maybe its first
      }
      if (agent) AF.pulse(agent);
    });
    if (missing) AF.refetchSoon(root);
    else if (fresh.length) showSessions(m.gateway_id, fresh);
  });

  AF.on("agent.run", function (m) {
    var agent = AF.byData(section(m.gateway_id), "data-agent-id", m.agent_id);
    if (agent) {
      setRunning(agent, m.phase === "start");
      AF.pulse(agent);
    }
  });
})();
