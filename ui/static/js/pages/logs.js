// The Logs page (to be written).
import { h, mount } from "../dom.js";

export default {
  path: "logs",
  title: "Logs",
  roles: ["admin"],
  nav: true,
  async render(main) {
    mount(main, h("h1", {}, "Logs"), h("p", {}, "This page is coming."));
  },
};
