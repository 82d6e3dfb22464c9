// The Sign in page (to be written).
import { h, mount } from "../dom.js";

export default {
  path: "login",
  title: "Sign in",
  roles: ["public"],
  nav: false,
  async render(main) {
    mount(main, h("h1", {}, "Sign in"), h("p", {}, "This page is coming."));
  },
};
