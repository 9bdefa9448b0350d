/* AgentFlow live updates: the core (page modules in this folder register with it).
 *
 * The htmx ws extension owns the socket (it reconnects with full-jitter backoff). The server
 * sends small JSON events; the core parses them (JSON fast path: no htmx swap) and hands each
 * to the handlers page modules registered with AgentFlow.on(type, handler). Markup can ask for
 * a re-fetch without any JavaScript: an element with an id, data-fragment="{% url … %}" and
 * data-refetch-on="event.one event.two" is re-fetched when such an event arrives (only events of
 * its gateway when it also has data-gateway-id), at most once per 300 ms. After a reconnect or a
 * sequence gap ({"type":"resync"}) the core re-fetches every fragment on the page, so the page is
 * never silently stale. While the tab is hidden, events are only noted; the page re-syncs when it
 * becomes visible again. Non-JSON frames are HTML for htmx to swap out of band.
 *
 * The indicator tells the truth: "Live" only once a socket has stayed open (the server accepts
 * and at once closes with 4503 when Redis is away), "Offline: …" with the reason when the server
 * closed it (codes in dashboard/consumers.py), "Reconnecting…" when no frame (not even the
 * server's heartbeat, every data-heartbeat seconds) arrived for a while. The extension only
 * reconnects after 1006/1011/1012/1013; after the server's own 44xx/4503 closes the core
 * reconnects with capped, jittered exponential backoff, so the page recovers by itself.
 */
(function () {
  "use strict";

  var body = document.body;
  var indicator = document.getElementById("live-status");
  var socket = null;
  var everConnected = false;
  var staleWhileHidden = false;
  var pending = {};
  var handlers = {};
  var openHooks = [];
  // The status shapes per kind and value, rendered from dashboard/templatetags/ui.py SHAPES.
  var shapesNode = document.getElementById("status-shapes");
  var SHAPES = shapesNode ? JSON.parse(shapesNode.textContent) : {};
  var INDICATOR_SHAPES = { live: "circle", connecting: "diamond", down: "square" };
  var HEARTBEAT_MS = 1000 * (Number(indicator && indicator.dataset.heartbeat) || 10);
  var OPEN_GRACE_MS = 300; // a socket closed within this is not called live
  var CLOSE_REASONS = {
    4400: "Offline: the page sent a malformed message",
    4413: "Offline: the page sent a message that is too big",
    4429: "Offline: the page sent too many requests",
    4503: "Offline: live updates are unavailable (Redis does not answer)"
  };
  var EXTENSION_RETRIES = [1006, 1011, 1012, 1013]; // the ws extension reconnects after these itself
  var retries = 0;
  var retryTimer = null;
  var watchdog = null;
  var liveTimer = null;
  var forcedClose = false;

  function setShape(el, shape) {
    Array.prototype.slice.call(el.classList).forEach(function (c) {
      if (c.indexOf("shape-") === 0) el.classList.remove(c);
    });
    el.classList.add("shape-" + shape);
  }

  function setState(state, text) {
    if (!indicator) return;
    indicator.dataset.state = state;
    setShape(indicator, INDICATOR_SHAPES[state]);
    indicator.querySelector(".label").textContent = text;
  }

  /* Redraw a status component (templates/components/status.html) for a new value: its label
   * comes from the message (the server's words), its shape from the server's table. */
  function setStatus(el, value, label) {
    if (!el) return;
    var shapes = SHAPES[el.dataset.kind] || {};
    el.dataset.status = value;
    setShape(el, shapes[value] || "ring");
    var text = el.querySelector(".label");
    if (text) text.textContent = label || value;
  }

  function pulse(el) {
    if (!el) return;
    el.classList.remove("pulse");
    void el.offsetWidth; // restart the CSS animation
    el.classList.add("pulse");
    el.dataset.pulsedAt = String(Date.now());
  }

  function refetch(el) {
    var url = el && el.dataset.fragment;
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
    document.querySelectorAll("[data-fragment]").forEach(function (el) {
      // A fragment inside another comes back with its parent: one request, not two racing.
      if (el.parentElement && el.parentElement.closest("[data-fragment]")) return;
      refetch(el);
    });
  }

  function refetchDeclared(message) {
    if (!/^[a-z_.]+$/.test(message.type)) return; // event names only: nothing odd in the selector
    document.querySelectorAll('[data-refetch-on~="' + message.type + '"]').forEach(function (el) {
      if (el.dataset.gatewayId && String(message.gateway_id) !== el.dataset.gatewayId) return;
      refetchSoon(el);
    });
  }

  function byData(root, attr, value) {
    if (!root) return null;
    var nodes = root.querySelectorAll("[" + attr + "]");
    for (var i = 0; i < nodes.length; i++) {
      if (nodes[i].getAttribute(attr) === value) return nodes[i];
    }
    return null;
  }

  function dispatch(message) {
    if (message.type === "resync") { resync(); return; }
    (handlers[message.type] || []).forEach(function (handler) {
      try { handler(message); } catch (err) { console.error(message.type, err); } // one module's bug stays its own
    });
    refetchDeclared(message);
  }

  window.AgentFlow = {
    /* Call handler(message) for every live message of this type (see agentflow/lib/broadcast.py). */
    on: function (type, handler) { (handlers[type] = handlers[type] || []).push(handler); },
    /* Call hook() each time the socket opens, the first time and after every reconnect. */
    onOpen: function (hook) { openHooks.push(hook); },
    send: function (data) { if (socket) socket.send(JSON.stringify(data)); },
    refetch: refetch,
    refetchSoon: refetchSoon,
    pulse: pulse,
    setStatus: setStatus,
    byData: byData
  };

  function stopTimers() {
    clearTimeout(watchdog); watchdog = null;
    clearTimeout(liveTimer); liveTimer = null;
  }

  // No frame for two and a half heartbeats: the socket may look open and carry nothing.
  function armWatchdog() {
    clearTimeout(watchdog);
    watchdog = setTimeout(function () {
      if (!socket) return;
      setState("connecting", "Reconnecting… (no heartbeat)");
      forcedClose = true; // the close this causes is ours: the new socket is on its way
      socket.reconnect();
    }, HEARTBEAT_MS * 2.5 + 2000);
  }

  function reconnectLater(wrapper) {
    clearTimeout(retryTimer);
    var delay = Math.min(30000, 1000 * Math.pow(2, retries)) * (0.5 + Math.random() / 2);
    retries += 1;
    retryTimer = setTimeout(function () { retryTimer = null; wrapper.reconnect(); }, delay);
  }

  document.addEventListener("htmx:wsConnecting", function () {
    setState("connecting", everConnected ? "Reconnecting…" : "Connecting…");
  });
  document.addEventListener("htmx:wsOpen", function (e) {
    socket = e.detail.socketWrapper;
    forcedClose = false;
    armWatchdog();
    clearTimeout(liveTimer);
    liveTimer = setTimeout(function () {
      retries = 0;
      setState("live", "Live");
      var banner = document.getElementById("live-unavailable"); // rendered while Redis was away
      if (banner) banner.remove();
    }, OPEN_GRACE_MS);
    openHooks.forEach(function (hook) { hook(); });
    if (everConnected) resync(); // re-fetch whatever we may have missed while disconnected
    everConnected = true;
  });
  document.addEventListener("htmx:wsClose", function (e) {
    var code = e.detail.event && e.detail.event.code;
    stopTimers();
    if (forcedClose) { forcedClose = false; return; } // our watchdog's reconnect: already under way
    if (code === 4401) { setState("down", "Signed out: reload to log in"); return; }
    setState(CLOSE_REASONS[code] ? "down" : "connecting", CLOSE_REASONS[code] || "Reconnecting…");
    if (EXTENSION_RETRIES.indexOf(code) < 0) reconnectLater(e.detail.socketWrapper);
  });
  document.addEventListener("htmx:wsBeforeMessage", function (e) {
    armWatchdog(); // any frame, heartbeat or event, shows the socket is alive
    var raw = e.detail.message;
    if (typeof raw !== "string" || raw.charAt(0) !== "{") return; // HTML: let htmx swap it out of band
    e.preventDefault();
    var message;
    try { message = JSON.parse(raw); } catch (err) { return; }
    if (message.type === "heartbeat" || message.type === "pong") return; // the watchdog has seen it
    if (document.hidden) { staleWhileHidden = true; return; }
    dispatch(message);
    body.dispatchEvent(new CustomEvent("agentflow:event", { detail: message }));
  });
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && staleWhileHidden) { staleWhileHidden = false; resync(); }
  });
})();
