// The System page: what runs (version, target, root slot, uptime), the
// firmware update's state, and installing an update bundle: uploaded as the
// raw request body with a progress bar, then the update's state asked every
// two seconds while the page is shown, through the reboot and the trial,
// until it is committed or rolled back. A cell not running from a firmware
// image answers 503 with why, shown in place of the update's state.
import { get, upload, ApiError } from "../api.js";
import { h, mount, errorBox, toast, bytes, when } from "../dom.js";

// PHASES says each update phase in words (firmware/update.Phase).
const PHASES = {
  "": "No update has run.",
  writing: "Writing the update to the inactive root…",
  pending: "The update is written: the cell restarts into it on trial.",
  trying: "The cell runs the update on trial: it is kept once the cell is healthy.",
  committed: "The update is installed and kept.",
  rolled_back: "The update was not healthy: the cell rolled back to the version before.",
  failed: "The update stopped before its trial: nothing changed.",
};

export default {
  path: "system",
  title: "System",
  roles: ["admin"],
  nav: true,
  async render(main, ctx) {
    const infoBox = h("div", { id: "system-info" });
    const statusBox = h("div", { id: "update-status", "aria-live": "polite" });
    const progress = h("progress", { id: "update-progress", max: 100, value: 0, "aria-label": "Upload progress" });
    const progressText = h("p", { id: "update-progress-text", class: "muted", "aria-live": "polite" });
    const uploadErr = h("div", { id: "update-error" });
    const fileInput = h("input", { type: "file", id: "update-file", name: "bundle", "aria-describedby": "update-file-hint" });
    const start = h("button", { type: "submit", id: "update-start" }, "Upload and install");
    const form = h("form", { id: "update-form", onsubmit: (ev) => { ev.preventDefault(); send(); } },
      h("div", { class: "field" },
        h("label", { for: "update-file" }, "Update bundle"),
        fileInput,
        h("p", { class: "hint", id: "update-file-hint" }, "A signed bundle for this cell. It is checked completely before anything is written; the cell then restarts into it on trial and rolls back by itself if it is not healthy.")),
      h("div", { class: "actions" }, start),
      progress, progressText, uploadErr);
    progress.hidden = true;

    mount(main,
      h("h1", {}, "System"),
      h("section", { "aria-labelledby": "system-info-h" }, h("h2", { id: "system-info-h" }, "This cell"), infoBox),
      h("section", { "aria-labelledby": "update-h" }, h("h2", { id: "update-h" }, "Firmware update"), statusBox,
        h("h3", {}, "Install an update"), form));

    async function loadInfo() {
      try {
        const i = await get("/api/system/info");
        mount(infoBox, h("dl", { class: "facts" },
          h("dt", {}, "Version"), h("dd", { id: "system-version" }, i.version || "unknown"),
          h("dt", {}, "Target"), h("dd", {}, i.target || ""),
          i.hostname ? [h("dt", {}, "Host name"), h("dd", {}, i.hostname)] : null,
          i.built && !i.built.startsWith("0001") ? [h("dt", {}, "Built"), h("dd", {}, when(i.built))] : null,
          h("dt", {}, "Running from"), h("dd", { id: "system-slot" }, i.root_slot ? `root ${i.root_slot}${i.permanent_slot && i.permanent_slot !== i.root_slot ? ` (on trial; root ${i.permanent_slot} is the permanent one)` : ""}` : "not a firmware image"),
          h("dt", {}, "Up for"), h("dd", { id: "system-uptime" }, duration(i.uptime_seconds))));
      } catch (e) {
        mount(infoBox, errorBox(e));
      }
    }

    // loadStatus shows the update's state and says whether it is still moving.
    async function loadStatus() {
      let s;
      try {
        s = await get("/api/system/update");
      } catch (e) {
        // While the cell restarts into the update it does not answer (or the
        // front answers 502): that is part of the update, not a failure.
        if (watching && (!(e instanceof ApiError) || e.status === 0 || e.status === 502 || e.status === 504)) {
          mount(statusBox, h("p", { class: "muted" }, "The cell is restarting into the update…"));
          return true;
        }
        mount(statusBox, errorBox(e));
        return false;
      }
      const u = s.update || {};
      const phase = u.phase || "";
      const cls = phase === "committed" ? "state-ok" : phase === "rolled_back" || phase === "failed" ? "state-failed" : phase ? "state-degraded" : "";
      mount(statusBox, h("dl", { class: "facts" },
        h("dt", {}, "Running"), h("dd", {}, `${s.running_version || "unknown"}${s.root_slot ? ` (root partition ${s.root_slot})` : ""}`),
        h("dt", {}, "Update"), h("dd", { id: "update-phase", "data-phase": phase }, h("span", { class: cls }, PHASES[phase] || phase),
          u.version ? ` Version ${u.version}${u.from_version ? ` (from ${u.from_version})` : ""}.` : "",
          u.message ? h("span", { class: "muted" }, ` ${u.message}`) : null),
        u.updated && !String(u.updated).startsWith("0001") ? [h("dt", {}, "Since"), h("dd", {}, when(u.updated))] : null,
        s.update_key_configured === false ? [h("dt", {}, "Update key"), h("dd", { class: "state-failed" }, "none: this image accepts no update (rebuild it with update_public_key)")] : null));
      return phase === "writing" || phase === "pending" || phase === "trying";
    }

    // watch asks for the update's state every two seconds while it moves and
    // the page is shown; during the reboot the cell does not answer, which is
    // shown and waited out.
    let watching = false;
    function watch() {
      if (watching) return;
      watching = true;
      const tick = async () => {
        if (!ctx.run()) { watching = false; return; }
        const moving = await loadStatus();
        if (moving) setTimeout(tick, 2000);
        else {
          watching = false;
          loadInfo();
        }
      };
      setTimeout(tick, 2000);
    }

    async function send() {
      const file = fileInput.files && fileInput.files[0];
      mount(uploadErr);
      if (!file) {
        mount(uploadErr, errorBox({ message: "Choose the update bundle first." }));
        fileInput.focus();
        return;
      }
      start.disabled = true;
      start.setAttribute("aria-busy", "true");
      progress.hidden = false;
      progress.value = 0;
      progressText.textContent = `Uploading ${file.name} (${bytes(file.size)})…`;
      let last = -1;
      try {
        const r = await upload("/api/system/update", file, (sent, total) => {
          const pct = total ? Math.floor((sent / total) * 100) : 0;
          progress.value = pct;
          // Announce in steps of 10 %, not every event.
          if (Math.floor(pct / 10) !== last) {
            last = Math.floor(pct / 10);
            progressText.textContent = sent >= total
              ? "Uploaded: the cell checks and writes the bundle…"
              : `Uploading ${file.name}: ${pct}% of ${bytes(total)}`;
          }
        });
        progress.value = 100;
        progressText.textContent = r && r.message ? `Accepted${r.version ? ` version ${r.version}` : ""}: ${r.message}.` : "The update is accepted.";
        toast("Update accepted");
        await loadStatus();
        watch();
      } catch (e) {
        progressText.textContent = "The update was not installed.";
        mount(uploadErr, errorBox(e));
      } finally {
        start.disabled = false;
        start.removeAttribute("aria-busy");
      }
    }

    await loadInfo();
    if (await loadStatus()) watch();
  },
};

function duration(s) {
  if (s === undefined || s === null) return "unknown";
  const d = Math.floor(s / 86400), hr = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d} day${d === 1 ? "" : "s"}, ${hr} h`;
  if (hr) return `${hr} h ${m} min`;
  if (m) return `${m} min`;
  return `${s} s`;
}
