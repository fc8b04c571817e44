-- Notes, the service's one resource. Lengths are checked here too, so that no other
-- writer can store what the API would refuse.
CREATE TABLE notes (
    id         uuid        PRIMARY KEY,
    title      text        NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    body       text        NOT NULL CHECK (char_length(body) <= 10000),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Pages are read newest first with a keyset (created_at, id) cursor.
CREATE INDEX notes_newest_first ON notes (created_at DESC, id DESC);
