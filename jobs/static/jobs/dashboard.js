// Refreshes the dashboard's panels every data-refresh-seconds (jobs/dashboard.py), while
// the tab is visible. The server draws the charts; this only swaps the HTML in.
(function () {
  "use strict";
  const root = document.getElementById("dashboard");
  const panels = document.getElementById("panels");
  const status = document.getElementById("refresh-status");
  const every = Math.max(1, Number(root.dataset.refreshSeconds)) * 1000;
  let busy = false;

  async function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const response = await fetch(root.dataset.panelsUrl, { credentials: "same-origin" });
      if (response.redirected) {
        status.textContent = "Signed out: reload the page to sign in again.";
        return;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      panels.innerHTML = await response.text();
      root.dataset.refreshes = String(Number(root.dataset.refreshes) + 1);
      status.textContent = "Updated " + new Date().toLocaleTimeString();
    } catch (error) {
      status.textContent = "Refresh failed (" + error.message + "); trying again.";
    } finally {
      busy = false;
    }
  }

  setInterval(refresh, every);
  document.addEventListener("visibilitychange", refresh);
})();
