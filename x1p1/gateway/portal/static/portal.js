/* x1p1 customer portal: shared behaviour, loaded on every page.
   - buttons with data-confirm ask before their form is sent;
   - while admin access waits for the meter (section.admin[data-admin=pending]) the page
     asks /portal/status and reloads once the meter has confirmed;
   - on the devices page a notice offers a reload when requests or devices change. */
"use strict";

window.X1 = {
  format(value, decimals, lang) {
    if (typeof value !== "number" || !isFinite(value)) return "—";
    return new Intl.NumberFormat(lang === "nl" ? "nl-NL" : "en-GB", {
      minimumFractionDigits: decimals, maximumFractionDigits: decimals,
    }).format(value);
  },
  time(date, lang) {
    return new Intl.DateTimeFormat(lang === "nl" ? "nl-NL" : "en-GB", {
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    }).format(date);
  },
};

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-confirm]");
  if (button && !window.confirm(button.dataset.confirm)) event.preventDefault();
});

(function watchStatus() {
  const admin = document.querySelector("section.admin");
  const changes = document.getElementById("changes");
  if (!admin && !changes) return;
  let fingerprint = null;
  const waiting = admin && admin.dataset.admin === "pending";
  const every = waiting ? 1000 : 3000;
  async function check() {
    try {
      const answer = await fetch("/portal/status", { credentials: "same-origin",
                                                     headers: { Accept: "application/json" } });
      if (answer.status === 401) { window.location.href = "/login?m=ended"; return; }
      if (!answer.ok) return;
      const status = await answer.json();
      const state = status.elevated ? "active" : (status.elevation ? "pending" : "none");
      if (admin && state !== admin.dataset.admin) {
        window.location.href = window.location.pathname;  // without the last form's message
        return;
      }
      if (changes && fingerprint !== null && status.fingerprint !== fingerprint) {
        changes.hidden = false;
      }
      fingerprint = status.fingerprint;
    } catch (error) {
      /* the gateway restarted or the network blinked: try again next round */
    }
  }
  check();
  window.setInterval(check, every);
})();
