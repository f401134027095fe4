/* The live page: realtime values every second over the X1 WebSocket (/api/realtime,
   authorised by the portal session's cookie), as numbers and as a moving plotly chart
   of the last five minutes. A pause button stops the updates (WCAG 2.2.2). */
"use strict";

(function () {
  const config = JSON.parse(document.getElementById("live-config").textContent);
  const labels = config.labels;
  const lang = config.lang;
  const chart = document.getElementById("live-chart");
  const statusEl = document.getElementById("live-status");
  const updatedEl = document.getElementById("live-updated");
  const pause = document.getElementById("live-pause");
  let paused = false;
  let socket = null;
  let retry = 1000;

  function setStatus(key) { statusEl.textContent = labels[key]; statusEl.dataset.state = key; }

  Plotly.newPlot(chart, [
    { x: [], y: [], name: labels.import, mode: "lines", line: { color: "#0b5394", width: 2 } },
    { x: [], y: [], name: labels.export, mode: "lines",
      line: { color: "#1e7b34", width: 2, dash: "dot" } },
  ], {
    margin: { l: 56, r: 12, t: 12, b: 40 },
    font: { family: "system-ui, sans-serif", size: 13, color: "#1b1f24" },
    xaxis: { type: "date", gridcolor: "#e3e7ec", tickformat: "%H:%M:%S",
             range: [new Date(Date.now() - config.window * 1000), new Date()] },
    yaxis: { title: { text: labels.kw }, rangemode: "tozero", gridcolor: "#e3e7ec" },
    legend: { orientation: "h", x: 0, y: 1.12 },
    paper_bgcolor: "#ffffff", plot_bgcolor: "#ffffff",
  }, { displayModeBar: false, responsive: true, staticPlot: true });

  function show(message) {
    const values = message.values || {};
    for (const [code, value] of Object.entries(values)) {
      for (const el of document.querySelectorAll(`[data-obis="${CSS.escape(code)}"]`)) {
        el.textContent = X1.format(value, Number(el.dataset.decimals || 3), lang);
      }
    }
    const at = new Date(message.t);
    if (message.equipment_id === config.electricity) {
      const imported = values["1-0:1.7.0.255"];
      const exported = values["1-0:2.7.0.255"];
      if (typeof imported === "number" && typeof exported === "number") {
        Plotly.extendTraces(chart, { x: [[at], [at]], y: [[imported], [exported]] }, [0, 1],
                            config.window);
        // the chart moves: always the last five minutes, the newest value at the right
        Plotly.relayout(chart, { "xaxis.range": [new Date(at - config.window * 1000), at] });
      }
      updatedEl.textContent = labels.updated.replace("{at}", X1.time(at, lang));
      chart.dataset.points = String(chart.data[0].x.length);
    } else if (message.equipment_id === config.gas) {
      const when = document.querySelector("[data-gas-time]");
      if (when) when.textContent = labels.gasAt.replace("{at}", X1.time(at, lang));
    }
  }

  function connect() {
    setStatus(paused ? "paused" : "connecting");
    const query = new URLSearchParams({
      equipment_id: `${config.electricity},${config.gas}`,
      obis: config.obis.join(","),
      interval: "1",
    });
    socket = new WebSocket(`wss://${window.location.host}/api/realtime?${query}`);
    socket.addEventListener("open", () => { retry = 1000; if (!paused) setStatus("live"); });
    socket.addEventListener("message", (event) => {
      if (paused) return;
      try { show(JSON.parse(event.data)); } catch (error) { /* not ours to handle */ }
    });
    socket.addEventListener("close", (event) => {
      if (event.code === 4401) { window.location.href = "/login?m=ended"; return; }
      if (event.code === 4503) { window.location.reload(); return; }
      setStatus("closed");
      window.setTimeout(connect, retry);
      retry = Math.min(retry * 2, 30000);
    });
  }

  pause.addEventListener("click", () => {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? labels.resume : labels.pause;
    setStatus(paused ? "paused" : "live");
  });

  connect();
})();
