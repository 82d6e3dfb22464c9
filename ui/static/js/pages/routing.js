// The Routing page (to be written).
import { h, mount } from "../dom.js";

export default {
  path: "routing",
  title: "Routing",
  roles: ["admin"],
  nav: true,
  async render(main) {
    mount(main, h("h1", {}, "Routing"), h("p", {}, "This page is coming."));
  },
};
