// The environment check: report what the browser knows about the device and the window, and the
// size of the player (laid out like the trial's), and let the participant play the sound check and
// pick the number they heard. The server decides; this page only measures and asks.
(function () {
  "use strict";
  var form = document.getElementById("check-form");
  if (!form) return;
  var report = document.getElementById("report");
  var video = document.getElementById("check-clip");
  var playButton = document.getElementById("check-play");
  var playLabel = document.getElementById("check-play-label");
  var playStatus = document.getElementById("check-status");
  var numbers = document.getElementById("numbers");
  var submit = document.getElementById("check-submit");
  var formStatus = document.getElementById("check-form-status");
  var problems = document.getElementById("check-problems");
  if (problems) problems.focus();

  function media(query) {
    return Boolean(window.matchMedia && window.matchMedia(query).matches);
  }

  // CSS pixels. The room for the picture is the player's (DCR: one column's) width; the box's height is
  // the trial video's height, which CSS ties to the window's height.
  function measure() {
    var box = video.getBoundingClientRect();
    var room = video.closest(".sequence__item") || video.closest(".player");
    var uaData = navigator.userAgentData;
    return {
      viewport_width: Math.round(window.innerWidth),
      viewport_height: Math.round(window.innerHeight),
      screen_width: Math.round(window.screen.width),
      screen_height: Math.round(window.screen.height),
      device_pixel_ratio: window.devicePixelRatio || 1,
      max_touch_points: navigator.maxTouchPoints || 0,
      coarse_pointer: media("(pointer: coarse)"),
      fine_pointer: media("(any-pointer: fine)"),
      ua_mobile: uaData && typeof uaData.mobile === "boolean" ? uaData.mobile : null,
      player_width: room ? room.clientWidth : box.width,
      player_height: box.height
    };
  }

  function chosen() {
    return form.querySelector('input[name="answer"]:checked');
  }

  function setMode(mode) {
    if (!playButton) return;
    var labels = { play: "Play sound check", pause: "Pause", replay: "Play again" };
    playButton.setAttribute("data-mode", mode);
    playLabel.textContent = labels[mode];
  }

  if (playButton && video) {
    playButton.addEventListener("click", function () {
      if (video.paused || video.ended) {
        if (video.ended) video.currentTime = 0;
        var started = video.play();
        if (started && started.catch) {
          started.catch(function () { playStatus.textContent = "The sound check could not start. Please press Play again."; });
        }
      } else {
        video.pause();
      }
    });
    video.addEventListener("play", function () { setMode("pause"); playStatus.textContent = "Listen…"; });
    video.addEventListener("pause", function () { if (!video.ended) setMode("play"); });
    video.addEventListener("ended", function () {
      setMode("replay");
      numbers.disabled = false;
      playStatus.textContent = "Which number did you hear? Choose it below (or press its key). You may play it again.";
    });
    video.addEventListener("error", function () {
      playStatus.textContent = "The sound check could not be loaded. Please reload the page.";
    });
  }

  // Keys 1–9 choose a number once the numbers are unlocked (the page has no text field to type into).
  document.addEventListener("keydown", function (event) {
    if (!numbers || numbers.disabled || event.altKey || event.ctrlKey || event.metaKey || !/^[1-9]$/.test(event.key)) return;
    var input = numbers.querySelector('input[value="' + event.key + '"]');
    if (!input) return;
    event.preventDefault();
    input.checked = true;
    input.focus();
  });

  form.addEventListener("submit", function (event) {
    if (numbers && !chosen()) {
      event.preventDefault();
      formStatus.textContent = numbers.disabled
        ? "Please play the sound check to its end first."
        : "Please choose the number you heard.";
      formStatus.classList.add("is-error");
      (numbers.disabled ? playButton : numbers.querySelector("input")).focus();
      return;
    }
    report.value = JSON.stringify(measure());
    submit.disabled = true; // one attempt per press
    formStatus.classList.remove("is-error");
    formStatus.textContent = "Checking…";
  });
})();
