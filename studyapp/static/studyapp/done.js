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
