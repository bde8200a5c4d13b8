// A form (or the button pressed) with `data-confirm` asks before it is sent: Reject, Accept all,
// Discard. Without JavaScript the form is sent as it is.
"use strict";
(function () {
  for (const form of document.querySelectorAll("form")) {
    form.addEventListener("submit", (event) => {
      const button = event.submitter;
      const question = (button && button.dataset.confirm) || form.dataset.confirm;
      if (question && !window.confirm(question)) event.preventDefault();
    });
  }
})();
