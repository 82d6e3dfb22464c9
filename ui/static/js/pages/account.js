// The Your password page (to be written).
import { h, mount } from "../dom.js";

export default {
  path: "account",
  title: "Your password",
  roles: ["admin","peer"],
  nav: false,
  async render(main) {
    mount(main, h("h1", {}, "Your password"), h("p", {}, "This page is coming."));
  },
};
