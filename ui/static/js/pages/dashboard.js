// The Dashboard page (to be written).
import { h, mount } from "../dom.js";

export default {
  path: "dashboard",
  title: "Dashboard",
  roles: ["admin"],
  nav: true,
  async render(main) {
    mount(main, h("h1", {}, "Dashboard"), h("p", {}, "This page is coming."));
  },
};
