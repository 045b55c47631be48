// One trial: play the clip to its end, answer every question, save the answers exactly once.
//
// Each question's answer carries a UUID made when this trial is first shown; the UUIDs and the
// choices so far live in localStorage. On "Save" the whole answer is first written to localStorage
// as *pending* and only removed once the server has confirmed it. After a reload or a lost
// connection the pending answer is sent again before anything else happens; the server recognises
// the UUIDs and answers a repeat with what it stored, so no answer is lost or counted twice.
//
// The server takes a rating only after it has stored a "play", then an "ended" near the clip's end,
// and received that first "play" most of a clip's length before the rating. So "play" is posted at
// once (never queued behind other events) and, like "ended", retried until the server has it; if the
// server still says the clip was not watched, the answers are kept and the clip can be played again.
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("trial-config").textContent);
  var PREFIX = "syncmos:" + config.participant + ":";
  var PENDING = PREFIX + "pending";
  var TRIAL = PREFIX + "trial:" + config.assignment;

  var trial = document.getElementById("trial");
  var video = document.getElementById("clip");
  var playButton = document.getElementById("play");
  var playLabel = document.getElementById("play-label");
  var playerStatus = document.getElementById("player-status");
  var form = document.getElementById("rating-form");
  var fieldsets = Array.prototype.slice.call(form.querySelectorAll("fieldset.scale"));
  var submit = document.getElementById("submit");
  var formStatus = document.getElementById("form-status");
  var notice = document.getElementById("notice");

  var unlocked = false;
  var saving = false;
  var eventQueue = Promise.resolve();
  var firstPlayStoredAt = null; // browser clock when the server confirmed the first "play" (see playAgain)

  // ---- storage: localStorage, or memory where the browser blocks it ----
  var memory = {};
  var storage = (function () {
    try {
      window.localStorage.setItem(PREFIX + "probe", "1");
      window.localStorage.removeItem(PREFIX + "probe");
      return window.localStorage;
    } catch (err) {
      return null;
    }
  })();
  var store = {
    get: function (key) {
      if (!storage) return memory[key] || null;
      try { return JSON.parse(storage.getItem(key)); } catch (err) { return null; }
    },
    set: function (key, value) {
      if (storage) storage.setItem(key, JSON.stringify(value)); else memory[key] = value;
    },
    remove: function (key) {
      if (storage) storage.removeItem(key); else delete memory[key];
    }
  };

  function uuid4() {
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    var hex = Array.prototype.map.call(bytes, function (b) { return (b + 0x100).toString(16).slice(1); }).join("");
    return [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20), hex.slice(20)].join("-");
  }

  // The UUIDs, the first moment the questions unlocked and the choices so far, for this trial.
  function trialState() {
    var state = store.get(TRIAL);
    var whole = state && state.uuids && config.scales.every(function (k) { return typeof state.uuids[k] === "string"; });
    if (!whole) {
      state = { uuids: {}, unlockedAt: null, answers: {} };
      config.scales.forEach(function (k) { state.uuids[k] = uuid4(); });
      store.set(TRIAL, state);
    }
    state.answers = state.answers || {};
    return state;
  }

  function sleep(ms) {
    return new Promise(function (resolve) { window.setTimeout(resolve, ms); });
  }

  async function post(url, body) {
    var response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      keepalive: true, // lets a save that is under way finish even if the page is being left
      headers: { "Content-Type": "application/json", "X-CSRFToken": config.csrf },
      body: JSON.stringify(body)
    });
    var data = null;
    try { data = await response.json(); } catch (err) { data = null; }
    return { status: response.status, data: data };
  }

  // ---- messages ----
  function showNotice(text) { notice.textContent = text; notice.hidden = false; }
  function hideNotice() { notice.hidden = true; notice.textContent = ""; }
  function setFormStatus(text, isError) {
    formStatus.textContent = text;
    formStatus.classList.toggle("is-error", Boolean(isError));
  }

  // ---- playback telemetry, sent in order; the rating waits for it ----
  var RETRYING = "Connection problem. Please keep this page open; it keeps trying to reach the server.";

  // Sends again after a network failure or a 5xx, waiting longer each time; returns the first other
  // answer, or null after `tries` attempts. Endless retries tell the participant once two have failed.
  async function sendWithRetry(url, body, tries) {
    for (var i = 0; i < tries; i++) {
      try {
        var result = await post(url, body);
        if (result.status < 500) {
          if (notice.textContent === RETRYING) hideNotice();
          return result;
        }
      } catch (err) { /* network: try again */ }
      if (tries === Infinity && i === 1) showNotice(RETRYING);
      await sleep(Math.min(500 * Math.pow(2, i), 15000));
    }
    return null;
  }

  function sendEvent(kind, detail) {
    var body = {
      assignment: config.assignment,
      events: [{
        kind: kind,
        media_time: isFinite(video.currentTime) ? video.currentTime : null,
        client_time: Date.now(),
        detail: detail || ""
      }]
    };
    if (kind === "play") {
      // At once, not behind queued events: the server times the clip from when it receives "play".
      var sent = sendWithRetry(config.eventsUrl, body, Infinity).then(function (result) {
        if (firstPlayStoredAt === null && result && result.status < 300) firstPlayStoredAt = Date.now();
        return result;
      });
      eventQueue = Promise.all([eventQueue, sent]); // what follows ("ended") is stored after it
      return sent;
    }
    var tries = kind === "ended" ? Infinity : 4; // the rating depends on "ended"; the others are telemetry
    eventQueue = eventQueue.then(function () { return sendWithRetry(config.eventsUrl, body, tries); });
    return eventQueue;
  }

  // When "play" reached the server late (a lost connection), wait until it has been there for the
  // clip's length, as it would have after an on-time "play", rather than have the answer refused.
  async function playedLongEnough() {
    if (firstPlayStoredAt === null || !isFinite(video.duration)) return;
    var left = firstPlayStoredAt + video.duration * 1000 - Date.now();
    if (left > 0) await sleep(left);
  }

  // ---- the pending answer ----
  // Sends the stored pending answer until the server gives a definite reply. Returns
  // {kind: "none" | "saved" | "not_watched" | "refused" | "session", pending, data}.
  async function deliverPending() {
    var pending = store.get(PENDING);
    if (!pending) return { kind: "none" };
    for (var attempt = 0; ; attempt++) {
      var result = null;
      try { result = await post(pending.url, pending.body); } catch (err) { result = null; }
      var status = result ? result.status : 0;
      var data = result ? result.data : null;
      if (status === 200 || status === 201) {
        store.remove(PENDING);
        store.remove(PREFIX + "trial:" + pending.body.assignment);
        return { kind: "saved", pending: pending, data: data };
      }
      if (status >= 400 && status < 500 && data && data.error) {
        store.remove(PENDING); // the server will never take this answer; what it has stored stands
        if (data.error === "already_rated") store.remove(PREFIX + "trial:" + pending.body.assignment);
        return { kind: data.error === "not_watched" ? "not_watched" : "refused", pending: pending, data: data };
      }
      if (status === 403) { // no JSON: the CSRF check failed (cookie lost or stale page)
        pending.reloads = (pending.reloads || 0) + 1;
        store.set(PENDING, pending);
        if (pending.reloads <= 2) { window.location.reload(); return { kind: "session", pending: pending }; }
        showNotice("Your answer is kept in this browser, but the session could not be confirmed. Please make sure cookies are allowed, then reload the page.");
        return { kind: "session", pending: pending };
      }
      var wait = Math.min(30, Math.pow(2, attempt));
      showNotice("Connection problem. Your answer is kept and will be sent again in " + wait + " s.");
      await sleep(wait * 1000);
    }
  }

  // ---- ratings ----
  function chosen() {
    var answers = {};
    config.scales.forEach(function (key) {
      var input = form.querySelector('input[name="' + key + '"]:checked');
      if (input) answers[key] = Number(input.value);
    });
    return answers;
  }

  function refresh() {
    var answers = chosen();
    var left = config.scales.length - Object.keys(answers).length;
    submit.disabled = !unlocked || saving || left > 0;
    if (unlocked && !saving) {
      var state = trialState();
      state.answers = answers;
      store.set(TRIAL, state);
      setFormStatus(left > 0 ? left + (left === 1 ? " question" : " questions") + " left" : "Ready to save.", false);
    }
  }

  function setLocked(locked) {
    unlocked = !locked;
    fieldsets.forEach(function (fieldset) { fieldset.disabled = locked; });
    playerStatus.classList.toggle("is-done", !locked);
    refresh();
  }

  // The server did not accept that the clip was played to its end: lock the questions until it ends
  // again. The choices stay (on the page and in localStorage) and come back unchanged.
  function playAgain() {
    firstPlayStoredAt = null; // the server did not count the plays so far: time the clip from the next one
    restoreAnswers();
    showNotice("We could not confirm that the clip played to its end, so your answers are not saved yet. " +
               "Please play the clip again; your answers are kept and you can save them when it ends.");
    playerStatus.textContent = "Press Play and watch the clip to its end again. The questions unlock when it ends.";
    setLocked(true);
    setFormStatus("Your answers are kept. Play the clip to its end again, then save.", false);
  }

  function restoreAnswers() {
    var answers = trialState().answers;
    Object.keys(answers).forEach(function (key) {
      var input = form.querySelector('input[name="' + key + '"][value="' + answers[key] + '"]');
      if (input) input.checked = true;
    });
  }

  function unlock() {
    if (unlocked) return;
    var state = trialState();
    if (!state.unlockedAt) {
      state.unlockedAt = Date.now();
      store.set(TRIAL, state);
    }
    restoreAnswers();
    playerStatus.textContent = "Now answer the questions below. You may play the clip again.";
    setLocked(false);
  }

  function setPlayButton(mode) {
    var labels = { play: "Play clip", pause: "Pause", replay: "Play again" };
    playLabel.textContent = labels[mode];
    playButton.setAttribute("data-mode", mode);
  }

  function togglePlay() {
    if (playButton.disabled) return;
    if (video.paused || video.ended) {
      if (video.ended) video.currentTime = 0;
      var started = video.play();
      if (started && started.catch) {
        started.catch(function () { showNotice("The video could not start. Please press Play again."); });
      }
    } else {
      video.pause();
    }
  }

  playButton.addEventListener("click", togglePlay);
  video.addEventListener("click", togglePlay);
  video.addEventListener("play", function () { hideNotice(); setPlayButton("pause"); sendEvent("play"); });
  video.addEventListener("pause", function () {
    if (video.ended) return; // the pause that comes with reaching the end is reported as "ended"
    setPlayButton("play");
    sendEvent("pause");
  });
  video.addEventListener("ended", function () { setPlayButton("replay"); sendEvent("ended"); unlock(); });
  video.addEventListener("error", function () {
    sendEvent("error", String(video.error ? video.error.code : ""));
    showNotice("The video could not be loaded. Please reload the page.");
  });
  document.addEventListener("visibilitychange", function () { sendEvent("visibility", document.visibilityState); });

  // Keys 1–5 choose in the focused question (arrow keys work as in any radio group).
  fieldsets.forEach(function (fieldset) {
    fieldset.addEventListener("keydown", function (event) {
      if (fieldset.disabled || event.altKey || event.ctrlKey || event.metaKey || !/^[1-5]$/.test(event.key)) return;
      var input = fieldset.querySelector('input[value="' + event.key + '"]');
      if (!input) return;
      event.preventDefault();
      input.checked = true;
      input.focus();
      refresh();
    });
  });
  form.addEventListener("change", refresh);

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    refresh();
    if (submit.disabled) return;
    var state = trialState();
    var answers = chosen();
    var ratings = {};
    config.scales.forEach(function (key) { ratings[key] = { value: answers[key], uuid: state.uuids[key] }; });
    store.set(PENDING, {
      url: config.rateUrl,
      body: {
        assignment: config.assignment,
        ratings: ratings,
        response_time_ms: state.unlockedAt ? Math.max(0, Date.now() - state.unlockedAt) : null
      }
    });
    saving = true;
    refresh();
    setFormStatus("Saving…", false);
    await eventQueue; // the server must have the "ended" event before it accepts the rating
    await playedLongEnough();
    var outcome = await deliverPending();
    if (outcome.kind === "session") return;
    if (outcome.kind === "saved" || (outcome.data && outcome.data.error === "already_rated")) {
      window.location.replace(config.nextUrl);
      return;
    }
    saving = false;
    hideNotice();
    if (outcome.kind === "not_watched") {
      playAgain();
    } else {
      refresh();
      setFormStatus(outcome.data && outcome.data.message ? outcome.data.message : "Your answer could not be saved.", true);
    }
  });

  // ---- start: first settle any answer still pending from before, then show this clip ----
  async function start() {
    var notWatched = false;
    if (store.get(PENDING)) {
      showNotice("Saving your previous answer…");
      var outcome = await deliverPending();
      if (outcome.kind === "session") return;
      hideNotice();
      var same = outcome.pending && outcome.pending.body.assignment === config.assignment;
      var stored = outcome.kind === "saved" || (outcome.data && outcome.data.error === "already_rated");
      // This page is out of date when its own clip was just stored, or an earlier one was stored only now.
      if (stored && (same || (outcome.data && outcome.data.replay === false))) {
        window.location.replace(config.nextUrl);
        return;
      }
      if (same && outcome.kind === "not_watched") {
        notWatched = true;
      } else if (same && outcome.kind === "refused") {
        showNotice(outcome.data.message);
      }
    }
    trialState(); // the UUIDs exist from the moment the trial is first shown
    trial.setAttribute("aria-busy", "false");
    playButton.disabled = false;
    if (notWatched) playAgain(); else if (config.watched) unlock(); else refresh();
  }

  start();
})();
