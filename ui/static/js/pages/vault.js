// The Vault page (to be written).
import { h, mount } from "../dom.js";

export default {
  path: "vault",
  title: "Vault",
  roles: ["admin"],
  nav: true,
  async render(main) {
    mount(main, h("h1", {}, "Vault"), h("p", {}, "This page is coming."));
  },
};
