// The Setup page (to be written).
import { h, mount } from "../dom.js";

export default {
  path: "setup",
  title: "Setup",
  roles: ["public"],
  nav: false,
  async render(main) {
    mount(main, h("h1", {}, "Setup"), h("p", {}, "This page is coming."));
  },
};
