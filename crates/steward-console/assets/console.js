// Steward console: live updates over ONE EventSource per tab, and action forms sent in the
// background. Everything the console does also works without this script: forms are plain
// POSTs answered with a redirect, and a reload shows the current state.
//
// The server renders every fragment; this script only puts them in place. Messages on the
// stream (event "patch", JSON data):
//   {op: "replace", id, html}        replace the element with that id
//   {op: "prepend", id, html, keep}  insert at the top of the element, keep at most `keep`
//   {op: "append", id, text, keep}   append text (log lines), keep at most `keep` characters
//   {op: "text", id, text}           set an element's text and show it
// and event "bye" ({text}): the stream ended for good (logged out, session expired).
'use strict';
(function () {
  const flashBox = document.getElementById('flash');
  const status = document.getElementById('live');

  function showFlash(ok, text) {
    if (!flashBox) return;
    const p = document.createElement('p');
    p.className = ok ? 'flash ok' : 'flash error';
    p.textContent = text;
    flashBox.replaceChildren(p);
  }

  function fragment(html) {
    const template = document.createElement('template');
    template.innerHTML = html;
    return template.content;
  }

  function setStatus(state, text) {
    if (!status) return;
    status.dataset.state = state;
    status.textContent = text;
  }

  const ops = {
    replace(p) {
      const el = document.getElementById(p.id);
      if (el) el.replaceWith(fragment(p.html));
    },
    prepend(p) {
      const el = document.getElementById(p.id);
      if (!el) return;
      el.querySelectorAll(':scope > .empty').forEach((e) => e.remove());
      el.prepend(fragment(p.html));
      while (p.keep && el.children.length > p.keep) el.lastElementChild.remove();
    },
    append(p) {
      const el = document.getElementById(p.id);
      if (!el) return;
      const atEnd = el.scrollTop + el.clientHeight >= el.scrollHeight - 8;
      el.append(document.createTextNode(p.text));
      if (p.keep && el.textContent.length > p.keep) {
        el.textContent = el.textContent.slice(-p.keep);
      }
      if (atEnd) el.scrollTop = el.scrollHeight;
    },
    text(p) {
      const el = document.getElementById(p.id);
      if (!el) return;
      el.textContent = p.text;
      el.hidden = false;
    },
  };

  const url = document.body.dataset.live;
  if (url && window.EventSource) {
    const source = new EventSource(url);
    setStatus('connecting', 'connecting…');
    source.onopen = () => setStatus('live', 'live');
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        setStatus('stopped', 'not live: reload the page');
      } else {
        setStatus('reconnecting', 'reconnecting…');
      }
    };
    source.addEventListener('patch', (e) => {
      const patch = JSON.parse(e.data);
      const op = ops[patch.op];
      if (op) op(patch);
    });
    source.addEventListener('bye', (e) => {
      source.close();
      setStatus('stopped', JSON.parse(e.data).text);
    });
    window.addEventListener('pagehide', () => source.close());
  }

  // Forms marked data-fetch are sent without leaving the page; the answer is a JSON
  // {ok, message, redirect?}. The live stream shows what the action changes.
  document.addEventListener('submit', async (e) => {
    const form = e.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute('data-fetch')) return;
    e.preventDefault();
    const buttons = form.querySelectorAll('button');
    buttons.forEach((b) => { b.disabled = true; });
    try {
      const response = await fetch(form.action, {
        method: 'POST',
        body: new URLSearchParams(new FormData(form)),
        headers: { 'X-Console-Fetch': '1' },
        credentials: 'same-origin',
      });
      const type = response.headers.get('content-type') || '';
      if (!type.includes('application/json')) {
        // Not an action's answer (the session ended: the login page): go there.
        location.assign(response.url);
        return;
      }
      const answer = await response.json();
      showFlash(answer.ok, answer.message);
      if (answer.ok && form.hasAttribute('data-reset')) form.reset();
      if (answer.redirect) location.assign(answer.redirect);
    } catch (err) {
      showFlash(false, 'The daemon did not answer: ' + err.message);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  });
})();
