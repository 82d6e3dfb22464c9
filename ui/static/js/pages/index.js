// Every page of the app, in the navigation's order. A page is
// {path, title, roles, nav, render(main, ctx)}; roles lists "admin",
// "peer" and "public" (reached without a session).
import setup from "./setup.js";
import login from "./login.js";
import account from "./account.js";
import dashboard from "./dashboard.js";
import peers from "./peers.js";
import routing from "./routing.js";
import dns from "./dns.js";
import network from "./network.js";
import services from "./services.js";
import containers from "./containers.js";
import audit from "./audit.js";
import logs from "./logs.js";
import vault from "./vault.js";
import system from "./system.js";
import portal from "./portal.js";

export const pages = [setup, login, account, dashboard, peers, routing, dns, network, services, containers, audit, logs, vault, system, portal];
