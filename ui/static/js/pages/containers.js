// The Containers page: the service containers as containerd runs them
// (inspect, start, stop, restart, their logs), the images kept on the cell
// and the services' data volumes. Where containerd is absent the API answers
// 503 with why, and each section shows that message.
import { get, post, del, esc } from "../api.js";
import { h, mount, errorBox, toast, busy, when, bytes, table } from "../dom.js";

export default {
  path: "containers",
  title: "Containers",
  roles: ["admin"],
  nav: true,
  async render(main, ctx) {
    const listBox = h("div", { id: "containers-list" });
    const detail = h("div", { id: "container-detail", "aria-live": "polite" });
    const imagesBox = h("div", { id: "images-list" });
    const volumesBox = h("div", { id: "volumes-list" });
    mount(main,
      h("h1", {}, "Containers"),
      h("section", { "aria-labelledby": "containers-h" }, h("h2", { id: "containers-h" }, "Containers"),
        h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", id: "containers-refresh", onclick: (ev) => busy(ev.currentTarget, "Refreshing…", loadContainers) }, "Refresh")),
        listBox, detail),
      h("section", { "aria-labelledby": "images-h" }, h("h2", { id: "images-h", tabindex: "-1" }, "Images"), imagesBox),
      h("section", { "aria-labelledby": "volumes-h" }, h("h2", { id: "volumes-h", tabindex: "-1" }, "Volumes"),
        h("p", { class: "muted" }, "Each service keeps its data in a volume; a removed service's volume stays until you delete it here."),
        volumesBox));

    async function loadContainers() {
      let list;
      try {
        list = (await get("/api/containers")).containers || [];
      } catch (e) {
        mount(listBox, errorBox(e));
        return;
      }
      if (!list.length) {
        mount(listBox, h("p", { class: "muted" }, "No container: install a service to run one."));
        return;
      }
      mount(listBox, h("div", { class: "table-wrap" }, cards(table("Service containers", ["Container", "Image", "State", "Since", "Actions"],
        list.map((c) => {
          const running = c.state === "running";
          return [
            h("span", {}, h("strong", {}, c.id), c.service && c.service !== c.id ? h("span", { class: "muted" }, ` (${c.service})`) : null),
            h("code", { class: "wrap" }, c.image || ""),
            h("span", { class: running ? "state-ok" : c.state === "stopped" ? "state-degraded" : "" }, c.state,
              !running && c.exit_code ? ` (exit ${c.exit_code})` : ""),
            running ? when(c.started_at) : (c.exited_at ? when(c.exited_at) : ""),
            h("div", { class: "actions" },
              h("button", { type: "button", class: "secondary", id: `container-inspect-${c.id}`, "aria-label": `Inspect ${c.id}`, onclick: () => inspect(c) }, "Inspect"),
              running
                ? h("button", { type: "button", class: "secondary", id: `container-stop-${c.id}`, "aria-label": `Stop ${c.id}`, onclick: (ev) => act(ev.currentTarget, "stop", c, "Stopping…") }, "Stop")
                : h("button", { type: "button", class: "secondary", id: `container-start-${c.id}`, "aria-label": `Start ${c.id}`, onclick: (ev) => act(ev.currentTarget, "start", c, "Starting…") }, "Start"),
              h("button", { type: "button", class: "secondary", id: `container-restart-${c.id}`, "aria-label": `Restart ${c.id}`, onclick: (ev) => act(ev.currentTarget, "restart", c, "Restarting…") }, "Restart"),
              h("button", { type: "button", class: "secondary", id: `container-logs-${c.id}`, "aria-label": `Logs of ${c.id}`, onclick: (ev) => logs(ev.currentTarget, c) }, "Logs")),
          ];
        })))));
    }

    async function act(button, verb, c, label) {
      try {
        await busy(button, label, () => post(`/api/containers/${verb}/${esc(c.id)}`));
        toast(`${c.id}: ${verb} asked`);
        await loadContainers();
        document.getElementById(`container-inspect-${c.id}`)?.focus();
      } catch (e) {
        mount(detail, errorBox(e));
      }
    }

    function panel(title, ...body) {
      const head = h("h3", { tabindex: "-1", id: "container-detail-h" }, title);
      mount(detail, h("div", { class: "card" }, head, body,
        h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", id: "container-detail-close", onclick: () => mount(detail) }, "Close"))));
      head.focus();
    }

    async function inspect(c) {
      try {
        const info = await get(`/api/containers/inspect/${esc(c.id)}`);
        panel(`Container ${c.id}`,
          h("dl", { class: "facts" },
            h("dt", {}, "Service"), h("dd", {}, info.service || c.id),
            h("dt", {}, "Image"), h("dd", {}, h("code", { class: "wrap" }, info.image || "")),
            h("dt", {}, "State"), h("dd", {}, info.state || ""),
            h("dt", {}, "Process"), h("dd", {}, info.pid ? String(info.pid) : "none"),
            h("dt", {}, "Started"), h("dd", {}, when(info.started_at)),
            info.exited_at ? [h("dt", {}, "Exited"), h("dd", {}, `${when(info.exited_at)} with code ${info.exit_code || 0}`)] : null),
          h("pre", { id: "container-inspect" }, JSON.stringify(info, null, 2)));
      } catch (e) {
        mount(detail, errorBox(e));
      }
    }

    async function logs(button, c) {
      try {
        const r = await busy(button, "Reading…", () => get(`/api/containers/logs/${esc(c.id)}?lines=200`));
        const lines = r.lines || [];
        panel(`Logs of ${c.id} (last ${lines.length} lines)`,
          h("pre", { id: "container-logs", class: "log", tabindex: "0", "aria-label": `Logs of ${c.id}` }, lines.length ? lines.join("\n") : "(nothing logged yet)"));
      } catch (e) {
        mount(detail, errorBox(e));
      }
    }

    async function loadImages() {
      let list;
      try {
        list = (await get("/api/containers/images")).images || [];
      } catch (e) {
        mount(imagesBox, errorBox(e));
        return;
      }
      if (!list.length) {
        mount(imagesBox, h("p", { class: "muted" }, "No image is stored."));
        return;
      }
      mount(imagesBox, h("div", { class: "table-wrap" }, cards(table("Stored images", ["Image", "Digest", "In use", "Actions"],
        list.map((im, i) => {
          const box = h("div", { id: `image-confirm-${i}` });
          return [
            h("code", { class: "wrap" }, im.ref),
            h("code", { class: "wrap", title: im.digest }, shortDigest(im.digest)),
            im.in_use ? "yes" : "no",
            h("div", {},
              h("div", { class: "actions" }, h("button", { type: "button", class: "danger", id: `image-remove-${i}`, "aria-label": `Remove the image ${im.ref}`, onclick: () => confirm(box, `Remove the image ${im.ref}?`, `image-remove-confirm-${i}`, async () => {
                await post("/api/containers/images/remove", { ref: im.ref });
                toast("Image removed");
                await loadImages();
                document.getElementById("images-h")?.focus();
              }) }, "Remove")),
              box),
          ];
        })))));
    }

    async function loadVolumes() {
      let list;
      try {
        list = (await get("/api/containers/volumes")).volumes || [];
      } catch (e) {
        mount(volumesBox, errorBox(e));
        return;
      }
      if (!list.length) {
        mount(volumesBox, h("p", { class: "muted" }, "No volume."));
        return;
      }
      mount(volumesBox, h("div", { class: "table-wrap" }, cards(table("Service volumes", ["Volume", "Size", "In use", "Actions"],
        list.map((v) => {
          const box = h("div", { id: `volume-confirm-${v.name}` });
          return [
            h("span", {}, h("strong", {}, v.name), h("br"), h("code", { class: "wrap muted" }, v.path || "")),
            bytes(v.bytes),
            v.in_use ? "yes (its service is installed)" : "no",
            h("div", {},
              h("div", { class: "actions" }, h("button", { type: "button", class: "danger", id: `volume-delete-${v.name}`, "aria-label": `Delete the volume ${v.name}`, onclick: () => confirm(box, `Delete the volume ${v.name} and all its data (${bytes(v.bytes)})? This cannot be undone.`, `volume-delete-confirm-${v.name}`, async () => {
                await del(`/api/containers/volumes/${esc(v.name)}`);
                toast(`Volume ${v.name} deleted`);
                await loadVolumes();
                document.getElementById("volumes-h")?.focus();
              }) }, "Delete")),
              box),
          ];
        })))));
    }

    // confirm asks in the page (window.confirm blocks automation), then runs
    // fn, showing the API's refusal (a 409 for an image in use) in place.
    function confirm(box, question, id, fn) {
      const err = h("div");
      const yes = h("button", { type: "button", class: "danger", id, onclick: async () => {
        try {
          await busy(yes, "Working…", fn);
        } catch (e) {
          mount(err, errorBox(e));
        }
      } }, "Yes");
      mount(box, h("div", { class: "confirm-box", role: "group", "aria-label": question },
        h("p", {}, question), err,
        h("div", { class: "actions" }, yes, h("button", { type: "button", class: "secondary", onclick: () => mount(box) }, "Cancel"))));
      yes.focus();
    }

    await Promise.all([loadContainers(), loadImages(), loadVolumes()]);
    // Containers change state on their own: look again while the page is shown.
    const again = () => setTimeout(async () => {
      if (!ctx.run()) return;
      if (!listBox.querySelector(":focus") && document.visibilityState === "visible") await loadContainers();
      again();
    }, 10000);
    again();
  },
};

function shortDigest(d) {
  if (!d) return "";
  const [alg, hex] = d.includes(":") ? d.split(":") : ["", d];
  return `${alg ? `${alg}:` : ""}${hex.slice(0, 12)}…`;
}

// cards marks a table to become one card per row on a phone (app.css
// table.cards), each cell labelled with its column's header.
function cards(t) {
  t.classList.add("cards");
  const heads = [...t.querySelectorAll("thead th")].map((th) => th.textContent);
  for (const tr of t.querySelectorAll("tbody tr")) [...tr.children].forEach((td, i) => { if (heads[i]) td.dataset.label = heads[i]; });
  return t;
}
