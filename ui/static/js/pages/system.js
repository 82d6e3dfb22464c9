// The System page (to be written).
import { h, mount } from "../dom.js";

export default {
  path: "system",
  title: "System",
  roles: ["admin"],
  nav: true,
  async render(main) {
    mount(main, h("h1", {}, "System"), h("p", {}, "This page is coming."));
  },
};
