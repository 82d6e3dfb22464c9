// The Services page (to be written).
import { h, mount } from "../dom.js";

export default {
  path: "services",
  title: "Services",
  roles: ["admin"],
  nav: true,
  async render(main) {
    mount(main, h("h1", {}, "Services"), h("p", {}, "This page is coming."));
  },
};
