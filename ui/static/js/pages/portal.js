// The My cell page (to be written).
import { h, mount } from "../dom.js";

export default {
  path: "portal",
  title: "My cell",
  roles: ["peer"],
  nav: true,
  async render(main) {
    mount(main, h("h1", {}, "My cell"), h("p", {}, "This page is coming."));
  },
};
