/* The login page (X1 §5.1.3): opening the portal starts a login request at once (not
   right after logging out, blocking history or a refusal: then the button does); while it
   waits on the meter the page asks /login/status every second and goes on when approved. */
"use strict";

(function () {
  const form = document.getElementById("login-form");
  if (form && form.dataset.state === "none") {
    form.requestSubmit ? form.requestSubmit() : form.submit();
    return;
  }
  const box = document.querySelector('[data-login="pending"]');
  if (!box) return;
  const status = document.getElementById("login-status");
  let failures = 0;
  async function poll() {
    try {
      const answer = await fetch("/login/status", { credentials: "same-origin",
                                                    headers: { Accept: "application/json" } });
      const body = await answer.json();
      failures = 0;
      if (body.status === "approved") {
        window.location.href = body.next || "/";
        return;
      }
      if (body.status !== "pending") {
        window.location.reload();
        return;
      }
    } catch (error) {
      failures += 1;
      if (status && failures > 3) status.textContent = "…";
    }
    window.setTimeout(poll, 1000);
  }
  window.setTimeout(poll, 1000);
})();
