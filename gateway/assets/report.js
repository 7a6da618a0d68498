// The daily report page's loader. A report link carries no token (URLs end up in logs,
// history and Referer headers): the token comes from the link's fragment (#token=<jwt>, never
// sent to a server; removed from the address bar at once) or from the dashboard's sign-in
// (same origin), and the report is fetched with an Authorization header and shown in place.
"use strict";

(function () {
  const english = new URLSearchParams(location.search).get("lang") === "en";
  const say = (es, en) => {
    document.getElementById("report-status").textContent = english ? en : es;
  };
  const fromFragment = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromFragment) history.replaceState(null, "", location.pathname + location.search);
  const token = fromFragment || localStorage.getItem("vigia.token");
  if (!token) {
    say("Entre en el panel (/) para ver este informe.", "Sign in on the dashboard (/) to see this report.");
    return;
  }
  fetch(location.pathname + location.search, {
    headers: { Authorization: `Bearer ${token}` },
    cache: "no-store",
  })
    .then(async (response) => {
      const body = await response.text();
      if (!response.ok) {
        let message = body;
        try { message = JSON.parse(body).error || body; } catch (e) { /* not JSON */ }
        say(message, message);
        return;
      }
      const page = new DOMParser().parseFromString(body, "text/html");
      document.title = page.title;
      document.documentElement.lang = page.documentElement.lang;
      document.body.replaceWith(document.adoptNode(page.body));
    })
    .catch((e) => say(`No se pudo cargar el informe: ${e}`, `Cannot load the report: ${e}`));
})();
