//! The notes resource: create, read, list with pagination, replace, delete.

use serde_json::{Value, json};

use crate::support::app::{assert_problem, spawn_app};

#[tokio::test]
async fn create_returns_201_the_note_and_its_location() {
    let app = spawn_app().await;
    let response = app
        .post_json(
            "/api/v1/notes",
            &json!({"title": "Farol", "body": "da Barra"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let note: Value = response.json().await.unwrap();
    assert_eq!(note["title"], "Farol");
    assert_eq!(note["body"], "da Barra");
    assert_eq!(
        location,
        format!("/api/v1/notes/{}", note["id"].as_str().unwrap())
    );
    assert_eq!(note["created_at"], note["updated_at"]);
    assert!(
        note["created_at"].as_str().unwrap().ends_with('Z'),
        "RFC 3339 UTC"
    );

    let fetched: Value = app.get(&location).await.json().await.unwrap();
    assert_eq!(fetched, note);
}

#[tokio::test]
async fn text_is_stored_verbatim_including_sql_metacharacters_and_unicode() {
    let app = spawn_app().await;
    let title = "'; DROP TABLE notes; -- \" \\ % _ $1";
    let body = "ç ã 灯台 🗼 \u{200b} <script>alert(1)</script>\n\ttab";
    let note = app.create_note(title, body).await;
    let id = note["id"].as_str().unwrap();
    let fetched: Value = app
        .get(&format!("/api/v1/notes/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["title"], title);
    assert_eq!(fetched["body"], body);
    let page: Value = app.get("/api/v1/notes").await.json().await.unwrap();
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        1,
        "the table is still there"
    );
}

#[tokio::test]
async fn limits_are_in_characters_at_the_edges() {
    let app = spawn_app().await;
    app.create_note(&"é".repeat(200), &"語".repeat(10_000))
        .await;
    app.create_note("x", "").await;
    let too_long = app
        .post_json(
            "/api/v1/notes",
            &json!({"title": "é".repeat(201), "body": ""}),
        )
        .await;
    let problem = assert_problem(too_long, 422, "validation-failed").await;
    assert_eq!(problem["errors"][0]["field"], "title");
}

#[tokio::test]
async fn list_pages_newest_first_without_gaps_or_repeats() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(app.create_note(&format!("note {i}"), "").await["id"].clone());
    }
    created.reverse(); // newest first

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/api/v1/notes?limit=3".to_owned(),
            Some(c) => format!("/api/v1/notes?limit=3&cursor={c}"),
        };
        let page: Value = app.get(&path).await.json().await.unwrap();
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|n| n["id"].clone()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3, "3 + 3 + 1");
    assert_eq!(seen, created);
}

#[tokio::test]
async fn a_last_page_that_is_exactly_full_says_so() {
    let app = spawn_app().await;
    for i in 0..4 {
        app.create_note(&format!("n{i}"), "").await;
    }
    let page: Value = app.get("/api/v1/notes?limit=4").await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 4);
    assert_eq!(page["next_cursor"], Value::Null);
}

#[tokio::test]
async fn the_default_page_is_20_and_an_empty_list_is_fine() {
    let app = spawn_app().await;
    let empty: Value = app.get("/api/v1/notes").await.json().await.unwrap();
    assert_eq!(empty, json!({"items": [], "next_cursor": null}));
    for i in 0..21 {
        app.create_note(&format!("n{i}"), "").await;
    }
    let page: Value = app.get("/api/v1/notes").await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 20);
    assert!(page["next_cursor"].is_string());
    let max: Value = app
        .get("/api/v1/notes?limit=100")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(max["items"].as_array().unwrap().len(), 21);
}

#[tokio::test]
async fn put_replaces_title_and_body_and_moves_updated_at() {
    let app = spawn_app().await;
    let note = app.create_note("before", "old").await;
    let path = format!("/api/v1/notes/{}", note["id"].as_str().unwrap());
    let response = app
        .put_json(&path, &json!({"title": "after", "body": "new"}))
        .await;
    assert_eq!(response.status(), 200);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(
        (updated["title"].as_str(), updated["body"].as_str()),
        (Some("after"), Some("new"))
    );
    assert_eq!(updated["created_at"], note["created_at"]);
    // as instants: RFC 3339 text drops trailing zeros, so ".12Z" sorts after ".123Z"
    let at = |note: &Value| {
        let text = note["updated_at"].as_str().unwrap();
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
    };
    assert!(at(&updated) > at(&note));
    let fetched: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(fetched, updated);
}

#[tokio::test]
async fn delete_answers_204_then_the_note_is_gone() {
    let app = spawn_app().await;
    let note = app.create_note("bye", "").await;
    let path = format!("/api/v1/notes/{}", note["id"].as_str().unwrap());
    let response = app.delete(&path).await;
    assert_eq!(response.status(), 204);
    assert_eq!(response.content_length(), Some(0));
    assert_problem(app.get(&path).await, 404, "not-found").await;
    assert_problem(app.delete(&path).await, 404, "not-found").await;
}

#[tokio::test]
async fn unknown_ids_are_404_for_every_method() {
    let app = spawn_app().await;
    let path = format!("/api/v1/notes/{}", uuid::Uuid::new_v4());
    assert_problem(app.get(&path).await, 404, "not-found").await;
    assert_problem(
        app.put_json(&path, &json!({"title": "t", "body": ""}))
            .await,
        404,
        "not-found",
    )
    .await;
    assert_problem(app.delete(&path).await, 404, "not-found").await;
}
