// Report the viewport with the consent form (viewing conditions are part of the study record).
(function () {
  "use strict";
  var field = document.getElementById("viewport");
  if (field) {
    field.value = Math.round(window.innerWidth) + "x" + Math.round(window.innerHeight);
  }
})();

// Once the box is ticked, the earlier "please tick the box" message no longer applies.
(function () {
  "use strict";
  var box = document.querySelector('input[name="consent"]');
  var error = document.getElementById("consent-error");
  if (!box || !error) return;
  box.addEventListener("change", function () {
    error.hidden = box.checked;
    box.setAttribute("aria-invalid", box.checked ? "false" : "true");
  });
})();
