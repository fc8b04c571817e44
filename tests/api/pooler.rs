//! Behind a pooler in transaction mode: a real PgBouncer (Debian's 1.18 here) with two
//! server connections per database, in front of farol's pool of sixteen, with unnamed
//! statements.

use serde_json::{Value, json};

use crate::support::app::start;
use crate::support::pg::{create_database, shared_server_url};
use crate::support::pgbouncer::PgBouncer;

const SERVER_CONNECTIONS: usize = 2;

/// The schema, applied straight to the database: migrations hold a session-level lock
/// that a pooler in transaction mode cannot keep (farol refuses to migrate through one).
async fn migrate(database_url: &str) {
    let (mut client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    farol::db::migrate::apply(&mut client, farol::db::migrate::LOCK_WAIT)
        .await
        .unwrap();
}

#[tokio::test]
async fn every_route_works_through_pgbouncer_in_transaction_mode_with_unnamed_statements() {
    let direct = create_database(&shared_server_url()).await;
    migrate(&direct).await;
    let pooler = PgBouncer::start(&shared_server_url(), SERVER_CONNECTIONS);
    let app = start(
        &pooler.url(&direct),
        &[
            ("DB_PREPARED_STATEMENTS", "unnamed"),
            ("MIGRATE_ON_START", "false"),
            ("DB_POOL_MAX", "16"),
        ],
    )
    .await;
    app.wait_ready().await;
    assert_eq!(app.get("/health").await.status(), 200);
    for n in 0..3 {
        app.create_note(&format!("kept {n}"), "so that every page has a next one")
            .await;
    }

    // Far more concurrent clients than server connections, each using every route: the
    // pooler hands every transaction to whichever server connection is free, so a
    // statement prepared on one and run on another would fail here.
    let rounds = (0..32).map(|client| {
        let app = &app;
        async move {
            for round in 0..4 {
                let created = app
                    .create_note(&format!("client {client}"), &format!("round {round}"))
                    .await;
                let path = format!("/api/v1/notes/{}", created["id"].as_str().unwrap());
                let read: Value = app.get(&path).await.json().await.unwrap();
                assert_eq!(read, created);
                let replaced = app
                    .put_json(
                        &path,
                        &json!({"title": "replaced", "body": "through the pooler"}),
                    )
                    .await;
                assert_eq!(replaced.status(), 200);
                let page = app.get("/api/v1/notes?limit=2").await;
                assert_eq!(page.status(), 200);
                let cursor = page.json::<Value>().await.unwrap()["next_cursor"].clone();
                let next = app
                    .get(&format!(
                        "/api/v1/notes?limit=2&cursor={}",
                        cursor.as_str().unwrap()
                    ))
                    .await;
                assert_eq!(next.status(), 200, "the cursor's typed parameters");
                // a keyed create and its replay: two statements, each its own transaction
                let keyed = |key: String| {
                    app.client
                        .post(app.url("/api/v1/notes"))
                        .header("Idempotency-Key", key)
                        .json(&json!({"title": "keyed", "body": "through the pooler"}))
                        .send()
                };
                let key = format!("c{client}-r{round}");
                let first = keyed(key.clone()).await.unwrap();
                assert_eq!(first.status(), 201);
                let again = keyed(key).await.unwrap();
                assert_eq!(again.headers()["idempotent-replayed"], "true");
                assert_eq!(
                    again.json::<Value>().await.unwrap(),
                    first.json::<Value>().await.unwrap()
                );
                if round % 2 == 0 {
                    assert_eq!(app.delete(&path).await.status(), 204);
                    assert_eq!(app.get(&path).await.status(), 404);
                }
            }
        }
    });
    futures_util::future::join_all(rounds).await;

    let (client, connection) = tokio_postgres::connect(&direct, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let kept: i64 = client
        .query_one("SELECT count(*) FROM notes WHERE title = 'replaced'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        kept,
        32 * 2,
        "every note not deleted was replaced, none lost"
    );
    // What the server saw: never more sessions than the pooler's server connections
    // (PgBouncer keeps the ones it opened, so what is there now is the most there were).
    let database = direct
        .rsplit_once('/')
        .unwrap()
        .1
        .split('?')
        .next()
        .unwrap();
    let sessions: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
             AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            &[&database],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        (1..=SERVER_CONNECTIONS as i64).contains(&sessions),
        "{sessions} server sessions for farol's pool of 16 behind a pooler of {SERVER_CONNECTIONS}"
    );
}
