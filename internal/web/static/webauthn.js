// ward: security keys and passkeys (WebAuthn). Adding a key on
// /account/security-keys (form#webauthn-register) and the second factor at
// login (section#webauthn-login). The server's begin endpoints answer the
// options for navigator.credentials with binary fields in base64url; this
// file turns them into ArrayBuffers, asks the browser, and posts the
// browser's answer (binary fields base64url again) to the finish endpoint,
// always with the session's CSRF token in X-CSRF-Token.
(function () {
  "use strict";

  function csrf() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.content : "";
  }

  function fromB64url(s) {
    s = String(s).replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) { s += "="; }
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
    return out.buffer;
  }

  function toB64url(buf) {
    var bytes = new Uint8Array(buf), bin = "";
    for (var i = 0; i < bytes.length; i++) { bin += String.fromCharCode(bytes[i]); }
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function withIDs(list) {
    return (list || []).map(function (c) { return Object.assign({}, c, {id: fromB64url(c.id)}); });
  }

  function creationOptions(o) {
    var pk = Object.assign({}, o.publicKey);
    pk.challenge = fromB64url(pk.challenge);
    pk.user = Object.assign({}, pk.user, {id: fromB64url(pk.user.id)});
    if (pk.excludeCredentials) { pk.excludeCredentials = withIDs(pk.excludeCredentials); }
    return pk;
  }

  function requestOptions(o) {
    var pk = Object.assign({}, o.publicKey);
    pk.challenge = fromB64url(pk.challenge);
    if (pk.allowCredentials) { pk.allowCredentials = withIDs(pk.allowCredentials); }
    return pk;
  }

  // credentialJSON is the PublicKeyCredential as the server parses it.
  // ward asks for no extensions, so their results are left out.
  function credentialJSON(cred) {
    var r = cred.response;
    var out = {id: cred.id, rawId: toB64url(cred.rawId), type: cred.type, clientExtensionResults: {},
      response: {clientDataJSON: toB64url(r.clientDataJSON)}};
    if (cred.authenticatorAttachment) { out.authenticatorAttachment = cred.authenticatorAttachment; }
    if (r.attestationObject) {
      out.response.attestationObject = toB64url(r.attestationObject);
      out.response.transports = typeof r.getTransports === "function" ? r.getTransports() : [];
    }
    if (r.authenticatorData) {
      out.response.authenticatorData = toB64url(r.authenticatorData);
      out.response.signature = toB64url(r.signature);
      if (r.userHandle && r.userHandle.byteLength) { out.response.userHandle = toB64url(r.userHandle); }
    }
    return out;
  }

  // post sends JSON and returns the server's JSON answer plus ok; an
  // answer that is not JSON (a login page after the session expired, an
  // error page) becomes an error message.
  async function post(url, body) {
    var resp;
    try {
      resp = await fetch(url, {method: "POST", credentials: "same-origin", redirect: "error",
        headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrf()},
        body: JSON.stringify(body || {})});
    } catch (e) {
      return {ok: false, error: "The server did not answer, or your session expired. Reload the page and try again."};
    }
    var data = null;
    if ((resp.headers.get("Content-Type") || "").indexOf("application/json") === 0) {
      try { data = await resp.json(); } catch (e) { data = null; }
    }
    if (!data) {
      return {ok: false, error: "The page expired (the server answered " + resp.status + "). Reload the page and try again."};
    }
    data.ok = resp.ok && !data.error;
    return data;
  }

  function browserError(e, registering) {
    switch (e && e.name) {
      case "NotAllowedError":
        return "The security key did not answer in time, or the request was cancelled. Try again.";
      case "InvalidStateError":
        return registering ? "This security key is registered already." : "The security key refused the request.";
      case "SecurityError":
        return "The browser refused: security keys work only when you open ward at its public address over https:// (or http://localhost).";
      case "NotSupportedError":
        return "This security key or browser does not support what ward asks for.";
      case "AbortError":
        return "The request was cancelled.";
    }
    return "The security key request failed: " + ((e && e.message) || e);
  }

  function supported() {
    return !!(window.PublicKeyCredential && navigator.credentials && navigator.credentials.create);
  }

  // ui drives one widget: its button, status line and error box.
  function ui(button, status, error) {
    return {
      busy: function (msg) {
        button.disabled = true;
        button.setAttribute("aria-busy", "true");
        error.hidden = true;
        error.textContent = "";
        status.textContent = msg;
      },
      done: function () {
        button.disabled = false;
        button.removeAttribute("aria-busy");
        status.textContent = "";
      },
      fail: function (answer) {
        this.done();
        error.textContent = answer.error || "Something went wrong.";
        if (answer.redirect) {
          var a = document.createElement("a");
          a.href = answer.redirect;
          a.textContent = answer.redirect === "/login" ? "Log in again" : "Continue";
          error.appendChild(document.createTextNode(" "));
          error.appendChild(a);
        }
        error.hidden = false;
      }
    };
  }

  function setupRegister(form) {
    var button = form.querySelector("#webauthn-register-button");
    var input = form.querySelector("#key-name");
    var nameError = form.querySelector("#key-name-error");
    var u = ui(button, form.querySelector("#webauthn-register-status"), form.querySelector("#webauthn-register-error"));
    function fieldError(msg) {
      nameError.textContent = msg || "";
      nameError.hidden = !msg;
      if (msg) { input.setAttribute("aria-invalid", "true"); } else { input.removeAttribute("aria-invalid"); }
    }
    form.addEventListener("submit", async function (ev) {
      ev.preventDefault();
      fieldError("");
      if (!supported()) {
        u.fail({error: "This browser does not support security keys or passkeys."});
        return;
      }
      u.busy("Starting…");
      var begin = await post(form.dataset.begin, {});
      if (!begin.ok) { u.fail(begin); return; }
      u.busy("Touch your security key, or confirm with your device, to add it…");
      var cred;
      try {
        cred = await navigator.credentials.create({publicKey: creationOptions(begin.options)});
      } catch (e) {
        u.fail({error: browserError(e, true)});
        return;
      }
      u.busy("Checking the key…");
      var fin = await post(form.dataset.finish, {ceremony_id: begin.ceremony_id, name: input.value, credential: credentialJSON(cred)});
      if (!fin.ok) {
        if (fin.field === "name") {
          fieldError(fin.error);
          input.focus();
        }
        u.fail(fin);
        return;
      }
      u.busy("Added.");
      window.location.assign(fin.redirect);
    });
  }

  function setupLogin(section) {
    var button = section.querySelector("#webauthn-login-button");
    var u = ui(button, section.querySelector("#webauthn-login-status"), section.querySelector("#webauthn-login-error"));
    button.addEventListener("click", async function () {
      if (!supported()) {
        u.fail({error: "This browser does not support security keys or passkeys."});
        return;
      }
      u.busy("Starting…");
      var begin = await post(section.dataset.begin, {});
      if (!begin.ok) { u.fail(begin); return; }
      u.busy("Touch your security key, or confirm with your device…");
      var cred;
      try {
        cred = await navigator.credentials.get({publicKey: requestOptions(begin.options)});
      } catch (e) {
        u.fail({error: browserError(e, false)});
        return;
      }
      u.busy("Checking…");
      var fin = await post(section.dataset.finish, {ceremony_id: begin.ceremony_id, next: section.dataset.next || "/",
        credential: credentialJSON(cred)});
      if (!fin.ok) { u.fail(fin); return; }
      u.busy("Logged in.");
      window.location.assign(fin.redirect || "/");
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("webauthn-register");
    if (form) { setupRegister(form); }
    var section = document.getElementById("webauthn-login");
    if (section) { setupLogin(section); }
  });
})();
