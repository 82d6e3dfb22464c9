// The Peers page (to be written).
import { h, mount } from "../dom.js";

export default {
  path: "peers",
  title: "Peers",
  roles: ["admin"],
  nav: true,
  async render(main) {
    mount(main, h("h1", {}, "Peers"), h("p", {}, "This page is coming."));
  },
};
