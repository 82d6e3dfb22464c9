// The Audit page (to be written).
import { h, mount } from "../dom.js";

export default {
  path: "audit",
  title: "Audit",
  roles: ["admin"],
  nav: true,
  async render(main) {
    mount(main, h("h1", {}, "Audit"), h("p", {}, "This page is coming."));
  },
};
