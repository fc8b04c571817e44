//! Hostile input, sent raw: each request gets its precise answer (the exact status, and
//! for the API the exact problem type), SQL metacharacters are stored and read back
//! verbatim and harm nothing, forged request ids are replaced by fresh ones. What slow
//! clients do is scripts/reliability hostile's part.
//!
//! Cases another test already proves are not repeated here: a body over 1 MiB with
//! Content-Length (errors.rs, `a_body_over_1_mib_is_413_even_without_content_length`),
//! invalid UTF-8 in a body (`invalid_utf8_is_400`), SQL in the id of a GET or a DELETE
//! (`a_bad_id_is_400`), `limit` 0, -1, past 100 and past 2^64
//! (`limits_outside_1_to_100_are_422`), SQL in `cursor`, a cursor of 31 characters and
//! invented well-formed ones (`forged_cursors_are_refused_or_harmless`).

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::support::app::{TestApp, spawn_app_with};
use crate::support::raw::{Answer, exchange};

/// What the reliability drill runs farol with; the rest are farol's defaults.
const SETTINGS: [(&str, &str); 1] = [("REQUEST_TIMEOUT_MS", "5000")];
const PROBLEM: &str = "https://github.com/farol-project/farol/blob/main/docs/api-problems.md#";
/// SQL metacharacters, in every field that takes text.
const SQL: &str = r#"'; DROP TABLE notes; -- " OR 1=1 /* ` \ %_ $1"#;

/// A request on a connection of its own, closed after the answer.
fn request(method: &str, path: &str, body: Option<&[u8]>, headers: &[&[u8]]) -> Vec<u8> {
    let mut lines = vec![
        format!("{method} {path} HTTP/1.1").into_bytes(),
        b"Host: farol".to_vec(),
        b"Connection: close".to_vec(),
    ];
    lines.extend(headers.iter().map(|h| h.to_vec()));
    if let Some(body) = body {
        lines.push(b"Content-Type: application/json".to_vec());
        lines.push(format!("Content-Length: {}", body.len()).into_bytes());
    }
    let mut raw = lines.join(&b"\r\n"[..]);
    raw.extend_from_slice(b"\r\n\r\n");
    raw.extend_from_slice(body.unwrap_or_default());
    raw
}

fn get(path: &str) -> Vec<u8> {
    request("GET", path, None, &[])
}

fn post_note(body: &[u8]) -> Vec<u8> {
    request("POST", "/api/v1/notes", Some(body), &[])
}

fn note_json(title: &str, body: &str) -> Vec<u8> {
    json!({"title": title, "body": body})
        .to_string()
        .into_bytes()
}

fn reversed(text: &str) -> String {
    text.chars().rev().collect()
}

/// `depth` arrays, each inside the last.
fn nested(depth: usize) -> String {
    "[".repeat(depth) + &"]".repeat(depth)
}

/// `body` in chunks of 64 KiB, as a client that does not announce its size sends it.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in body.chunks(64 * 1024) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// (what is tried, the raw request, the status expected, the problem type expected, if
/// the answer is a problem; none where hyper answers before any route, with no body).
fn cases(sql_id: &str) -> Vec<(&'static str, Vec<u8>, u16, Option<&'static str>)> {
    let big = note_json("big", &"x".repeat(2 * 1024 * 1024));
    let mut big_chunked = b"POST /api/v1/notes HTTP/1.1\r\nHost: farol\r\nConnection: close\r\n\
        Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    big_chunked.extend(chunked(&big));
    let big_header = [&b"X-Big: "[..], &[b'a'; 1024 * 1024]].concat();
    let many_headers: Vec<Vec<u8>> = (0..500)
        .map(|i| format!("X-H{i}: a").into_bytes())
        .collect();
    let many_headers: Vec<&[u8]> = many_headers.iter().map(Vec::as_slice).collect();
    let deep = 100_000;
    let cursor = |c: &str| get(&format!("/api/v1/notes?cursor={c}"));
    let limit = |l: &str| get(&format!("/api/v1/notes?limit={l}"));
    vec![
        (
            "a body of 2 MiB chunked, no Content-Length",
            big_chunked,
            413,
            Some("payload-too-large"),
        ),
        (
            "one header of 1 MiB",
            request("GET", "/health", None, &[&big_header]),
            431,
            None,
        ),
        (
            "500 headers",
            request("GET", "/health", None, &many_headers),
            431,
            None,
        ),
        (
            "a title nested 100 000 arrays deep",
            post_note(format!(r#"{{"title":{},"body":""}}"#, nested(deep)).as_bytes()),
            422,
            Some("invalid-body"),
        ),
        (
            "a body of 100 000 nested objects",
            post_note((r#"{"a":"#.repeat(deep) + "1" + &"}".repeat(deep)).as_bytes()),
            422,
            Some("invalid-body"),
        ),
        (
            "an unknown field holding 100 000 nested arrays",
            post_note(format!(r#"{{"title":"t","body":"","x":{}}}"#, nested(deep)).as_bytes()),
            422,
            Some("invalid-body"),
        ),
        (
            "a top-level array 100 000 deep",
            post_note(nested(deep).as_bytes()),
            422,
            Some("invalid-body"),
        ),
        (
            "invalid UTF-8 in the path",
            get("/api/v1/notes/%FF%FE"),
            400,
            Some("invalid-parameter"),
        ),
        (
            "invalid UTF-8 in the cursor",
            cursor("%FF%FE"),
            422,
            Some("invalid-query"),
        ),
        (
            "a lone surrogate escape in the title",
            post_note(br#"{"title":"\ud800","body":""}"#),
            422,
            Some("invalid-body"),
        ),
        (
            "a NUL character in the title",
            post_note(br#"{"title":"a\u0000b","body":""}"#),
            422,
            Some("validation-failed"),
        ),
        (
            // x'; DELETE FROM notes; --
            "SQL in the id of a PUT",
            request(
                "PUT",
                "/api/v1/notes/x%27%3B%20DELETE%20FROM%20notes%3B%20--",
                Some(&note_json("t", "")),
                &[],
            ),
            400,
            Some("invalid-parameter"),
        ),
        (
            // 1; DROP TABLE notes
            "SQL in limit",
            limit("1%3B%20DROP%20TABLE%20notes"),
            422,
            Some("invalid-query"),
        ),
        (
            // 1=1;--
            "SQL as an unknown query parameter",
            get("/api/v1/notes?1%3D1%3B--=x"),
            200,
            None,
        ),
        (
            "SQL in title and body, replaced",
            request(
                "PUT",
                &format!("/api/v1/notes/{sql_id}"),
                Some(&note_json(&reversed(SQL), SQL)),
                &[],
            ),
            200,
            None,
        ),
        ("limit=1e3", limit("1e3"), 422, Some("invalid-query")),
        (
            "limit twice",
            get("/api/v1/notes?limit=5&limit=6"),
            422,
            Some("invalid-query"),
        ),
        (
            "a cursor of 10 000 characters",
            cursor(&"A".repeat(10_000)),
            422,
            Some("invalid-query"),
        ),
        (
            "a cursor of 30 000 characters",
            cursor(&"A".repeat(30_000)),
            422,
            Some("invalid-query"),
        ),
        // past the 32 KiB head bound before its request line ends: hyper answers 431
        // before routing, no problem body
        (
            "a cursor of 100 000 characters",
            cursor(&"A".repeat(100_000)),
            431,
            None,
        ),
        (
            "a cursor with padding",
            cursor(&("A".repeat(31) + "%3D")),
            422,
            Some("invalid-query"),
        ),
        (
            "X-Request-Id with a CR",
            request("GET", "/livez", None, &[b"X-Request-Id: a\rb"]),
            400,
            None,
        ),
        (
            "X-Request-Id with a NUL",
            request("GET", "/livez", None, &[b"X-Request-Id: a\0b"]),
            400,
            None,
        ),
    ]
}

/// All notes, paged through with the service's own cursors.
async fn count_notes(app: &TestApp) -> usize {
    let (mut total, mut cursor) = (0, String::new());
    loop {
        let mut path = "/api/v1/notes?limit=100".to_owned();
        if !cursor.is_empty() {
            path += &format!("&cursor={cursor}");
        }
        let page: Value = app.get(&path).await.json().await.unwrap();
        total += page["items"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return total,
        }
    }
}

#[tokio::test]
async fn each_hostile_request_gets_its_precise_answer_and_the_notes_stay_intact() {
    let app = spawn_app_with(&SETTINGS).await;
    let note = app.create_note(SQL, &reversed(SQL)).await;
    let sql_id = note["id"].as_str().unwrap();
    let before = count_notes(&app).await;

    let cases = cases(sql_id);
    let mut wrong = Vec::new();
    for (name, raw, status, problem) in &cases {
        let answer = Answer::parse(&exchange(&app.address, raw).await);
        let content_type = answer.header("content-type").unwrap_or_default();
        let kind = serde_json::from_str::<Value>(&answer.body)
            .ok()
            .and_then(|body| body["type"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let held = answer.status == *status
            && problem.is_none_or(|slug| {
                content_type == "application/problem+json" && kind == format!("{PROBLEM}{slug}")
            });
        if !held {
            wrong.push(format!(
                "{name}: {} {content_type} {kind:?}, expected {status} {}",
                answer.status,
                problem.unwrap_or_default()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} hostile requests answered otherwise:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );

    let stored: Value = app
        .get(&format!("/api/v1/notes/{sql_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored["title"], reversed(SQL), "stored verbatim");
    assert_eq!(stored["body"], SQL, "stored verbatim");
    assert_eq!(count_notes(&app).await, before, "the table is intact");
}

#[tokio::test]
async fn forged_request_ids_are_replaced_by_a_fresh_uuid_and_sane_ones_kept() {
    let app = spawn_app_with(&SETTINGS).await;
    // header values hyper lets through to the service: quotes and JSON that
    // would forge a log field, invalid UTF-8, one character too long, spaces, a tab,
    // markup, SQL
    let forged: [&[u8]; 8] = [
        br#"x" ,"level":"ERROR","message":"forged"#,
        br#"x} {"level":"ERROR"}"#,
        b"\xff\xfe invalid utf-8",
        &[b'a'; 129],
        b"id with spaces",
        b"tab\tinside",
        b"<script>alert(1)</script>",
        SQL.as_bytes(),
    ];
    let mut given = HashSet::new();
    for id in forged {
        let header = [&b"X-Request-Id: "[..], id].concat();
        let answer = Answer::parse(
            &exchange(&app.address, &request("GET", "/livez", None, &[&header])).await,
        );
        let shown = String::from_utf8_lossy(id);
        assert_eq!(answer.status, 200, "{shown}");
        let replaced = answer.header("x-request-id").unwrap_or_default();
        let fresh = uuid::Uuid::parse_str(replaced).map(|u| u.hyphenated().to_string());
        assert_eq!(fresh.as_deref(), Ok(replaced), "{shown} replaced by a UUID");
        assert!(given.insert(replaced.to_owned()), "{replaced} given twice");
    }
    // the longest sane id, beside the forged one a character longer
    for sane in ["client-id_1.2:3", &"a".repeat(128)] {
        let header = format!("X-Request-Id: {sane}");
        let answer = Answer::parse(
            &exchange(
                &app.address,
                &request("GET", "/livez", None, &[header.as_bytes()]),
            )
            .await,
        );
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("x-request-id"), Some(sane), "kept");
    }
}
