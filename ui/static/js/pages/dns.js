// The Names page (to be written).
import { h, mount } from "../dom.js";

export default {
  path: "dns",
  title: "Names",
  roles: ["admin"],
  nav: true,
  async render(main) {
    mount(main, h("h1", {}, "Names"), h("p", {}, "This page is coming."));
  },
};
