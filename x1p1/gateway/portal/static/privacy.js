/* The privacy page: blocking history asks once more, in a dialog, before the form goes. */
"use strict";

(function () {
  const form = document.getElementById("block-form");
  const dialog = document.getElementById("block-dialog");
  if (!form || !dialog || typeof dialog.showModal !== "function") return;
  let confirmed = false;
  form.addEventListener("submit", (event) => {
    if (confirmed) return;
    event.preventDefault();
    dialog.showModal();
    document.getElementById("block-no").focus();
  });
  document.getElementById("block-no").addEventListener("click", () => dialog.close());
  document.getElementById("block-yes").addEventListener("click", () => {
    confirmed = true;
    dialog.close();
    form.submit();
  });
})();
