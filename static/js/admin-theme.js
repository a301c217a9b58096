// The admin's pages take the theme the user chose in Parley (the sidebar's button or
// Settings, kept per user on the server) until the admin's own theme switch is used in
// this browser; from then on that switch decides, as Django's admin has it.
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="parley-theme"]');
  if (meta && !localStorage.getItem("parley-admin-theme-own")) {
    var mode = {system: "auto", light: "light", dark: "dark"}[meta.content] || "auto";
    document.documentElement.dataset.theme = mode;
    localStorage.setItem("theme", mode);
  }
  document.addEventListener("click", function (event) {
    if (event.target.closest && event.target.closest("button.theme-toggle")) {
      localStorage.setItem("parley-admin-theme-own", "1");
    }
  });
})();
