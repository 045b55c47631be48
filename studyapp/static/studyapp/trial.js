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
//
// Three layouts (config.layout): "single" (ACR, ACR-HR: one clip); "sequence" (DCR: the reference,
// then the clip, with one Play control; the questions unlock when both have ended); "pair" (pairwise:
// clips A and B play in step in one frame, a switch shows and sounds one of them while the other
// keeps playing muted and hidden, re-synced to the visible one). The clip to rate (pairwise: A) is
// always the element #clip: the server's watched gate looks at its events only; the events of the
// reference carry the detail "reference" and those of clip B the detail "b".
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("trial-config").textContent);
  var PREFIX = "syncmos:" + config.participant + ":";
  var PENDING = PREFIX + "pending";
  var TRIAL = PREFIX + "trial:" + config.assignment;
  var texts = config.texts;
  var layout = config.layout || "single";

  var trial = document.getElementById("trial");
  var video = document.getElementById("clip"); // the clip to rate: pairwise clip A
  var referenceVideo = document.getElementById("reference"); // DCR only
  var videoB = document.getElementById("clip-b"); // pairwise only
  var videos = [referenceVideo, video, videoB].filter(Boolean);
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

  // What a video's events say besides their kind: the server's watched gate counts only the clip's own.
  function roleOf(element) {
    if (element === referenceVideo) return "reference";
    if (element === videoB) return "b";
    return "";
  }

  // One event about `element` (default: the clip to rate), at its current position.
  function sendEvent(kind, detail, element) {
    var source = element || video;
    var body = {
      assignment: config.assignment,
      events: [{
        kind: kind,
        media_time: isFinite(source.currentTime) ? source.currentTime : null,
        client_time: Date.now(),
        detail: detail || ""
      }]
    };
    var ofClip = source === video; // the clip to rate, whose "play" and "ended" the server waits for
    if (kind === "play" && ofClip) {
      // At once, not behind queued events: the server times the clip from when it receives "play".
      var sent = sendWithRetry(config.eventsUrl, body, Infinity).then(function (result) {
        if (firstPlayStoredAt === null && result && result.status < 300) firstPlayStoredAt = Date.now();
        return result;
      });
      eventQueue = Promise.all([eventQueue, sent]); // what follows ("ended") is stored after it
      return sent;
    }
    var tries = kind === "ended" && ofClip ? Infinity : 4; // the rating depends on "ended"; the others are telemetry
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
    playerStatus.textContent = texts.again;
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
    playerStatus.textContent = texts.done;
    setLocked(false);
  }

  // The first answer chosen after the questions unlocked: its time goes with the rating (first_choice_ms).
  function noteChoice(key) {
    if (!unlocked) return;
    var state = trialState();
    if (state.firstChoiceAt) return;
    state.firstChoiceAt = Date.now();
    store.set(TRIAL, state);
    sendEvent("choice", key);
  }

  // ---- the player ----
  function setPlayButton(mode) {
    playLabel.textContent = texts[mode];
    playButton.setAttribute("data-mode", mode);
  }

  function startPlaying(element) {
    var started = element.play();
    if (started && started.catch) {
      started.catch(function () {
        setPlayButton("play");
        showNotice("The video could not start. Please press Play again.");
      });
    }
  }

  function rewind(element) {
    if (element.currentTime !== 0) element.currentTime = 0;
  }

  // Telemetry of one video: play (a play after the end is a replay), pause, ended, seeks, errors.
  // Seeks the page makes itself to keep two videos in step are not the participant's and go unreported.
  function reportPlayback(element) {
    var role = roleOf(element);
    var hasEnded = element === video && config.watched;
    var position = 0;
    var seekFrom = 0;
    element.addEventListener("play", function () {
      sendEvent("play", role || (hasEnded ? "replay" : ""), element);
    });
    element.addEventListener("pause", function () {
      if (!element.ended) sendEvent("pause", role, element); // the pause that comes with the end is "ended"
    });
    element.addEventListener("ended", function () { hasEnded = true; sendEvent("ended", role, element); });
    element.addEventListener("timeupdate", function () { if (!element.seeking) position = element.currentTime; });
    element.addEventListener("seeking", function () { seekFrom = position; });
    element.addEventListener("seeked", function () {
      position = element.currentTime;
      if (element.keepingInStep) { element.keepingInStep = false; return; }
      if (element === video) sendEvent("seek", "from=" + seekFrom.toFixed(3) + " to=" + position.toFixed(3), element);
    });
    element.addEventListener("error", function () {
      var code = element.error ? String(element.error.code) : "";
      sendEvent("error", role ? role + " " + code : code, element);
      showNotice("The video could not be loaded. Please reload the page.");
    });
  }

  function showsPlayingState(element) {
    element.addEventListener("play", function () { hideNotice(); setPlayButton("pause"); });
    element.addEventListener("pause", function () { if (!element.ended) setPlayButton("play"); });
  }

  // ACR, ACR-HR: one clip.
  function singlePlayer() {
    showsPlayingState(video);
    video.addEventListener("ended", function () { setPlayButton("replay"); unlock(); });
    return {
      toggle: function () {
        if (video.paused || video.ended) {
          if (video.ended) rewind(video);
          startPlaying(video);
        } else {
          video.pause();
        }
      }
    };
  }

  // DCR: the reference, then the clip; Play plays (or resumes, or pauses) whichever's turn it is.
  function sequencePlayer() {
    var order = [referenceVideo, video];
    var turn = 0;
    var referenceEnded = false;
    var figures = Array.prototype.slice.call(document.querySelectorAll(".sequence__item"));
    function mark() {
      figures.forEach(function (figure) {
        figure.classList.toggle("is-active", figure.getAttribute("data-video") === order[turn].id);
      });
    }
    order.forEach(showsPlayingState);
    referenceVideo.addEventListener("ended", function () {
      referenceEnded = true;
      turn = 1;
      mark();
      rewind(video);
      startPlaying(video); // allowed without a click: the page has been clicked (Play) already
    });
    video.addEventListener("ended", function () {
      setPlayButton("replay");
      if (referenceEnded || config.watched) unlock();
    });
    return {
      toggle: function () {
        var current = order[turn];
        if (!current.paused && !current.ended) {
          current.pause();
          return;
        }
        if (turn === 1 && video.ended) { // both seen: the two again, from the reference
          turn = 0;
          mark();
          rewind(referenceVideo);
        }
        startPlaying(order[turn]);
      }
    };
  }

  // Pairwise: A (#clip) and B play together; one is shown and heard, the other plays on hidden and
  // silent and is brought back in step with the visible one whenever they drift apart by more than
  // DRIFT: by playing it a little faster or slower until they are within SETTLED (a seek makes a video
  // stall for a moment, which would make it drift again), or, beyond SEEK_BEYOND, by a seek aimed where
  // the visible one will be when the seek is done. The hidden one is silent, so its speed is not heard.
  //
  // Silent, not muted, where the browser allows: Chromium plays a muted (or volume 0) element on a
  // separate, silent clock and stalls it for ~0.1 s when it is unmuted, so every switch would jump.
  // At INAUDIBLE volume (−100 dB) both stay on the sound card's clock and no switch stalls. Where the
  // volume cannot be set (iOS), the hidden one is muted instead.
  function pairPlayer() {
    var INAUDIBLE = 1e-5;
    var DRIFT = 0.04; // s
    var SETTLED = 0.015; // s
    var SEEK_BEYOND = 0.15; // s
    var CATCH_UP = 6; // speed change per second of drift (a drift halves in ~0.12 s), at most ±MAX_SPEED_CHANGE
    var MAX_SPEED_CHANGE = 0.5;
    var visible = video;
    var hidden = videoB;
    var seekLag = 0.05; // s a re-sync seek takes here (measured), added to the target so it lands in step
    var timer = null;
    var badge = document.getElementById("stack-badge");
    var buttons = Array.prototype.slice.call(document.querySelectorAll(".switch__option"));

    function nameOf(element) { return element === video ? "A" : "B"; }

    function sound(element) {
      element.muted = false;
      element.volume = 1;
    }

    function silence(element) {
      element.volume = INAUDIBLE;
      element.muted = Math.abs(element.volume - INAUDIBLE) > INAUDIBLE / 10;
    }

    function show() {
      sound(visible);
      silence(hidden);
      visible.classList.remove("is-hidden");
      hidden.classList.add("is-hidden");
      visible.removeAttribute("aria-hidden");
      hidden.setAttribute("aria-hidden", "true");
      buttons.forEach(function (button) {
        button.setAttribute("aria-pressed", String(button.getAttribute("data-show") === visible.id));
      });
      badge.textContent = nameOf(visible);
    }

    function moveInStep(element, target) {
      element.keepingInStep = true;
      element.stepStartedAt = window.performance.now();
      element.currentTime = Math.max(0, Math.min(target, (element.duration || target) - 0.01));
    }

    function keepInStep() {
      if (hidden.seeking || hidden.ended || hidden.paused || visible.ended || visible.seeking) return;
      var behind = visible.currentTime - hidden.currentTime; // > 0: the hidden one is behind
      var drift = Math.abs(behind);
      if (drift > SEEK_BEYOND) {
        hidden.playbackRate = 1;
        moveInStep(hidden, visible.currentTime + seekLag);
      } else if (drift > DRIFT || (hidden.playbackRate !== 1 && drift > SETTLED)) {
        hidden.playbackRate = 1 + Math.max(-MAX_SPEED_CHANGE, Math.min(MAX_SPEED_CHANGE, CATCH_UP * behind));
      } else {
        hidden.playbackRate = 1;
      }
    }

    function tick() {
      if (visible.paused || visible.ended) {
        window.clearInterval(timer);
        timer = null;
        return;
      }
      keepInStep();
    }

    [video, videoB].forEach(function (element) {
      element.addEventListener("seeked", function () {
        if (!element.stepStartedAt) return;
        var lag = (window.performance.now() - element.stepStartedAt) / 1000;
        element.stepStartedAt = 0;
        seekLag = Math.min(0.25, 0.5 * seekLag + 0.5 * lag);
      });
      element.addEventListener("play", function () {
        if (element !== visible) return;
        hideNotice();
        setPlayButton("pause");
        if (timer === null) timer = window.setInterval(tick, 50);
      });
      element.addEventListener("pause", function () {
        if (element === visible && !element.ended) setPlayButton("play");
      });
      element.addEventListener("ended", function () {
        if (element !== visible) return;
        setPlayButton("replay");
        // The hidden one is at most a moment behind; should it have stalled, it is taken to its end too.
        window.setTimeout(function () {
          if (!hidden.ended && !hidden.paused) moveInStep(hidden, hidden.duration);
        }, 300);
        unlock();
      });
    });

    buttons.forEach(function (button) {
      button.addEventListener("click", function () { switchTo(document.getElementById(button.getAttribute("data-show"))); });
    });

    // The one coming into view is already in step (within DRIFT, or being brought back): it goes on from
    // where it is, at normal speed. Only when far off (or while paused) is it moved to the other's position.
    function switchTo(element) {
      if (!element || element === visible) return;
      var from = visible;
      var drift = Math.abs(element.currentTime - from.currentTime);
      element.playbackRate = 1;
      if (!element.ended && !element.seeking && (drift > SEEK_BEYOND || (from.paused && drift > DRIFT))) {
        moveInStep(element, from.currentTime + (from.paused ? 0 : seekLag));
      }
      visible = element;
      hidden = from;
      show();
      sendEvent("switch", element === video ? "to_a" : "to_b", visible);
    }
    show();
    return {
      toggle: function () {
        if (visible.paused || visible.ended) {
          if (visible.ended || hidden.ended) {
            rewind(video);
            rewind(videoB);
          }
          video.playbackRate = videoB.playbackRate = 1;
          startPlaying(visible);
          startPlaying(hidden);
        } else {
          video.pause();
          videoB.pause();
        }
      },
      switchTo: function (name) { switchTo(name === "a" ? video : videoB); }
    };
  }

  var player = ({ sequence: sequencePlayer, pair: pairPlayer }[layout] || singlePlayer)();
  videos.forEach(reportPlayback);

  // Fullscreen ends with every page, so a study that asks for it asks again on each trial's Play press
  // (a click is the gesture browsers require). A refusal is not an obstacle: the exits are reported.
  function requestFullscreen() {
    if (!config.fullscreen || document.fullscreenElement || document.webkitFullscreenElement) return;
    var root = document.documentElement;
    var request = root.requestFullscreen || root.webkitRequestFullscreen;
    if (!request || document.fullscreenEnabled === false) return;
    try {
      var asked = request.call(root);
      if (asked && asked.catch) asked.catch(function () { /* refused: the trial goes on */ });
    } catch (err) { /* refused: the trial goes on */ }
  }

  function togglePlay() {
    if (playButton.disabled) return;
    requestFullscreen();
    player.toggle();
  }

  playButton.addEventListener("click", togglePlay);
  videos.forEach(function (element) { element.addEventListener("click", togglePlay); });
  document.addEventListener("visibilitychange", function () { sendEvent("visibility", document.visibilityState); });

  var inFullscreen = Boolean(document.fullscreenElement || document.webkitFullscreenElement);
  function fullscreenChanged() {
    var now = Boolean(document.fullscreenElement || document.webkitFullscreenElement);
    if (now === inFullscreen) return; // browsers that fire both the prefixed and the plain event
    inFullscreen = now;
    sendEvent("fullscreen", now ? "enter" : "exit");
  }
  document.addEventListener("fullscreenchange", fullscreenChanged);
  document.addEventListener("webkitfullscreenchange", fullscreenChanged);

  // ---- keyboard ----
  // Keys 1–5 choose in the focused question (arrow keys work as in any radio group).
  fieldsets.forEach(function (fieldset) {
    fieldset.addEventListener("keydown", function (event) {
      if (fieldset.disabled || event.altKey || event.ctrlKey || event.metaKey || !/^[1-5]$/.test(event.key)) return;
      var input = fieldset.querySelector('input[value="' + event.key + '"]');
      if (!input) return;
      event.preventDefault();
      input.checked = true;
      input.focus();
      noteChoice(input.name);
      refresh();
    });
  });
  form.addEventListener("change", function (event) {
    if (event.target && event.target.name) noteChoice(event.target.name);
    refresh();
  });

  // Space or K plays and pauses, unless the focus is in a question (or Space would press a focused
  // control); A and B switch clips in a comparison, wherever the focus is.
  function pressesItself(element) {
    return Boolean(element && element.closest && element.closest("button, a, summary, input, select, textarea"));
  }
  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey || trial.getAttribute("aria-busy") === "true") return;
    var key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    var target = event.target;
    if (player.switchTo && (key === "a" || key === "b")) {
      event.preventDefault();
      player.switchTo(key);
      return;
    }
    var inQuestion = Boolean(target && target.closest && target.closest("fieldset.scale"));
    if (inQuestion || !(key === " " || key === "k")) return;
    if (key === " " && pressesItself(target)) return;
    event.preventDefault();
    togglePlay();
  });

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
        response_time_ms: state.unlockedAt ? Math.max(0, Date.now() - state.unlockedAt) : null,
        first_choice_ms: state.unlockedAt && state.firstChoiceAt ? Math.max(0, state.firstChoiceAt - state.unlockedAt) : null
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
