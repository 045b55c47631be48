// Every answer is stored once the end page shows: forget this participant's saved trial state.
(function () {
  "use strict";
  var page = document.querySelector("[data-participant]");
  if (!page) return;
  var prefix = "syncmos:" + page.getAttribute("data-participant") + ":";
  try {
    for (var i = window.localStorage.length - 1; i >= 0; i--) {
      var key = window.localStorage.key(i);
      if (key && key.indexOf(prefix) === 0) window.localStorage.removeItem(key);
    }
  } catch (err) {
    /* storage unavailable: nothing to clean */
  }
})();

// Back to the platform (e.g. Prolific's completion URL with the code) after a moment to read the page;
// the link does the same at once, and is all there is without JavaScript.
(function () {
  "use strict";
  var page = document.querySelector("[data-redirect-url]");
  if (!page) return;
  var url = page.getAttribute("data-redirect-url");
  var left = Math.max(0, parseInt(page.getAttribute("data-redirect-seconds"), 10) || 0);
  var status = document.getElementById("redirect-status");

  function say() {
    if (!status) return;
    status.textContent = left > 0
      ? "Taking you back to the study platform in " + left + (left === 1 ? " second…" : " seconds…")
      : "Taking you back to the study platform…";
  }

  function tick() {
    if (left <= 0) {
      window.location.replace(url);
      return;
    }
    say();
    left -= 1;
    window.setTimeout(tick, 1000);
  }

  tick();
})();
