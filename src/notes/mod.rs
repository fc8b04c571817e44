//! Notes, the service's one resource: the domain types and their storage.
pub mod batch;
pub mod cursor;
pub mod model;
pub mod store;

pub use cursor::Cursor;
pub use model::{InvalidNote, Note, NoteContent, NoteInput, Violation};
