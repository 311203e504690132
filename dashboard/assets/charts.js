// Pages with charts: uPlot (from npm). Draws every <div data-chart="ID">, where ID is a
// `{% json_script %}` element holding {"labels": ["2026-01-01", ...], "series": [{"label": "Runs",
// "values": [...]}, ...]}; the chart fills the element's width and redraws when it changes.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

window.uPlot = uPlot;

const COLORS = ["#2457c5", "#c0392b", "#1e8449", "#7d3c98"];

function draw(element) {
  const source = document.getElementById(element.dataset.chart);
  if (!source) return;
  const data = JSON.parse(source.textContent);
  const xs = data.labels.map((label) => Date.parse(`${label}T00:00:00Z`) / 1000);
  const options = {
    width: Math.max(200, element.clientWidth),
    height: Number(element.dataset.height || 220),
    series: [
      {},
      ...data.series.map((series, index) => ({
        label: series.label,
        stroke: COLORS[index % COLORS.length],
        width: 2,
      })),
    ],
    axes: [{}, { size: 60 }],
  };
  const chart = new uPlot(options, [xs, ...data.series.map((series) => series.values)], element);
  new ResizeObserver(() => chart.setSize({ width: Math.max(200, element.clientWidth), height: options.height })).observe(
    element,
  );
}

function drawAll() {
  for (const element of document.querySelectorAll("[data-chart]")) draw(element);
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", drawAll);
else drawAll();
