// Live parts of the console: the server sends, as server-sent events,
// JSON objects mapping element ids to fresh HTML; each element whose HTML
// changed is replaced. Forms with data-confirm ask first (also those that
// arrived in fresh HTML).
"use strict";
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
});
document.addEventListener("DOMContentLoaded", () => {
  const url = document.body.dataset.live;
  if (!url) return;
  const source = new EventSource(url);
  const last = {};
  source.addEventListener("message", (message) => {
    const parts = JSON.parse(message.data);
    for (const [id, html] of Object.entries(parts)) {
      const element = document.getElementById(id);
      if (element && last[id] !== html) {
        last[id] = html;
        element.innerHTML = html;
      }
    }
    document.body.dataset.updated = String(Date.now());
  });
});
