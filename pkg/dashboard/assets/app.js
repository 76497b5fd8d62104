// bridge's Chatwoot Dashboard App.
//
// Chatwoot (app/javascript/dashboard/components/widgets/DashboardApp/Frame.vue)
// posts the context to this frame as a JSON string,
//   {"event":"appContext","data":{"conversation":{...},"contact":{...},"currentAgent":{...}}},
// with target origin '*', when the frame's load event fires, and again each
// time the frame posts the plain string 'chatwoot-dashboard-app:fetch-info'
// (newer versions answer only while the tab is visible). Chatwoot creates
// the frame the first time its tab is opened and anew for each conversation.
// So the listener goes up first, the page then asks once, and keeps asking
// until a context arrives: it works whether the context comes before or
// after the page is ready.
//
// The context proves nothing: it is accepted only from Chatwoot's origin
// and from the parent frame, and bridge checks the conversation in its
// journal before answering. Every text shown is set as text, never as HTML.
(function () {
  'use strict';

  var FETCH_INFO = 'chatwoot-dashboard-app:fetch-info';
  var POLL_MS = 3000;

  var meta = document.querySelector('meta[name="bridge-chatwoot-origin"]');
  var chatwootOrigin = meta ? meta.getAttribute('content') : '';
  var params = new URLSearchParams(window.location.search);
  var key = params.get('key') || '';
  var embedded = window.parent !== window;

  var state = {
    account: 0, conv: 0, agent: null, data: null, loading: false,
    contexts: 0, ignored: 0, loads: 0, stopped: false, open: {}
  };

  window.addEventListener('message', onMessage);

  function $(id) { return document.getElementById(id); }

  function onMessage(ev) {
    if (!chatwootOrigin || ev.origin !== chatwootOrigin || ev.source !== window.parent) {
      state.ignored++;
      document.body.setAttribute('data-ignored', String(state.ignored));
      return;
    }
    if (typeof ev.data !== 'string') return;
    var msg;
    try { msg = JSON.parse(ev.data); } catch (e) { return; }
    if (!msg || msg.event !== 'appContext' || !msg.data || typeof msg.data !== 'object') return;
    var data = msg.data;
    if (data.theme === 'dark' || data.theme === 'light') {
      document.documentElement.setAttribute('data-theme', data.theme);
    }
    var c = data.conversation || {};
    var account = toId(c.account_id);
    var conv = toId(c.id);
    if (!account || !conv) {
      showWaiting('Open a conversation to see what bridge did in it.');
      return;
    }
    state.contexts++;
    document.body.setAttribute('data-contexts', String(state.contexts));
    var a = data.currentAgent;
    state.agent = a && typeof a === 'object'
      ? { id: toId(a.id), name: typeof a.name === 'string' ? a.name : '' }
      : null;
    select(account, conv);
  }

  function select(account, conv) {
    if (account === state.account && conv === state.conv) return;
    state.account = account;
    state.conv = conv;
    state.data = null;
    state.open = {};
    $('conv-title').textContent = 'conversation #' + conv;
    $('waiting').hidden = true;
    $('actions').hidden = false;
    render();
    load();
  }

  function toId(v) {
    var n = typeof v === 'string' ? Number(v) : v;
    return typeof n === 'number' && Number.isSafeInteger(n) && n > 0 ? n : 0;
  }

  function requestContext() {
    if (embedded && chatwootOrigin) {
      window.parent.postMessage(FETCH_INFO, chatwootOrigin);
    }
  }

  function headers(json) {
    var h = { 'Authorization': 'Bearer ' + key };
    if (json) h['Content-Type'] = 'application/json';
    return h;
  }

  function load() {
    if (!state.conv || state.loading || state.stopped) return;
    var account = state.account;
    var conv = state.conv;
    state.loading = true;
    fetch('api/conversation?account_id=' + account + '&conversation_id=' + conv,
      { headers: headers(false), cache: 'no-store', credentials: 'omit' })
      .then(function (res) {
        return res.json().catch(function () { return {}; }).then(function (body) {
          if (account !== state.account || conv !== state.conv) return;
          if (!res.ok) {
            state.data = null;
            // A wrong key stays wrong: stop asking until the frame reloads.
            if (res.status === 401) state.stopped = true;
            showNotice(body.error || ('bridge answered ' + res.status));
          } else {
            state.data = body;
            showNotice('');
          }
          state.loads++;
          document.body.setAttribute('data-loads', String(state.loads));
          render();
        });
      })
      .catch(function (e) {
        showNotice('bridge is unreachable: ' + e.message);
      })
      .then(function () { state.loading = false; });
  }

  function act(action) {
    if (!state.conv) return;
    var buttons = document.querySelectorAll('#actions button');
    buttons.forEach(function (b) { b.disabled = true; });
    var body = { account_id: state.account, conversation_id: state.conv, agent: state.agent || {} };
    fetch('api/' + action, {
      method: 'POST', headers: headers(true), body: JSON.stringify(body), cache: 'no-store', credentials: 'omit'
    })
      .then(function (res) {
        return res.json().catch(function () { return {}; }).then(function (b) {
          if (res.ok) showResult(b.message || 'Done.', false);
          else showResult(b.error || ('bridge answered ' + res.status), true);
        });
      })
      .catch(function (e) { showResult('bridge is unreachable: ' + e.message, true); })
      .then(function () {
        render();
        state.stopped = false;
        load();
      });
  }

  function showNotice(text) {
    var n = $('notice');
    n.textContent = text;
    n.hidden = !text;
  }

  function showWaiting(text) {
    var w = $('waiting');
    w.textContent = text;
    w.hidden = false;
  }

  function showResult(text, isError) {
    var r = $('result');
    r.textContent = text;
    r.className = isError ? 'result error' : 'result';
    r.hidden = false;
    document.body.setAttribute('data-result', isError ? 'error' : 'ok');
  }

  // el builds an element with text content only.
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function render() {
    var d = state.data;
    var s = d && d.conversation;
    var holder = $('holder');
    $('summary').hidden = !s;
    $('history').hidden = !d;
    $('owners').hidden = !(d && d.ownership && d.ownership.length);
    document.body.setAttribute('data-state', s ? s.state : '');
    if (!s) {
      holder.hidden = true;
      updateButtons(null);
      return;
    }
    holder.hidden = false;
    holder.textContent = s.state === 'human' ? 'Human' : 'Bot';
    holder.className = 'pill ' + (s.state === 'human' ? 'human' : 'bot');

    var line = $('holder-line');
    line.textContent = '';
    line.appendChild(el('strong', '', s.state === 'human' ? 'A human holds it' : 'The bot answers it'));
    line.appendChild(document.createTextNode(s.state_at
      ? ' since ' + clock(s.state_at) + ' (' + ago(s.state_at, d.now) + ')'
      : ' (since bridge first saw it)'));
    if (s.state_reason) line.appendChild(document.createTextNode(' — ' + s.state_reason));

    var r = d.route;
    var route = $('fact-route');
    route.textContent = r ? ('#' + r.id + (r.name ? ' ' + r.name : '') + ' · inbox ' + r.inbox_id + ' · ' + r.mode) : 'none (inbox ' + s.inbox_id + ')';
    if (r && !r.enabled) {
      route.appendChild(document.createTextNode(' '));
      route.appendChild(el('span', 'tag', 'disabled'));
    }
    $('fact-app').textContent = r ? ((r.app_name || 'unnamed') + (r.app_mode ? ' (' + appMode(r.app_mode) + ')' : '')) +
      (s.dify_conversation_id ? ' · conversation ' + s.dify_conversation_id.slice(0, 8) : '') : '—';
    $('fact-app').title = s.dify_conversation_id || '';
    $('fact-status').textContent = s.chatwoot_status || 'unknown';
    $('fact-counts').textContent = plural(s.messages, 'message') + ' · ' + plural(s.answers, 'answer') + ' · ' + plural(s.handoffs, 'handoff');

    updateButtons(s);
    renderOwnership(d);
    renderEvents(d);
  }

  function updateButtons(s) {
    $('give-back').disabled = !!(s && s.state === 'bot');
    $('keep').disabled = !!(s && s.state === 'human');
    $('give-back').className = s && s.state === 'human' ? 'primary' : '';
  }

  // renderOwnership lists the ownership journal, as `bridge conversations
  // show` does: when, what changed, who held it after, why.
  function renderOwnership(d) {
    var list = $('ownership');
    list.textContent = '';
    (d.ownership || []).forEach(function (o) {
      var li = el('li', 'owner');
      li.setAttribute('data-kind', o.kind);
      li.appendChild(el('span', 't', clock(o.at)));
      var what = el('span', 'what');
      what.appendChild(el('span', 'change', ownKind(o.kind)));
      what.appendChild(document.createTextNode(' → '));
      what.appendChild(el('span', 'who ' + (o.owner === 'human' ? 'human' : 'bot'), o.owner === 'human' ? 'human' : 'bot'));
      if (o.cause) what.appendChild(el('span', 'cause', ' · ' + o.cause));
      if (o.detail || o.event_id) {
        what.appendChild(el('span', 'detail', (o.detail || '') + (o.event_id ? (o.detail ? ' · ' : '') + 'event #' + o.event_id : '')));
      }
      li.appendChild(what);
      list.appendChild(li);
    });
  }

  function ownKind(k) {
    return { handoff: 'handed off', takeover: 'taken over', keep: 'kept', 'return': 'returned', resolved: 'resolved', reopened: 'reopened' }[k] || k;
  }

  function renderEvents(d) {
    var list = $('events');
    list.textContent = '';
    $('no-events').hidden = d.events.length > 0;
    d.events.forEach(function (e, i) {
      var li = el('li', 'event');
      li.setAttribute('data-event', String(e.id));
      var head = el('div', 'event-head');
      var left = el('span', '', '#' + e.id + ' ');
      left.appendChild(el('span', 'when', clock(e.received_at) + ' · ' + kindLabel(e.kind)));
      head.appendChild(left);
      head.appendChild(el('span', 'badge ' + e.status, e.status.replace('_', ' ')));
      li.appendChild(head);

      if (e.kind === 'ask_again') {
        li.appendChild(el('p', 'by', e.reason + (e.text ? ', about:' : '')));
      }
      if (e.text) li.appendChild(el('p', 'said', e.text));

      var sm = e.summary;
      var chips = el('div', 'chips');
      if (sm.dify_ms > 0) chips.appendChild(el('span', 'chip', 'Dify ' + seconds(sm.dify_ms)));
      if (sm.tokens > 0) chips.appendChild(el('span', 'chip', sm.tokens + ' tokens'));
      sm.posted.forEach(function (p) { chips.appendChild(el('span', 'chip', 'posted ' + p)); });
      if (sm.handoff) chips.appendChild(el('span', 'chip handoff', 'handoff: ' + sm.handoff));
      sm.in_doubt.forEach(function (x) { chips.appendChild(el('span', 'chip doubt', x)); });
      if (e.merged_into) chips.appendChild(el('span', 'chip', 'answered with #' + e.merged_into));
      if (chips.childNodes.length) li.appendChild(chips);

      if (sm.held_back) {
        var held = el('p', 'held');
        held.appendChild(el('b', '', 'Held back by a takeover: '));
        held.appendChild(document.createTextNode(sm.held_back));
        li.appendChild(held);
      }
      if (e.error) li.appendChild(el('p', 'err', e.error));

      var det = el('details');
      var open = state.open[e.id];
      det.open = open === undefined ? i === 0 : open;
      det.addEventListener('toggle', function () { state.open[e.id] = det.open; });
      det.appendChild(el('summary', '', 'Trace: ' + plural(e.hops.length, 'hop') +
        (sm.decision ? ' · ' + sm.decision : '')));
      var hops = el('ol', 'hops');
      e.hops.forEach(function (h) {
        var row = el('li', 'hop' + (h.flag ? ' ' + h.flag : ''));
        row.appendChild(el('span', 't', '+' + seconds(Date.parse(h.at) - Date.parse(e.received_at))));
        var what = el('span', 'what');
        what.appendChild(el('span', 'stage', h.stage));
        what.appendChild(document.createTextNode(' ' + h.outcome + (h.detail ? ': ' + h.detail : '')));
        if (h.ms >= 1) what.appendChild(el('span', 'ms', ' · ' + seconds(h.ms)));
        row.appendChild(what);
        hops.appendChild(row);
      });
      det.appendChild(hops);
      if (e.posts.length) {
        var posts = el('ul', 'posts');
        e.posts.forEach(function (p) {
          var pl = el('li');
          pl.appendChild(el('span', 'step', p.step + (p.private ? ' (private note)' : '')));
          var where = p.message_id ? ' → message ' + p.message_id : (e.status === 'working' || e.status === 'accepted' ? ' → posting' : ' → not confirmed');
          pl.appendChild(document.createTextNode(where + ': ' + p.content));
          posts.appendChild(pl);
        });
        det.appendChild(posts);
      }
      li.appendChild(det);
      list.appendChild(li);
    });
  }

  function kindLabel(k) {
    if (k === 'takeover') return 'agent reply';
    if (k === 'ask_again') return 'asked again';
    return 'customer message';
  }

  function appMode(m) {
    return { 'advanced-chat': 'chatflow', 'chat': 'chatbot', 'agent-chat': 'agent', 'completion': 'completion', 'workflow': 'workflow' }[m] || m;
  }

  function plural(n, word) { return n + ' ' + word + (n === 1 ? '' : 's'); }

  function seconds(ms) {
    if (!(ms >= 0)) return '';
    if (ms < 1000) return Math.round(ms) + ' ms';
    return (ms / 1000).toFixed(ms < 10000 ? 1 : 0) + ' s';
  }

  function clock(iso) {
    var t = new Date(iso);
    var now = new Date();
    var opts = { hour: '2-digit', minute: '2-digit', second: '2-digit' };
    if (t.toDateString() !== now.toDateString()) {
      return t.toLocaleDateString([], { month: 'short', day: 'numeric' }) + ' ' + t.toLocaleTimeString([], opts);
    }
    return t.toLocaleTimeString([], opts);
  }

  // ago measures against bridge's clock, not the agent's.
  function ago(iso, nowIso) {
    var s = Math.max(0, Math.round((Date.parse(nowIso) - Date.parse(iso)) / 1000));
    if (s < 10) return 'just now';
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 86400) return Math.floor(s / 3600) + ' h ago';
    return Math.floor(s / 86400) + ' d ago';
  }

  document.querySelectorAll('#actions button').forEach(function (b) {
    b.addEventListener('click', function () { act(b.getAttribute('data-action')); });
  });

  if (!key) {
    showNotice('This page needs the dashboard key: the Dashboard App\'s URL must end in ?key= and bridge\'s dashboard.key.');
  }
  if (!chatwootOrigin) {
    showNotice('bridge\'s chatwoot.base_url is not a valid URL, so no Chatwoot context is accepted.');
  }
  if (embedded) {
    requestContext();
  } else {
    // Opened on its own (not inside Chatwoot): the conversation comes from
    // the URL, and actions name no agent.
    var account = toId(params.get('account_id'));
    var conv = toId(params.get('conversation_id'));
    if (account && conv) select(account, conv);
    else showWaiting('Open this page from a conversation in Chatwoot (Settings › Integrations › Dashboard Apps), or add &account_id=…&conversation_id=… to its URL.');
  }

  window.setInterval(function () {
    if (document.hidden) return;
    if (!state.conv) requestContext();
    else load();
  }, POLL_MS);
})();
