// IRMSIA portal: behaviour shared by every page. Pages work without it; it only adds comfort.
"use strict";

// Forms with data-confirm ask before submitting (disabling an account, deleting an image).
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement)) return;
  const question = form.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
