//! The console's pages: plain HTML with a little CSS, every value escaped.

use axum::http::StatusCode;
use eventsource::{DeadLetter, GroupStats, LetterBody};

use super::Console;

/// Escapes text for HTML content and attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A time as people read it (UTC, to the millisecond).
pub(crate) fn when(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
}

/// Percent-encodes a query-string value.
pub(crate) fn query_value(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The console's style sheet, served as `/style.css` (the content
/// security policy allows no inline style).
pub(crate) const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}\
table{border-collapse:collapse;margin:1rem 0}th,td{padding:.35rem .8rem;border-bottom:1px solid #ddd;text-align:left}\
th{background:#f4f4f4}td.n{text-align:right}.bad{color:#b00020;font-weight:600}.ok{color:#1b5e20}\
.note{background:#e8f5e9;padding:.5rem 1rem}pre{background:#f7f7f7;padding:1rem;overflow:auto}\
form{display:inline}button{padding:.3rem .8rem}header{color:#555;margin-bottom:1rem}";

/// A whole page: the header (with links to the store's pages when the
/// console has a store), the title and `body`; `refresh` reloads it
/// every 2 s.
pub(crate) fn page(console: &Console, title: &str, refresh: bool, body: &str) -> String {
    let refresh = if refresh {
        "<meta http-equiv=\"refresh\" content=\"2\">"
    } else {
        ""
    };
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">{refresh}<title>{} — eventsource</title>\
         <link rel=\"stylesheet\" href=\"/style.css\"></head><body><header><a href=\"/\">eventsource console</a>{} · {} · {}</header>\
         <h1>{}</h1>{body}</body></html>",
        esc(title),
        if console.store.is_some() {
            " · <a href=\"/replays\">replays</a> · <a href=\"/timeouts\">timeouts</a>"
        } else {
            ""
        },
        esc(&console.place),
        if console.allow_writes { "replay and purge allowed" } else { "read-only" },
        esc(title),
    )
}

/// Every group with its backlog, members, in-flight handlers and dead
/// letters; refreshes every 2 s.
pub(crate) fn overview(console: &Console, groups: &[(String, Option<GroupStats>)]) -> String {
    let mut body = String::new();
    if groups.is_empty() {
        body.push_str(
            "<p>No consumer group is known here. RabbitMQ and Kafka do not list groups: \
             start the console with <code>--group NAME</code> for each.</p>",
        );
    } else {
        body.push_str(
            "<table id=\"groups\"><tr><th>group</th><th>members</th><th>pending (lag)</th>\
             <th>in flight</th><th>dead letters</th></tr>",
        );
        for (name, stats) in groups {
            let link = format!(
                "<a href=\"/group?name={}\">{}</a>",
                query_value(name),
                esc(name)
            );
            match stats {
                Some(s) => body.push_str(&format!(
                    "<tr data-group=\"{}\"><td>{link}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                     <td class=\"n\">{}</td><td class=\"n{}\">{}</td></tr>",
                    esc(name),
                    s.members,
                    s.pending,
                    s.in_flight,
                    if s.dead_letters > 0 { " bad" } else { "" },
                    s.dead_letters
                )),
                None => body.push_str(&format!(
                    "<tr data-group=\"{}\"><td>{link}</td><td colspan=\"4\">not on the broker</td></tr>",
                    esc(name)
                )),
            }
        }
        body.push_str("</table>");
    }
    page(console, "Consumer groups", true, &body)
}

/// The hidden field that carries the session's CSRF token in a form.
pub(crate) fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

/// One group: its numbers and its dead letters with their failures.
pub(crate) fn group(
    console: &Console,
    csrf: &str,
    name: &str,
    stats: Option<&GroupStats>,
    letters: &[DeadLetter],
    done: Option<&str>,
) -> String {
    let mut body = String::new();
    if let Some(done) = done {
        body.push_str(&format!("<p class=\"note\" id=\"done\">{}</p>", esc(done)));
    }
    match stats {
        Some(s) => body.push_str(&format!(
            "<p>{} member(s), {} pending, {} in flight, {} dead letter(s).</p>",
            s.members, s.pending, s.in_flight, s.dead_letters
        )),
        None => body.push_str("<p>The broker does not know this group.</p>"),
    }
    if letters.is_empty() {
        body.push_str("<p class=\"ok\" id=\"no-letters\">No dead letters.</p>");
    } else {
        if console.allow_writes {
            body.push_str(&format!(
                "<p><form method=\"post\" action=\"/replay-all\"><input type=\"hidden\" name=\"group\" value=\"{g}\">{c}\
                 <button id=\"replay-all\">Replay all {n}</button></form> \
                 <a href=\"/purge?name={q}\" id=\"purge\">Purge…</a></p>",
                g = esc(name),
                c = csrf_field(csrf),
                n = letters.len(),
                q = query_value(name),
            ));
        }
        let parked = eventsource::ParkedAggregate::of(letters.to_vec());
        if !parked.is_empty() {
            body.push_str(
                "<h2>Parked aggregates</h2><p>Their later events wait behind the head letter: \
                 replay it once the handler is fixed, or discard it (<code>eventsource dlq discard</code>).</p>\
                 <table id=\"parked\"><tr><th>aggregate</th><th>head letter</th><th>waiting</th></tr>",
            );
            for p in &parked {
                body.push_str(&format!(
                    "<tr class=\"parked\"><td>{}</td><td><a href=\"/letter?id={}\">{}</a></td><td class=\"n\">{}</td></tr>",
                    esc(&p.aggregate_id),
                    query_value(&p.head),
                    esc(&p.head),
                    p.parked,
                ));
            }
            body.push_str("</table><h2>Dead letters</h2>");
        }
        body.push_str(
            "<table id=\"letters\"><tr><th>dead letter</th><th>event</th><th>attempts</th>\
             <th>last failed</th><th>error</th></tr>",
        );
        for l in letters {
            let what = crate::output::what(l);
            body.push_str(&format!(
                "<tr class=\"letter\"><td><a href=\"/letter?id={}\">{}</a></td><td>{}</td><td class=\"n\">{}</td>\
                 <td>{}</td><td class=\"bad\">{}</td></tr>",
                query_value(&l.id),
                esc(&l.id),
                esc(&what),
                l.failure.attempts,
                esc(&when(&l.failure.last_failed_at)),
                esc(&l.failure.error),
            ));
        }
        body.push_str("</table>");
    }
    page(console, &format!("Group {name}"), false, &body)
}

/// One dead letter: the failure history and the event.
pub(crate) fn letter(console: &Console, csrf: &str, l: &DeadLetter) -> String {
    let f = &l.failure;
    let mut body = format!(
        "<table id=\"failure\"><tr><th>group</th><td><a href=\"/group?name={}\">{}</a></td></tr>\
         <tr><th>handler</th><td>{}</td></tr><tr><th>source</th><td>{}</td></tr>\
         <tr><th>failure</th><td>{:?} after {} attempt(s)</td></tr>\
         <tr><th>first failed</th><td>{}</td></tr><tr><th>last failed</th><td>{}</td></tr>\
         <tr><th>error</th><td class=\"bad\">{}</td></tr></table>",
        query_value(&f.group),
        esc(&f.group),
        esc(f.handler.as_deref().unwrap_or("-")),
        esc(&f.source),
        f.kind,
        f.attempts,
        esc(&when(&f.first_failed_at)),
        esc(&when(&f.last_failed_at)),
        esc(&f.error),
    );
    if console.allow_writes {
        body.push_str(&format!(
            "<form method=\"post\" action=\"/replay\"><input type=\"hidden\" name=\"id\" value=\"{}\">{}\
             <button id=\"replay\">Replay to {}</button></form>",
            esc(&l.id),
            csrf_field(csrf),
            esc(&f.group)
        ));
    }
    let event = match &l.body {
        LetterBody::Envelope(e) => serde_json::to_string_pretty(e).expect("an envelope serializes"),
        LetterBody::Raw(raw) => format!("(undecodable) {raw}"),
    };
    body.push_str(&format!(
        "<h2>Event</h2><pre id=\"event\">{}</pre>",
        esc(&event)
    ));
    page(console, &format!("Dead letter {}", l.id), false, &body)
}

/// Asks the operator to type the group's name before purging.
pub(crate) fn purge_confirm(console: &Console, csrf: &str, group: &str, count: usize) -> String {
    let body = format!(
        "<p class=\"bad\">This deletes all {count} dead letter(s) of <b>{g}</b> for good.</p>\
         <form method=\"post\" action=\"/purge\"><input type=\"hidden\" name=\"group\" value=\"{g}\">{c}\
         <label>Type the group's name to confirm: <input name=\"confirm\" id=\"confirm\" autocomplete=\"off\"></label> \
         <button id=\"purge-confirmed\">Purge</button></form> <a href=\"/group?name={q}\">Cancel</a>",
        g = esc(group),
        c = csrf_field(csrf),
        q = query_value(group),
    );
    page(console, &format!("Purge {group}?"), false, &body)
}

/// An error page; with `login`, a form to enter the token.
pub(crate) fn error(status: StatusCode, message: &str, login: bool) -> String {
    let form = if login {
        "<form method=\"get\" action=\"/login\" id=\"login\"><label>Token: \
         <input type=\"password\" name=\"token\" autocomplete=\"off\"></label> <button>Log in</button></form>"
    } else {
        ""
    };
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{status}</title><link rel=\"stylesheet\" href=\"/style.css\"></head>\
         <body><header><a href=\"/\">eventsource console</a></header><h1>{status}</h1>\
         <p class=\"bad\" id=\"error\">{}</p>{form}</body></html>",
        esc(message)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_query_values_encoded() {
        assert_eq!(
            esc("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
        assert_eq!(
            query_value("billing/1732-0 x&y"),
            "billing%2F1732-0%20x%26y"
        );
    }

    /// A group with an aggregate parked behind its failed event shows it
    /// above the letters, with a link to its head; one without shows no
    /// parked table.
    #[test]
    fn a_group_page_shows_its_parked_aggregates() {
        let console = Console {
            bus: std::sync::Arc::new(eventsource::memory::MemoryBus::new()),
            groups: Vec::new(),
            allow_writes: false,
            place: "memory://".into(),
            access: super::super::Access::new(&[], None),
            store: None,
            replays: Default::default(),
        };
        let letter = |id: &str, version: u64, kind: eventsource::FailureKind| {
            let envelope = eventsource::EventEnvelope::from_json(
                "Order",
                "o-1",
                version,
                "Placed",
                serde_json::json!({}),
            );
            let mut failure = eventsource::Failure::parked("g", &envelope);
            failure.kind = kind;
            DeadLetter::event(id, envelope, failure)
        };
        use eventsource::FailureKind::{Parked, Permanent};
        let letters = [
            letter("g/1", 2, Permanent),
            letter("g/2", 3, Parked),
            letter("g/3", 4, Parked),
        ];
        let page = group(&console, "", "g", None, &letters, None);
        assert!(page.contains("id=\"parked\""), "{page}");
        assert!(
            page.contains(
                "<td>o-1</td><td><a href=\"/letter?id=g%2F1\">g/1</a></td><td class=\"n\">2</td>"
            ),
            "{page}"
        );
        let page = group(&console, "", "g", None, &letters[..1], None);
        assert!(!page.contains("id=\"parked\""), "{page}");
    }
}
