// Conveyor console: live regions and local times. Loaded from the console's own
// origin (the Content-Security-Policy allows nothing else); no library.
"use strict";

// Times arrive in UTC; show them in the viewer's zone, with the UTC value on hover.
function localTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]")) {
    const at = new Date(el.getAttribute("datetime"));
    if (!Number.isNaN(at.getTime())) {
      el.textContent = at.toLocaleString();
      el.title = el.getAttribute("datetime") + " (UTC)";
    }
  }
}

// An element with data-live="<url>" is replaced by what its event stream sends:
// server-rendered HTML from this origin, in `replace` events.
function live(el) {
  const source = new EventSource(el.dataset.live);
  source.addEventListener("replace", (event) => {
    // Focus stays where it was: on the element of the same id in the new content.
    const focused = el.contains(document.activeElement) ? document.activeElement.id : "";
    el.innerHTML = event.data;
    if (focused) {
      document.getElementById(focused)?.focus();
    }
    localTimes(el);
    el.dataset.updatedAt = new Date().toISOString();
  });
  source.addEventListener("signed-out", () => {
    source.close();
    window.location.assign("/console/login");
  });
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  for (const el of document.querySelectorAll("[data-live]")) {
    live(el);
  }
});
