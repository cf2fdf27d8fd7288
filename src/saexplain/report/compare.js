// saexplain compare: draws the scatter held in the page's JSON block with the local plotly.js.
"use strict";
(function () {
  const fig = JSON.parse(document.getElementById("sx-data").textContent);
  if (typeof Plotly !== "undefined") {
    Plotly.newPlot(document.getElementById("compare-plot"), fig.data, fig.layout, { displaylogo: false, responsive: true });
  }
  window.sxReady = true;
  document.body.dataset.ready = "1";
})();
