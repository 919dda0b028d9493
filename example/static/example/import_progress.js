// Polls the import's progress (example/views.py, contact_import_progress) every second and
// shows it, until the import is done: its batch has finished and its summary was mailed (or
// cannot be any more).
(function () {
  "use strict";
  const root = document.getElementById("import-progress");
  const status = document.getElementById("refresh-status");
  const every = 1000;

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text; // what users pasted: text, never HTML
    return td;
  }

  function show(progress) {
    const state = document.getElementById("import-state");
    state.textContent = progress.state;
    state.className = "status status-" + progress.state;
    for (const [key, value] of Object.entries(progress.counts)) {
      const count = root.querySelector('[data-count="' + key + '"]');
      if (count) count.textContent = value === null ? "—" : String(value);
    }
    const summary = document.getElementById("summary-state");
    summary.textContent = progress.summary.state;
    summary.className = "status status-" + progress.summary.state;
    const rows = progress.failures.map(function (failure) {
      const tr = document.createElement("tr");
      tr.append(cell(String(failure.line)), cell(failure.name), cell(failure.email), cell(failure.error));
      return tr;
    });
    if (rows.length === 0) {
      const none = cell("None.");
      none.colSpan = 4;
      none.className = "muted";
      const tr = document.createElement("tr");
      tr.append(none);
      rows.push(tr);
    }
    document.getElementById("import-failures").replaceChildren(...rows);
    root.dataset.done = String(progress.done);
    root.dataset.refreshes = String(Number(root.dataset.refreshes) + 1);
  }

  async function refresh() {
    try {
      const response = await fetch(root.dataset.url, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (response.redirected) {
        status.textContent = "Signed out: reload the page to sign in again.";
        return; // no more polling
      }
      if (response.status >= 400 && response.status < 500) {
        // Refused (the permission withdrawn, the import deleted): asking again won't help.
        status.textContent = "Not shown any more (HTTP " + response.status + "): reload the page.";
        return;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      const progress = await response.json();
      show(progress);
      if (progress.done) {
        status.textContent = "Finished.";
        return;
      }
      status.textContent = "Updated " + new Date().toLocaleTimeString();
    } catch (error) {
      status.textContent = "Refresh failed (" + error.message + "); trying again.";
    }
    // One request at a time: the next one only once this one has been answered.
    setTimeout(refresh, every);
  }

  if (root.dataset.done !== "true") setTimeout(refresh, every);
})();
