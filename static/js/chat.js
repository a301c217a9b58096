/* Parley's small bit of browser code: the composer's keys, scrolling and copy buttons.
   Everything else is htmx (pages, partials, and the websocket's out-of-band swaps). */
(function () {
  "use strict";

  function composer() { return document.getElementById("composer-input"); }
  function messages() { return document.getElementById("messages"); }

  function nearBottom(el) { return el.scrollHeight - el.scrollTop - el.clientHeight < 120; }
  function scrollToEnd(el) { el.scrollTop = el.scrollHeight; }

  function autosize(textarea) {
    textarea.style.height = "auto";
    textarea.style.height = Math.min(textarea.scrollHeight, 240) + "px";
  }

  document.addEventListener("keydown", function (event) {
    var input = composer();
    if (event.target !== input || event.key !== "Enter" || event.shiftKey || event.isComposing) return;
    event.preventDefault();
    input.form.requestSubmit();
  });

  // Keyboard: Esc closes what is open (the mobile menu, a popover), else stops the reply
  // being written; Ctrl+Shift+O (Cmd+Shift+O) opens a new chat.
  function streamingReply() { return document.querySelector("#messages article[data-status='streaming']"); }
  document.addEventListener("keydown", function (event) {
    if (event.isComposing || event.defaultPrevented) return;
    if (event.key === "Escape") {
      if (document.body.classList.contains("nav-open")) { closeNav(); event.preventDefault(); return; }
      var popover = document.querySelector("details.popover[open], details.msg-edit[open]");
      if (popover) { popover.open = false; var summary = popover.querySelector("summary"); if (summary) summary.focus(); event.preventDefault(); return; }
      var stop = document.getElementById("stop-form");
      if (stop && streamingReply()) { stop.requestSubmit(); event.preventDefault(); }
      return;
    }
    if ((event.ctrlKey || event.metaKey) && event.shiftKey && !event.altKey && event.key.toLowerCase() === "o") {
      var newChat = document.querySelector("form[data-new-chat]");
      if (newChat) { event.preventDefault(); newChat.requestSubmit(); }
    }
  });

  // The mobile menu: a real button that opens the sidebar, moves focus into it, and gives
  // focus back when Esc, the close button or the dimmed page closes it.
  function navButton() { return document.querySelector("[data-nav-open]"); }
  function openNav() {
    document.body.classList.add("nav-open");
    var button = navButton();
    if (button) button.setAttribute("aria-expanded", "true");
    var first = document.querySelector("#sidebar a, #sidebar button, #sidebar input");
    if (first) setTimeout(function () { first.focus(); }, 0);
  }
  function closeNav() {
    document.body.classList.remove("nav-open");
    var button = navButton();
    if (button) { button.setAttribute("aria-expanded", "false"); button.focus(); }
  }
  document.addEventListener("click", function (event) {
    if (!event.target.closest) return;
    if (event.target.closest("[data-nav-open]")) openNav();
    else if (event.target.closest("[data-nav-close]")) closeNav();
  });

  document.addEventListener("input", function (event) {
    if (event.target === composer()) autosize(event.target);
  });

  document.addEventListener("htmx:wsAfterSend", function (event) {
    var input = composer();
    if (input && event.target === input.form) {
      input.value = "";
      autosize(input);
      input.focus();  // the Send button it was pressed with turns into Stop
      var chips = document.getElementById("composer-attachments");
      if (chips) chips.innerHTML = "";  // they went with the message
      var list = messages();
      if (list) list._parleyFollow = true;
    } else if (messages() && messages().contains(event.target)) {
      messages()._parleyFollow = true;  // regenerate or edit: the new reply is at the end
    }
  });

  var following = true;
  document.addEventListener("htmx:wsBeforeMessage", function () {
    var list = messages();
    following = !list || nearBottom(list) || list._parleyFollow;
  });
  document.addEventListener("htmx:wsAfterMessage", function () {
    var list = messages();
    if (list && following) { scrollToEnd(list); list._parleyFollow = false; }
  });

  // Copy buttons: a message's own text (data-copy-text) or one code block (data-copy-code).
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed"; area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); } finally { area.remove(); }
    return Promise.resolve();
  }

  function flashCopied(button) {
    var label = button.textContent;
    button.textContent = "Copied";
    button.classList.add("is-copied");
    setTimeout(function () { button.textContent = label; button.classList.remove("is-copied"); }, 1500);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy-text], [data-copy-code]");
    if (!button) return;
    var text = button.hasAttribute("data-copy-code")
      ? button.parentElement.querySelector("pre").innerText
      : button.getAttribute("data-copy-text");
    copyText(text).then(function () { flashCopied(button); });
  });

  // Theme: the sidebar button flips between light and dark at once and tells the server,
  // which remembers it for the user (the form posts normally where script does not run).
  var darkQuery = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  function effectiveTheme() {
    var chosen = document.documentElement.dataset.theme;
    if (chosen === "light" || chosen === "dark") return chosen;
    return darkQuery && darkQuery.matches ? "dark" : "light";
  }
  function showThemeState() {
    var dark = effectiveTheme() === "dark";
    document.querySelectorAll("[data-theme-toggle] button").forEach(function (button) {
      button.setAttribute("aria-pressed", dark ? "true" : "false");
      button.value = dark ? "light" : "dark";
    });
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-theme-toggle] button");
    if (!button) return;
    event.preventDefault();
    var theme = effectiveTheme() === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = theme;
    showThemeState();
    var form = button.form, body = new FormData(form);
    body.set("theme", theme);
    fetch(form.action, {
      method: "POST", body: body, credentials: "same-origin",
      headers: {"X-CSRFToken": body.get("csrfmiddlewaretoken"), "X-Parley-Theme": "1"}
    });
  });
  if (darkQuery && darkQuery.addEventListener) darkQuery.addEventListener("change", showThemeState);

  // "New chat" is a plain GET form (a button, usable without script); with script the
  // address stays clean, without the "?" of an empty form.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches || !form.matches("form[data-new-chat]")) return;
    event.preventDefault();
    location.assign(form.action);
  });

  // Attachments: files picked with the paperclip or dropped on the composer are uploaded at
  // once; the server answers with a chip (its hidden input goes with the message) or says why
  // it refused the file.
  function csrfToken() {
    try { return JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRFToken"]; } catch (e) { return ""; }
  }
  function uploadFiles(files) {
    var form = document.getElementById("composer");
    var chips = document.getElementById("composer-attachments");
    var error = document.getElementById("composer-error");
    if (!form || !chips) return;
    Array.prototype.forEach.call(files, function (file) {
      var body = new FormData();
      body.append("file", file, file.name);
      fetch(form.getAttribute("data-upload-url"), {method: "POST", body: body, credentials: "same-origin", headers: {"X-CSRFToken": csrfToken()}})
        .then(function (response) { return response.text().then(function (text) { return {ok: response.ok, text: text}; }); })
        .then(function (answer) {
          if (answer.ok) { chips.insertAdjacentHTML("beforeend", answer.text); error.textContent = ""; }
          else error.textContent = answer.text;
        });
    });
  }
  document.addEventListener("click", function (event) {
    if (!event.target.closest) return;
    if (event.target.closest("[data-attach]")) document.getElementById("attach-input").click();
    var remove = event.target.closest("[data-remove-attachment]");
    if (remove) remove.closest("[data-attachment]").remove();
  });
  document.addEventListener("change", function (event) {
    if (event.target.id === "attach-input") { uploadFiles(event.target.files); event.target.value = ""; }
  });
  document.addEventListener("dragover", function (event) {
    var form = event.target.closest && event.target.closest("#composer");
    if (form) { event.preventDefault(); form.classList.add("is-dropping"); }
  });
  document.addEventListener("dragleave", function (event) {
    var form = event.target.closest && event.target.closest("#composer");
    if (form) form.classList.remove("is-dropping");
  });
  document.addEventListener("drop", function (event) {
    var form = event.target.closest && event.target.closest("#composer");
    if (!form) return;
    event.preventDefault();
    form.classList.remove("is-dropping");
    if (event.dataTransfer && event.dataTransfer.files.length) uploadFiles(event.dataTransfer.files);
  });

  // Starter prompts in an empty chat: a click sends that prompt.
  document.addEventListener("click", function (event) {
    var starter = event.target.closest && event.target.closest("[data-starter]");
    var input = composer();
    if (!starter || !input) return;
    input.value = starter.getAttribute("data-starter");
    input.form.requestSubmit();
  });

  // A new chat is stored with its first message: the address becomes the chat's own.
  document.addEventListener("htmx:wsAfterMessage", function () {
    var created = document.getElementById("conversation-created");
    var url = created && created.getAttribute("data-url");
    if (url && location.pathname !== url) history.replaceState(null, "", url);
  });

  // Copying a selection with formulas in it: each formula becomes its LaTeX again (kept in
  // its MathML <annotation>), in the delimiters a reader would write it with.
  function latexOf(math) {
    var source = math.querySelector("annotation[encoding='application/x-tex']");
    if (!source) return math.textContent;
    return math.getAttribute("display") === "block" ? "\n$$" + source.textContent + "$$\n" : "$" + source.textContent + "$";
  }
  document.addEventListener("copy", function (event) {
    var selection = window.getSelection();
    if (!selection || !selection.rangeCount || selection.isCollapsed || !event.clipboardData) return;
    var range = selection.getRangeAt(0);
    var around = range.commonAncestorContainer;
    var within = (around.nodeType === 1 ? around : around.parentElement).closest("math");
    var fragment = range.cloneContents();
    if (!within && !fragment.querySelector("math")) return;
    var holder = document.createElement("div");
    holder.style.cssText = "position: fixed; left: -10000px; top: 0; white-space: pre-wrap;";
    holder.appendChild(fragment);
    var richText = holder.innerHTML;
    holder.querySelectorAll("math").forEach(function (math) { math.replaceWith(document.createTextNode(latexOf(math))); });
    document.body.appendChild(holder);
    var text = within ? latexOf(within) : holder.innerText;
    holder.remove();
    event.clipboardData.setData("text/plain", text.trim());
    event.clipboardData.setData("text/html", richText);
    event.preventDefault();
  });

  document.addEventListener("htmx:wsOpen", function () {
    document.body.classList.remove("is-offline");
    // A new chat's socket that reconnects after its chat was stored is a new chat's socket
    // again: load the chat's own page, which shows what was missed and follows the reply.
    var created = document.getElementById("conversation-created");
    var url = created && created.getAttribute("data-url");
    if (url) location.replace(url);
  });
  document.addEventListener("htmx:wsClose", function () { document.body.classList.add("is-offline"); });

  function start() {
    showThemeState();
    document.body.classList.remove("nav-open");
    var list = messages();
    if (list) scrollToEnd(list);
    var input = composer();
    if (input) input.focus();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
  // Conversations opened from the sidebar arrive as htmx swaps (hx-boost), not page loads.
  document.addEventListener("htmx:afterSettle", function (event) {
    if (event.detail && event.detail.boosted) start();
  });
})();
