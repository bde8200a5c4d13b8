// Hover or focus a value: its evidence is highlighted in the report text, and vice versa.
"use strict";
(function () {
  const marks = Array.from(document.querySelectorAll("mark[data-evidence]"));
  const rows = Array.from(document.querySelectorAll("[data-observation], [data-insight]"));
  const idOf = (r) => r.dataset.observation || r.dataset.insight;
  function light(id, on) {
    for (const m of marks) {
      if (m.dataset.evidence.split(" ").includes(id)) m.classList.toggle("lit", on);
    }
    for (const r of rows) {
      if (idOf(r) === id) r.classList.toggle("lit", on);
    }
  }
  for (const r of rows) {
    const id = idOf(r);
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

// Keyboard: j/k move between values and insights, a/r/c/u act on the focused one, t shows the codes.
(function () {
  const rows = Array.from(document.querySelectorAll("article[data-observation], article[data-insight]"));
  if (!rows.length) return;
  const toggle = document.getElementById("show-codes");
  function current() {
    return rows.find((r) => r.contains(document.activeElement));
  }
  function move(step) {
    const here = current();
    const index = here ? rows.indexOf(here) + step : step > 0 ? 0 : rows.length - 1;
    const target = rows[Math.max(0, Math.min(rows.length - 1, index))];
    target.focus();
    target.scrollIntoView({ block: "nearest" });
  }
  function press(selector) {
    const here = current();
    const control = here && here.querySelector(selector);
    if (control) control.click();
  }
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const tag = (event.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "select" || tag === "textarea") return;
    const actions = {
      j: () => move(1),
      k: () => move(-1),
      a: () => press("button.accept"),
      r: () => press("button.reject"),
      u: () => press("button.undo"),
      c: () => {
        const here = current();
        const field = here && here.querySelector("fieldset.correct select, fieldset.correct input");
        if (field) field.focus();
      },
      t: () => toggle && toggle.click(),
    };
    const action = actions[event.key];
    if (action) {
      event.preventDefault();
      action();
    }
  });
})();
