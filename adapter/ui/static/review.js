// Hover or focus a value: its evidence is highlighted in the report text, and vice versa.
"use strict";
(function () {
  const marks = Array.from(document.querySelectorAll("mark[data-evidence]"));
  const rows = Array.from(document.querySelectorAll("[data-observation]"));
  function light(id, on) {
    for (const m of marks) {
      if (m.dataset.evidence.split(" ").includes(id)) m.classList.toggle("lit", on);
    }
    for (const r of rows) {
      if (r.dataset.observation === id) r.classList.toggle("lit", on);
    }
  }
  for (const r of rows) {
    const id = r.dataset.observation;
    for (const [event, on] of [["mouseenter", true], ["mouseleave", false], ["focusin", true], ["focusout", false]]) {
      r.addEventListener(event, () => light(id, on));
    }
  }
  for (const m of marks) {
    const ids = m.dataset.evidence.split(" ");
    for (const [event, on] of [["mouseenter", true], ["mouseleave", false], ["focus", true], ["blur", false]]) {
      m.addEventListener(event, () => ids.forEach((id) => light(id, on)));
    }
  }
})();
