/* The history page: a plotly bar chart of the use per interval from the data the server
   put in the page (the same as the table under it); choosing another meter reloads the
   page with that meter's resolutions and objects. */
"use strict";

(function () {
  const meter = document.getElementById("h-meter");
  if (meter) {
    meter.addEventListener("change", () => {
      window.location.href = `/history?meter=${encodeURIComponent(meter.value)}`;
    });
  }
  const source = document.getElementById("history-data");
  const chart = document.getElementById("history-chart");
  if (!source || !chart) return;
  const data = JSON.parse(source.textContent);
  const colours = ["#0b5394", "#b45309", "#1e7b34", "#7b2d8e", "#a4161a", "#3d4b5c"];
  const units = [...new Set(data.series.map((s) => s.unit))];
  const traces = data.series.map((series, index) => ({
    type: "bar",
    x: data.x,
    y: series.y,
    name: series.unit ? `${series.name}` : series.name,
    marker: { color: colours[index % colours.length] },
    hovertemplate: `%{x}<br>%{y} ${series.unit}<extra>${series.name}</extra>`,
  }));
  Plotly.newPlot(chart, traces, {
    barmode: "group",
    margin: { l: 60, r: 12, t: 12, b: 48 },
    font: { family: "system-ui, sans-serif", size: 13, color: "#1b1f24" },
    xaxis: { type: "date", gridcolor: "#e3e7ec", tickformat: data.tickformat },
    yaxis: { title: { text: units.length === 1 ? units[0] : "" }, gridcolor: "#e3e7ec" },
    legend: { orientation: "h", x: 0, y: -0.2 },
    paper_bgcolor: "#ffffff", plot_bgcolor: "#ffffff",
  }, { displayModeBar: false, responsive: true });
  chart.dataset.bars = String(data.x.length);
})();
