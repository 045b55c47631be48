// The Start button of the instructions asks for fullscreen (a click is the gesture browsers require)
// and reports whether it was granted; a refusal is recorded, never held against the participant.
(function () {
  "use strict";
  var form = document.getElementById("start-form");
  var field = document.getElementById("fullscreen");
  if (!form || !field || !form.hasAttribute("data-fullscreen")) return;
  var sent = false;

  function send(outcome) {
    if (sent) return;
    sent = true;
    field.value = outcome;
    form.submit(); // does not fire "submit" again
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var root = document.documentElement;
    var request = root.requestFullscreen || root.webkitRequestFullscreen;
    if (!request || document.fullscreenEnabled === false) {
      send("unsupported");
      return;
    }
    try {
      var asked = request.call(root, { navigationUI: "hide" });
      if (asked && asked.then) {
        asked.then(function () { send("granted"); }, function () { send("denied"); });
        window.setTimeout(function () { send(document.fullscreenElement ? "granted" : "denied"); }, 1500);
      } else {
        window.setTimeout(function () { send(document.fullscreenElement || document.webkitFullscreenElement ? "granted" : "denied"); }, 300);
      }
    } catch (err) {
      send("denied");
    }
  });
})();
