// The Containers page (to be written).
import { h, mount } from "../dom.js";

export default {
  path: "containers",
  title: "Containers",
  roles: ["admin"],
  nav: true,
  async render(main) {
    mount(main, h("h1", {}, "Containers"), h("p", {}, "This page is coming."));
  },
};
